"""benchmarks/before_after.py: paired before/after figures from eval --json files."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "before_after.py"


def load_script():
    spec = importlib.util.spec_from_file_location("before_after", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_eval(path: Path, method: str, ious: dict[tuple[str, int], float], extra: dict | None = None) -> Path:
    rows = {}
    for (prompt, seed), iou in ious.items():
        rows.setdefault(prompt, []).append({"seed": seed, "geometry": iou, **(extra or {})})
    per_prompt = [{"method": method, "prompt": p, "seeds": seeds} for p, seeds in rows.items()]
    path.write_text(json.dumps({"per_prompt": per_prompt}))
    return path


def test_paired_difference_over_the_shared_assets_and_the_density_label(tmp_path, capsys):
    script = load_script()
    before = write_eval(tmp_path / "b.json", "sds-density", {("cube", 0): 0.2, ("cone", 0): 0.4, ("cone", 1): 0.9})
    after = write_eval(tmp_path / "a.json", "sds", {("cube", 0): 0.5, ("cone", 0): 0.5}, {"chamfer": 0.03})
    script.main(["--before", str(before), "--after", str(after)])
    rows = {line.split("|")[2].strip(): line for line in capsys.readouterr().out.splitlines()[2:]}
    # shared: (cube, 0) and (cone, 0); differences +0.3 and +0.1: mean +0.2, SE sqrt(0.02 / 2) / sqrt(2) = 0.1
    assert rows["IoU"] == "| sds | IoU | 2 | 0.300 | 0.500 | +0.200 ± 0.100 |"
    assert rows["Chamfer"] == "| sds | Chamfer | 2 | - | 0.030 | - |"  # a figure the before file lacks
    script.main(["--before", str(before), "--after", str(after), "--seeds", "0", "--per-asset"])
    lines = capsys.readouterr().out.splitlines()
    assert "| sds | cone | 0 | - -> - | 0.4 -> 0.5 | - -> - | - -> - | - -> - |" in lines


def test_no_shared_asset_is_an_error(tmp_path):
    script = load_script()
    before = write_eval(tmp_path / "b.json", "sds", {("cube", 0): 0.2})
    after = write_eval(tmp_path / "a.json", "sds", {("cube", 1): 0.5})
    with pytest.raises(SystemExit, match="no \\(method, prompt, seed\\) asset"):
        script.main(["--before", str(before), "--after", str(after)])
    with pytest.raises(SystemExit, match="no \\(method, prompt, seed\\) asset"):
        script.main(["--before", str(before), "--after", str(before), "--seeds", "3"])
