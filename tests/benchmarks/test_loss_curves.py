"""benchmarks/loss_curves.py: loss curves from losses.csv or a captured progress bar, windows and divergence."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "loss_curves.py"


def load_script():
    spec = importlib.util.spec_from_file_location("loss_curves", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_folders_csv_and_a_captured_bar_read_the_same_losses(tmp_path):
    script = load_script()
    run = tmp_path / "run"
    run.mkdir()
    (run / "losses.csv").write_text("step,loss\n1,10\n2,8\n3,6\n4,4\n")
    bar = " 0%|  | 1/4 [00:01<00:03, 1.0step/s, loss=10] 50%|  | 2/4 [00:02<00:02, 1.0step/s, loss=8]"
    bar += " 75%| | 3/4 [00:03<00:01, 1.0step/s, loss=6]100%|█| 4/4 [00:04<00:00, 1.0step/s, loss=4]"
    (tmp_path / "run.log").write_text(bar)
    expected = {1: 10.0, 2: 8.0, 3: 6.0, 4: 4.0}
    assert script.read_losses(run) == expected == script.read_losses(tmp_path / "run.log")
    assert script.window_medians(expected, 2, 4) == [9.0, 5.0]
    assert script.window_medians({1: 1.0, 4: 2.0}, 2, 6) == [1.0, 2.0, None]


def test_first_divergence_is_the_first_shared_step_more_than_one_percent_apart():
    script = load_script()
    a = {1: 100.0, 2: 100.0, 3: 100.0, 4: 100.0}
    assert script.first_divergence(a, {1: 100.0, 2: 100.9, 3: 102.0, 4: 90.0}) == 3
    assert script.first_divergence(a, {2: 100.0, 4: 100.5}) is None


def test_main_prints_every_run_and_names_a_run_without_losses(tmp_path, capsys):
    script = load_script()
    for name, losses in (("a", "1,10\n2,8\n"), ("b", "1,10\n2,9\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "losses.csv").write_text("step,loss\n" + losses)
    assert script.main([str(tmp_path / "a"), str(tmp_path / "b"), "--window", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split()[-1] == "2" and lines[2].split()[2:4] == ["10", "9"]
    (tmp_path / "empty.log").write_text("no bar here")
    with pytest.raises(SystemExit, match="no losses found in .*empty.log"):
        script.main([str(tmp_path / "a"), str(tmp_path / "empty.log")])
