"""benchmarks/generator_table.py: ScaleDreamer's method x corpus table and its held-out figure from grid files."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "generator_table.py"


def load_script():
    spec = importlib.util.spec_from_file_location("generator_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(
    root: Path,
    name: str,
    train: float,
    heldout: float,
    prompts: int = 3,
    per_prompt: tuple[float, ...] = (0.5, 0.5, 0.5),
) -> None:
    for split, r in (("train", train), ("heldout", heldout)):
        (root / f"{name}.{split}.json").write_text(
            json.dumps(
                {
                    "overall": {"r_at_1": r, "geometry": r / 2},
                    "per_prompt": [{"prompt": f"p{i}", "r_at_1": per_prompt[i]} for i in range(prompts)],
                }
            )
        )
    renders = [torch.full((2, 3, 8, 8), 40 * i, dtype=torch.uint8) for i in range(prompts)]
    torch.save([{"renders": x} for x in renders], root / f"{name}.heldout.assets.pt")


def test_table_orders_corpora_by_size_and_marks_missing_runs(tmp_path, capsys):
    table = load_script()
    write_run(tmp_path, "triplane_asd_toy2000", 0.5, 0.625)
    write_run(tmp_path, "triplane_asd_toy16", 0.75, 0.25)
    write_run(tmp_path, "hyper-ingp_sds_toy256", 0.125, 0.0)
    assert table.main([str(tmp_path), "--figure", str(tmp_path / "fig.png"), "--json", str(tmp_path / "all.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "R@1 among 16 prompts"
    assert lines[3] == "| hyper-ingp | sds | - / - | 0.12 / 0.00 | - / - |"
    assert lines[4] == "| triplane | asd | 0.75 / 0.25 | - / - | 0.50 / 0.62 |"
    iou = lines.index("geometry IoU")
    assert lines[iou + 4] == "| triplane | asd | 0.38 / 0.12 | - / - | 0.25 / 0.31 |"
    scores = json.loads((tmp_path / "all.json").read_text())
    assert len(scores) == 6 and scores["triplane_asd_toy16.heldout"]["overall"]["r_at_1"] == 0.25
    assert [p["prompt"] for p in scores["triplane_asd_toy16.train"]["per_prompt"]] == ["p0", "p1", "p2"]
    width, height = Image.open(tmp_path / "fig.png").size
    assert (width, height) == (8 * 64, 3 * (64 + 12))  # 8 columns; three runs, a label strip each
    assert table.main([str(tmp_path / "empty")]) == 1


def test_paired_difference_is_the_mean_per_prompt_gap_with_its_standard_error(tmp_path, capsys):
    table = load_script()
    write_run(tmp_path, "triplane_asd_toy16", 0.5, 0.5, per_prompt=(1.0, 0.5, 0.0))
    write_run(tmp_path, "triplane_sds_toy16", 0.5, 0.5, per_prompt=(0.25, 0.5, 0.0))
    assert table.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # differences (0.75, 0, 0): mean 0.25, sample std 0.433, standard error 0.433 / sqrt(3) = 0.25
    assert "| triplane | sds | +0.25 ± 0.25 / +0.25 ± 0.25 | - / - | - / - |" in out
    (tmp_path / "triplane_sds_toy16.train.json").write_text(
        json.dumps({"overall": {"r_at_1": 0.5, "geometry": 0.1}, "per_prompt": [{"prompt": "other", "r_at_1": 1.0}]})
    )
    with pytest.raises(SystemExit, match="different prompts"):
        table.main([str(tmp_path)])


def test_a_kept_json_file_stands_in_for_a_lost_grid_folder_and_later_sources_win(tmp_path, capsys):
    table = load_script()
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    write_run(old, "triplane_asd_toy16", 0.5, 0.5, per_prompt=(1.0, 0.5, 0.0))
    write_run(old, "triplane_sds_toy16", 0.25, 0.25)
    assert table.main([str(old), "--json", str(tmp_path / "kept.json")]) == 0
    write_run(new, "triplane_sds_toy16", 0.75, 0.75, per_prompt=(0.25, 0.5, 0.0))  # the same run, scored again
    write_run(new, "triplane_csd_toy256", 0.125, 0.0)
    capsys.readouterr()
    assert table.main([str(tmp_path / "kept.json"), str(new), "--json", str(tmp_path / "both.json")]) == 0
    out = capsys.readouterr().out
    assert "| triplane | sds | 0.75 / 0.75 | - / - | - / - |" in out  # from the later source
    assert "| triplane | csd | - / - | 0.12 / 0.00 | - / - |" in out
    assert "| triplane | sds | +0.25 ± 0.25 / +0.25 ± 0.25 | - / - | - / - |" in out  # ASD's per-prompt R@1 was kept
    assert len(json.loads((tmp_path / "both.json").read_text())) == 6


def test_runs_kept_without_per_prompt_scores_are_not_paired(tmp_path, capsys):
    table = load_script()
    overall = {"overall": {"r_at_1": 0.5, "geometry": 0.25}, "prompts": ["p0", "p1"]}
    kept = {f"triplane_{m}_toy16.{s}": overall for m in ("asd", "sds") for s in ("train", "heldout")}
    (tmp_path / "kept.json").write_text(json.dumps(kept))
    assert table.main([str(tmp_path / "kept.json")]) == 0
    out = capsys.readouterr().out
    assert "| triplane | sds | 0.50 / 0.50 | - / - | - / - |" in out
    assert "| triplane | sds | - / - | - / - | - / - |" in out  # the paired table: nothing to pair
    assert table.main([str(tmp_path / "missing.json")]) == 1
