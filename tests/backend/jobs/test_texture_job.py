"""run_job for texture and refine jobs (tiny prior, small grids): fit progress, live textured updates of the input's
own triangles, the exported file, cancel during the fit, and the refusals of a mode without its mesh and back."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from dreamstill.protocol import Cancelled, Done, Failed, MeshUpdate, Progress


@pytest.fixture
def fast_jobs(monkeypatch, fast_mesh_stage):
    """run_job's texture and refine jobs with the small MeshStageConfig."""
    from dreamstill.backend.engine.texture import MeshAssetOptimizer
    from dreamstill.backend.jobs import texture_job

    monkeypatch.setattr(
        texture_job, "MeshAssetOptimizer", functools.partial(MeshAssetOptimizer, config=fast_mesh_stage)
    )


def test_a_texture_job_fits_distils_and_returns_the_input_textured(tiny_spec, tiny_prior, uv_box, fast_jobs, tmp_path):
    from dreamstill.backend.jobs import run_job
    from dreamstill.backend.mesh import load_mesh

    mesh = uv_box()
    spec = tiny_spec(mode="texture", steps=4, mesh_every=2, texture_size=32)
    events = list(run_job(spec, tmp_path, prior=tiny_prior, input_mesh=mesh))
    phases = [e.phase for e in events if isinstance(e, Progress)]
    assert phases[:40] == ["fit"] * 40 and phases[40:44] == ["texture"] * 4  # the one stage of a texture job
    assert phases[44:] == ["bake", "export", "views"]  # the UVs are its own: no unwrap
    updates = [e for e in events if isinstance(e, MeshUpdate)]
    assert [(u.step, u.final) for u in updates] == [(2, False), (4, True)]
    assert updates[0].texture.shape == (32, 32, 3)  # live updates at min(texture_size, live size)
    for update in updates:
        np.testing.assert_array_equal(update.vertices[update.faces], mesh.vertices[mesh.faces])
        np.testing.assert_array_equal(update.uvs[update.faces], mesh.uvs)
    done = events[-1]
    assert isinstance(done, Done) and done.metrics["vertices"] == 8 and done.metrics["faces"] == 12
    written = load_mesh(tmp_path / "asset.glb")  # back in the world frame from glTF's Y up
    np.testing.assert_allclose(written.vertices[written.faces], mesh.vertices[mesh.faces], atol=1e-5)


def test_a_refine_job_returns_a_new_surface_where_the_mesh_was(tiny_spec, tiny_prior, uv_box, fast_jobs, tmp_path):
    from dreamstill.backend.jobs import run_job

    spec = tiny_spec(mode="refine", steps=2, mesh_every=1, mesh_resolution=32, max_faces=200)
    events = list(run_job(spec, tmp_path, prior=tiny_prior, input_mesh=uv_box(with_uvs=False)))
    assert isinstance(events[-1], Done), events[-1]
    live, final = [e for e in events if isinstance(e, MeshUpdate)]
    assert not live.final and live.texture is None
    assert final.final and len(final.faces) <= 220
    lo, hi = final.vertices.min(axis=0), final.vertices.max(axis=0)
    np.testing.assert_allclose((lo + hi) / 2, [10.0, -5.0, 2.0], atol=0.3)


def test_cancel_during_the_fit_ends_the_job_at_step_0(tiny_spec, tiny_prior, uv_box, fast_jobs, tmp_path):
    from dreamstill.backend.jobs import run_job

    seen = []

    def cancel():
        return len(seen) >= 5

    events = []
    for event in run_job(tiny_spec(mode="texture"), tmp_path, cancel=cancel, prior=tiny_prior, input_mesh=uv_box()):
        events.append(event)
        if isinstance(event, Progress):
            seen.append(event)
    assert [e.step for e in seen] == [1, 2, 3, 4, 5] and isinstance(events[-1], Cancelled) and events[-1].step == 0


@pytest.mark.parametrize(
    ("mode", "with_mesh", "match"),
    [("texture", False, "works on a mesh, and none was sent"), ("optimize", True, "a mesh was sent")],
)
def test_a_mode_without_its_mesh_or_a_mesh_without_its_mode_fails_as_bad_spec(
    tiny_spec, uv_box, tmp_path, mode, with_mesh, match
):
    from dreamstill.backend.jobs import run_job

    events = list(run_job(tiny_spec(mode=mode), tmp_path, input_mesh=uv_box() if with_mesh else None))
    assert len(events) == 1 and isinstance(events[0], Failed) and events[0].code == "bad_spec"
    assert match in events[0].message
