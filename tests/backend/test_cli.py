"""The `dreamstill` command itself: --version, and what generate says before it starts."""

from __future__ import annotations

import importlib.metadata

import pytest

from dreamstill.backend.cli import main, version


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert (
        capsys.readouterr().out.strip()
        == f"dreamstill {importlib.metadata.version('dreamstill')}"
        == (f"dreamstill {version()}")
    )


def test_generate_prints_its_thread_count_and_sets_it(monkeypatch, tmp_path, capsys):
    import torch

    from dreamstill.backend import jobs
    from dreamstill.protocol import Done

    seen = {}

    def fake_run_job(spec, work_dir, resume=False, output_path=None):
        seen["threads"], seen["spec"] = torch.get_num_threads(), spec
        yield Done(files=[str(output_path)], seconds=0.0)

    monkeypatch.setattr(jobs, "run_job", fake_run_job)
    before = torch.get_num_threads()
    try:
        code = main(["generate", "a red cube", "-o", str(tmp_path / "cube.ply"), "--threads", "1", "--quiet"])
    finally:
        torch.set_num_threads(before)
    assert code == 0 and seen["threads"] == 1 and seen["spec"].output_format == "ply"
    captured = capsys.readouterr()
    assert "dreamstill generate: 1 torch thread (--threads)" in captured.err
    assert captured.out.strip() == str(tmp_path / "cube.ply")


def test_generate_refuses_a_bad_thread_count(capsys, tmp_path):
    assert main(["generate", "a red cube", "-o", str(tmp_path / "a.glb"), "--threads", "0"]) == 2
    assert "--threads is 0; use a whole number of threads >= 1" in capsys.readouterr().err
