"""`dreamstill batch --ray`: one local Ray instance (2 CPUs) for the module; the real engine at a tiny step count,
then a stand-in engine whose worker is killed mid-batch."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from dreamstill.backend.batch.commands import register
from dreamstill.backend.batch.prompts import output_name
from dreamstill.backend.batch.results import MANIFEST_NAME
from dreamstill.backend.batch.testing import count_attempts
from dreamstill.backend.mesh import load_mesh

ray = pytest.importorskip("ray")

PROMPTS = ["a red cube", "a blue sphere", "a green torus", "a yellow cone", "a red cylinder", "a blue cube"]
TINY = ["--steps", "2", "--no-surface", "--resolution", "32", "--mesh-resolution", "32", "--texture-size", "32"]
TINY += ["--batch-size", "1", "--preview-every", "0", "--quiet"]
FAKE_RUNNER = ["--ray-runner", "dreamstill.backend.batch.testing:fake_asset_runner"]


def run_cli(*argv) -> int:
    parser = argparse.ArgumentParser(prog="dreamstill")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """The batch joins this instance (`--ray local` reuses a Ray this process already has)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def write_prompts(folder, prompts) -> object:
    path = folder / "prompts.txt"
    path.write_text("\n".join(prompts) + "\n")
    return path


def test_six_prompts_give_six_assets_a_sheet_and_a_scene_and_a_rerun_skips_them(tmp_path, capsys):
    prompts, out = write_prompts(tmp_path, PROMPTS), tmp_path / "out"
    assert run_cli("batch", prompts, "-o", out, "--ray", "local", "--scene", out / "set.usda", *TINY) == 0
    names = [output_name(i, p, "glb") for i, p in enumerate(PROMPTS, 1)]
    for name in names:
        mesh = load_mesh(out / name)  # a whole glTF file with the engine's textured mesh
        assert mesh.num_faces > 0 and mesh.texture is not None
        assert (out / name.replace(".glb", "_views.png")).exists()
    assert sorted(json.loads((out / MANIFEST_NAME).read_text())) == sorted(names)
    assert (out / "contact_sheet.png").exists()
    from pxr import Usd

    stage = Usd.Stage.Open(str(out / "set.usda"))
    assert [c.GetDisplayName() for c in stage.GetDefaultPrim().GetChildren()] == PROMPTS
    stamps = {n: (out / n).stat().st_mtime_ns for n in names}
    capsys.readouterr()
    assert run_cli("batch", prompts, "-o", out, "--ray", "local", *TINY[:-1]) == 0  # not quiet: it says so
    assert "6 of 6 already done; 0 to run" in capsys.readouterr().err
    assert {n: (out / n).stat().st_mtime_ns for n in names} == stamps


def test_a_killed_worker_is_retried_and_a_half_done_batch_resumes(tmp_path, capsys):
    prompts, attempts = write_prompts(tmp_path, PROMPTS[:4]), tmp_path / "attempts"
    attempts.mkdir()
    stems = [output_name(i, p, "glb")[:-4] for i, p in enumerate(PROMPTS[:4], 1)]
    fake = [*FAKE_RUNNER, "--option", f"fake_attempts_dir={attempts}", "--option", "fake_kill_once=002_"]
    out = tmp_path / "out"
    assert run_cli("batch", prompts, "-o", out, "--ray", "local", *fake, "--steps", "1", "--quiet") == 0
    first, second = count_attempts(attempts, stems[1])
    assert first != second  # the task ran again in another worker process
    assert [len(count_attempts(attempts, s)) for s in stems] == [1, 2, 1, 1]
    assert all((out / f"{s}.glb").exists() for s in stems)
    np.testing.assert_array_equal(load_mesh(out / f"{stems[1]}.glb").faces.shape, (4, 3))

    # without retries the lost worker fails its prompt; the others finish, and a rerun runs only the lost one
    for s in stems:
        (attempts / f"{s}.attempts").unlink()
    out = tmp_path / "out2"
    args = ("batch", prompts, "-o", out, "--ray", "local", *fake, "--steps", "1", "--quiet")
    assert run_cli(*args, "--max-retries", "0") == 1
    assert "002_a_blue_sphere" not in {p.stem for p in out.glob("*.glb")}
    assert "a blue sphere" in capsys.readouterr().err
    assert run_cli(*args) == 0
    assert [len(count_attempts(attempts, s)) for s in stems] == [1, 2, 1, 1]
    assert len(list(out.glob("*.glb"))) == 4
