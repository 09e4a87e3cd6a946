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

    def fake_run_job(spec, work_dir, resume=False, output_path=None, input_mesh=None):
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


def test_generate_with_an_input_mesh_textures_it(monkeypatch, tmp_path, capsys):
    """--input-mesh reads the file and implies --mode texture; --mode refine is kept; --mode optimize is refused
    before any work, and so is a file that is not there."""
    import numpy as np

    from dreamstill.backend import jobs
    from dreamstill.backend.mesh import Mesh, export_mesh
    from dreamstill.protocol import Done

    export_mesh(Mesh(np.eye(3, dtype=np.float32), [[0, 1, 2]]), tmp_path / "tri.ply")
    seen = {}

    def fake_run_job(spec, work_dir, resume=False, output_path=None, input_mesh=None):
        seen["spec"], seen["mesh"] = spec, input_mesh
        yield Done(files=[str(output_path)], seconds=0.0)

    monkeypatch.setattr(jobs, "run_job", fake_run_job)
    out = str(tmp_path / "painted.glb")
    assert main(["generate", "a red cube", "-o", out, "--input-mesh", str(tmp_path / "tri.ply"), "--quiet"]) == 0
    assert seen["spec"].mode == "texture" and seen["mesh"].face_count == 1
    np.testing.assert_allclose(seen["mesh"].vertices, np.eye(3))
    argv = ["generate", "a red cube", "-o", out, "--input-mesh", str(tmp_path / "tri.ply"), "--quiet"]
    assert main([*argv, "--mode", "refine"]) == 0 and seen["spec"].mode == "refine"
    assert main([*argv, "--mode", "optimize"]) == 2
    assert "'optimize' makes an asset from the prompt alone, and a mesh was sent" in capsys.readouterr().err
    assert main(["generate", "a cube", "-o", out, "--input-mesh", str(tmp_path / "none.ply")]) == 2
    assert "none.ply does not exist" in capsys.readouterr().err
