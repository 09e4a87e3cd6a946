"""run_job for a per-prompt job: events in order (steps, then each finishing phase), files, cancel and resume,
errors as Failed codes; and `dreamstill generate` end to end."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from dreamstill.protocol import Cancelled, Failed, MeshUpdate, Preview, Progress


def test_run_job_streams_steps_then_phases_and_writes_files(tiny_spec, tiny_prior, tmp_path):
    from dreamstill.backend.jobs import run_job

    events = list(run_job(tiny_spec(texture_size=32), tmp_path, prior=tiny_prior))
    steps = [e for e in events if isinstance(e, Progress) and e.phase == "optimize"]
    assert [e.step for e in steps] == [1, 2, 3, 4] and {e.total for e in steps} == {4}
    assert sum(isinstance(e, Preview) for e in events) == 2
    after = events[events.index(steps[-1]) + 1 :]
    after = [e for e in after if not isinstance(e, Preview)]
    # texture_size 32, the default face budget: mesh, decimate, bake, then the final mesh, export and views; each
    # phase announced as it starts with the number of phases already done
    assert [(e.phase, e.step, e.total) for e in after if isinstance(e, Progress)] == [
        ("mesh", 0, 5),
        ("decimate", 1, 5),
        ("bake", 2, 5),
        ("export", 3, 5),
        ("views", 4, 5),
    ]
    assert [type(e).__name__ for e in after] == ["Progress"] * 3 + ["MeshUpdate", "Progress", "Progress", "Done"]
    assert all(math.isnan(e.loss) and math.isnan(e.eta_s) for e in after if isinstance(e, Progress))
    mesh = after[3]
    assert mesh.final and mesh.step == 4 and mesh.faces.max() < len(mesh.vertices)
    assert mesh.texture is not None and mesh.uvs.shape == (len(mesh.vertices), 2)
    done = events[-1]
    assert str(tmp_path / "asset.glb") in done.files and (tmp_path / "asset.glb").stat().st_size > 0
    assert (tmp_path / "asset_views.png").exists() and str(tmp_path / "asset_views.png") in done.files
    assert done.metrics["warnings"] == [] and done.metrics["seconds_per_step"] > 0


def test_cancel_stops_within_one_step_and_keeps_checkpoint(tiny_spec, tiny_prior, tmp_path):
    from dreamstill.backend.jobs import run_job

    seen = []
    events = []
    spec = tiny_spec(steps=50, checkpoint_every=100)
    for e in run_job(spec, tmp_path, cancel=lambda: len(seen) >= 2, prior=tiny_prior):
        events.append(e)
        if isinstance(e, Progress):
            seen.append(e.step)
    assert isinstance(events[-1], Cancelled) and events[-1].step == 2
    assert (tmp_path / "checkpoint.pt").exists()
    # and the run resumes from there
    events = list(run_job(spec, tmp_path, resume=True, cancel=lambda: False, prior=tiny_prior))
    first_progress = next(e for e in events if isinstance(e, Progress))
    assert first_progress.step == 3


def test_resume_from_another_specs_checkpoint_fails_and_keeps_it(tiny_spec, tiny_prior, tmp_path):
    from dreamstill.backend.jobs import run_job

    list(run_job(tiny_spec(steps=20, checkpoint_every=1), tmp_path, cancel=lambda: True, prior=tiny_prior))
    before = (tmp_path / "checkpoint.pt").read_bytes()
    events = list(run_job(tiny_spec(steps=20, seed=9), tmp_path, resume=True, prior=tiny_prior))
    assert len(events) == 1 and events[0].code == "bad_spec" and "checkpoint.pt" in events[0].message
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_a_surface_job_runs_its_stages_on_one_bar_and_meshes_the_sdf(
    tiny_spec, tiny_prior, small_surface, tmp_path, glb_attributes
):
    """Steps run density -> geometry -> texture on one count; the intermediate mesh of the geometry stage and the
    final one come from the SDF: watertight, and the .glb carries smooth normals."""
    from dreamstill.backend.jobs import run_job
    from dreamstill.backend.mesh import Mesh
    from dreamstill.backend.mesh.cleanup import topology, weld

    spec = tiny_spec(surface=True, steps=6, geometry_steps=3, texture_steps=1, mesh_every=4, texture_size=32)
    events = list(run_job(spec, tmp_path, prior=tiny_prior))
    steps = [e for e in events if isinstance(e, Progress) and e.optimizing]
    assert [e.phase for e in steps] == ["density"] * 2 + ["geometry"] * 3 + ["texture"]
    assert [e.step for e in steps] == [1, 2, 3, 4, 5, 6] and {e.total for e in steps} == {6}
    meshes = [e for e in events if isinstance(e, MeshUpdate)]
    assert [(m.step, m.final) for m in meshes] == [(4, False), (6, True)]
    for m in meshes:
        assert topology(weld(Mesh(m.vertices, m.faces))).watertight
    assert "NORMAL" in glb_attributes(tmp_path / "asset.glb")[0]
    assert events[-1].files[0] == str(tmp_path / "asset.glb")


def test_a_surface_job_cancelled_in_its_geometry_stage_resumes_there(tiny_spec, tiny_prior, small_surface, tmp_path):
    from dreamstill.backend.jobs import run_job

    spec = tiny_spec(surface=True, steps=6, geometry_steps=3, texture_steps=1, checkpoint_every=100)
    seen = []
    for e in run_job(spec, tmp_path, cancel=lambda: len(seen) >= 3, prior=tiny_prior):
        if isinstance(e, Progress):
            seen.append(e.phase)
    assert seen == ["density", "density", "geometry"] and isinstance(e, Cancelled) and e.step == 3
    events = list(run_job(spec, tmp_path, resume=True, prior=tiny_prior))
    phases = [(e.phase, e.step) for e in events if isinstance(e, Progress) and e.optimizing]
    assert phases == [("geometry", 4), ("geometry", 5), ("texture", 6)]
    assert events[-1].files


def test_a_bad_spec_cannot_reach_run_job(tiny_spec):
    """JobSpec validates where it is made, so run_job never sees a bad one (one validation per request)."""
    from dreamstill.protocol import JobSpecError

    with pytest.raises(JobSpecError, match="steps"):
        tiny_spec(steps=-1)


def test_missing_prior_folder_is_named(tiny_spec, tmp_path):
    from dreamstill.backend.jobs import run_job

    events = list(run_job(tiny_spec(prior=str(tmp_path / "no-such-model")), tmp_path / "out"))
    assert isinstance(events[-1], Failed) and events[-1].code == "missing_weights"
    assert "no-such-model" in events[-1].message


def test_unwritable_result_fails_after_the_mesh_was_sent(tiny_spec, tiny_prior, tmp_path):
    """The result path lies under a file: the job fails with unwritable_output, and the final mesh already reached
    the client (nothing produced is lost)."""
    from dreamstill.backend.jobs import run_job

    (tmp_path / "not-a-folder").write_text("x")
    events = list(run_job(tiny_spec(), tmp_path, output_path=tmp_path / "not-a-folder" / "a.glb", prior=tiny_prior))
    assert isinstance(events[-1], Failed) and events[-1].code == "unwritable_output"
    assert "not-a-folder" in events[-1].message
    assert any(isinstance(e, MeshUpdate) and e.final for e in events)


# --- the command line ------------------------------------------------------------------------------------------
TINY_ARGS = [
    "--prior",
    "tiny",
    "--steps",
    "2",
    "--resolution",
    "32",
    "--batch-size",
    "1",
    "--mesh-resolution",
    "32",
    "--texture-size",
    "32",
    "--no-surface",  # the surface stage at its real size takes a minute; tests above run it at test size
    "--quiet",
]


def test_cli_generate_writes_glb_and_contact_sheet(tmp_path):
    import trimesh

    out = tmp_path / "cube.glb"
    result = subprocess.run(
        [sys.executable, "-m", "dreamstill.backend.cli", "generate", "a red cube", "-o", str(out), *TINY_ARGS],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    mesh = trimesh.load(out).to_geometry()
    assert len(mesh.faces) > 0 and mesh.visual.uv is not None
    assert (tmp_path / "cube_views.png").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "-5"], "steps"),
        (["--resolution", "7"], "resolution"),
        (["-o", "/proc/dreamstill-nope/x.glb"], "writable"),
        (["-o", "out.fbx"], "unknown suffix"),
    ],
)
def test_cli_bad_arguments_are_clear(argv, message, capsys, tmp_path, monkeypatch):
    from dreamstill.backend.cli import main

    monkeypatch.chdir(tmp_path)
    args = ["generate", "a red cube", *TINY_ARGS]
    if "-o" not in argv:
        args += ["-o", str(tmp_path / "x.glb")]
    try:
        code = main(args + argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 2
        err = str(exit_.code) + capsys.readouterr().err
    else:
        err = capsys.readouterr().err
    assert code == 2
    assert message in err


def test_cli_unknown_method_lists_choices(capsys):
    from dreamstill.backend.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["generate", "a red cube", "--method", "magic"])
    assert exit_.value.code == 2
    assert "sds" in capsys.readouterr().err
