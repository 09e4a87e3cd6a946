"""Instant jobs: a generator's forward pass finished like any asset, its own phases as progress, and the prior it was
trained with (or a clear refusal)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamstill.protocol import Done, Failed, JobSpec, MeshUpdate, Progress


@pytest.fixture(scope="module")
def tiny_generator(tiny_prior, tmp_path_factory):
    """A 3DConv-Net generator after one ASD step on three prompts with the tiny prior, saved as train-generator does."""
    from dreamstill.backend.generators.config import GeneratorTrainConfig
    from dreamstill.backend.generators.train import GeneratorTrainer

    folder = tmp_path_factory.mktemp("generator")
    corpus = folder / "prompts.txt"
    corpus.write_text("a red cube\na blue sphere\na green cone on top of a red cube\n")
    config = GeneratorTrainConfig(
        arch="3dconv", corpus=str(corpus), prior="tiny", steps=1, prompts_per_step=2, resolution=16, num_samples=8
    )
    trainer = GeneratorTrainer(config, folder / "run", prior=tiny_prior)
    trainer.train_step()
    trainer.save()
    return str(folder / "run")


def instant(generator: str, **kw) -> JobSpec:
    base = dict(prompt="a red cube", mode="instant", generator=generator, prior="tiny", mesh_resolution=32)
    return JobSpec(**{**base, "texture_size": 0, **kw})


def test_instant_job_reports_its_own_phases_and_returns_a_mesh(tiny_generator, tmp_path):
    from dreamstill.backend.jobs import run_job

    events = list(run_job(instant(tiny_generator), tmp_path))
    assert isinstance(events[-1], Done), events[-1]
    progress = [e for e in events if isinstance(e, Progress)]
    # no optimization steps: generate, mesh, decimate (an instant job's default face budget), export, views
    assert [(e.phase, e.step, e.total) for e in progress] == [
        ("generate", 0, 5),
        ("mesh", 1, 5),
        ("decimate", 2, 5),
        ("export", 3, 5),
        ("views", 4, 5),
    ]
    mesh = next(e for e in events if isinstance(e, MeshUpdate))
    assert mesh.final and len(mesh.faces) > 100 and mesh.vertex_colors is not None
    assert (tmp_path / "asset.glb").exists() and (tmp_path / "asset_views.png").exists()


def test_face_budget_reaches_the_instant_mesh(tiny_generator, tmp_path):
    from dreamstill.backend.jobs import run_job
    from dreamstill.backend.mesh import decimation_available

    if not decimation_available():
        pytest.skip("fast-simplification is not installed")
    full = next(e for e in run_job(instant(tiny_generator), tmp_path / "a") if isinstance(e, MeshUpdate))
    small = next(
        e for e in run_job(instant(tiny_generator, max_faces=100), tmp_path / "b") if isinstance(e, MeshUpdate)
    )
    assert len(small.faces) <= 100 < len(full.faces)


def test_an_instant_draft_bakes_at_most_512_texels(tiny_generator, tmp_path):
    pytest.importorskip("xatlas")
    from dreamstill.backend.jobs import run_job

    events = list(run_job(instant(tiny_generator, texture_size=1024), tmp_path))
    mesh = next(e for e in events if isinstance(e, MeshUpdate) and e.final)
    assert mesh.texture.shape == (512, 512, 3) and "bake" in [e.phase for e in events if isinstance(e, Progress)]


def test_another_prior_is_refused_naming_both(tiny_generator, tmp_path):
    from dreamstill.backend.jobs import run_job

    events = list(run_job(instant(tiny_generator, prior="builtin"), tmp_path))
    assert len(events) == 1 and isinstance(events[0], Failed) and events[0].code == "bad_spec"
    assert "'tiny'" in events[0].message and "'builtin'" in events[0].message and "--prior tiny" in events[0].message
    assert list(tmp_path.iterdir()) == []


def test_missing_generator_fails_clearly(tmp_path):
    from dreamstill.backend.jobs import run_job

    events = list(run_job(instant(str(tmp_path / "none")), tmp_path))
    assert isinstance(events[-1], Failed) and events[-1].code == "no_generator"
    assert "train-generator" in events[-1].message


def test_a_generator_whose_prior_is_missing_names_the_prior(tiny_generator, tmp_path):
    """A generator trained on a prior whose weights are not here: missing_weights naming the prior, not
    no_generator (the generator is here)."""
    from dreamstill.backend.jobs import run_job

    state = torch.load(f"{tiny_generator}/generator.pt", weights_only=True)
    state["config"]["prior"] = str(tmp_path / "gone-prior")
    torch.save(state, tmp_path / "moved.pt")
    events = list(run_job(instant(str(tmp_path / "moved.pt"), prior=str(tmp_path / "gone-prior")), tmp_path / "out"))
    assert isinstance(events[-1], Failed) and events[-1].code == "missing_weights", events[-1]
    assert "gone-prior" in events[-1].message


def test_instant_asset_is_an_asset(tiny_generator):
    from dreamstill.backend.engine import Asset
    from dreamstill.backend.generators.instant import InstantAsset
    from dreamstill.backend.render import orbit_cameras

    asset = InstantAsset(instant(tiny_generator))
    assert isinstance(asset, Asset) and asset.warnings == []
    out = asset.render(orbit_cameras(2), 8, 8)
    assert out.rgb.shape == (2, 8, 8, 3) and not out.rgb.requires_grad
    assert asset.output_settings.num_samples == 16  # twice the 8 samples it was trained with


def test_an_instant_asset_with_a_texture_starts_the_unwrap_child_ahead(tiny_generator):
    pytest.importorskip("xatlas")
    from dreamstill.backend.generators.instant import InstantAsset
    from dreamstill.backend.mesh.unwrap_worker import worker

    worker().close()
    InstantAsset(instant(tiny_generator, texture_size=64))
    proc = worker().proc
    assert proc is not None and proc.poll() is None


def refined(generator: str, steps: int = 3, **kw) -> JobSpec:
    return instant(generator, refine_steps=steps, method="asd", resolution=16, batch_size=1, preview_every=2, **kw)


def test_refined_job_sends_a_draft_then_a_step_bar_then_finishes(tiny_generator, tmp_path):
    from dreamstill.backend.jobs import run_job
    from dreamstill.protocol import Preview

    events = list(run_job(refined(tiny_generator), tmp_path))
    assert isinstance(events[-1], Done), events[-1]
    shown = [
        (type(e).__name__, getattr(e, "phase", None), e.step, getattr(e, "total", None))
        for e in events
        if isinstance(e, (Progress, MeshUpdate, Preview))
    ]
    assert shown == [
        ("Progress", "generate", 0, 3),  # the draft: an instant job's phases without the bake
        ("Progress", "mesh", 1, 3),
        ("Progress", "decimate", 2, 3),
        ("MeshUpdate", None, 0, None),
        ("Preview", None, 0, None),
        ("Progress", "density", 1, 3),  # the refinement's step bar, its phase the stage (JobSpec.stage_plan)
        ("Progress", "density", 2, 3),
        ("Preview", None, 2, None),
        ("Progress", "geometry", 3, 3),  # the surface stage, from the refined density field (3 steps: 2 + 1)
        ("Preview", None, 3, None),
        ("Progress", "mesh", 0, 4),  # the finish
        ("Progress", "decimate", 1, 4),
        ("MeshUpdate", None, 3, None),
        ("Progress", "export", 2, 4),
        ("Progress", "views", 3, 4),
    ]
    draft, final = [e for e in events if isinstance(e, MeshUpdate)]
    assert not draft.final and final.final and draft.vertex_colors is not None
    assert not (len(draft.vertices) == len(final.vertices) and np.array_equal(draft.vertices, final.vertices))
    assert events[-1].metrics["refine_steps"] == 3 and (tmp_path / "asset.glb").exists()


@pytest.mark.parametrize(
    "generator, stages",
    [
        ("tiny_generator", {"density", "geometry"}),  # the density draft refined, then an SDF fitted to it
        ("tiny_sdf_generator", {"geometry", "texture"}),  # an SDF draft: the surface stage on it, cancelled at 2 of 3
    ],
)
def test_a_cancelled_refinement_resumes_to_the_uninterrupted_asset(generator, stages, request, tmp_path):
    from dreamstill.backend.jobs import run_job
    from dreamstill.backend.jobs.refine_job import REFINE_CHECKPOINT_NAME
    from dreamstill.protocol import Cancelled

    spec = refined(request.getfixturevalue(generator), steps=4, checkpoint_every=4)
    step_phases = {"density", "geometry", "texture"}
    whole = [e for e in run_job(spec, tmp_path / "whole") if isinstance(e, MeshUpdate)][-1]

    seen = []

    def cancel():
        return len(seen) >= 2

    for event in run_job(spec, tmp_path / "part", cancel=cancel):
        if isinstance(event, Progress) and event.phase in step_phases:
            seen.append(event.step)
    assert isinstance(event, Cancelled) and event.step == 2
    assert (tmp_path / "part" / REFINE_CHECKPOINT_NAME).exists()
    events = list(run_job(spec, tmp_path / "part", resume=True))
    assert isinstance(events[-1], Done)
    assert [e.step for e in events if isinstance(e, Progress) and e.phase in step_phases] == [3, 4]
    assert {e.phase for e in events if isinstance(e, Progress) and e.phase in step_phases} == stages
    resumed = [e for e in events if isinstance(e, MeshUpdate)][-1]
    np.testing.assert_array_equal(resumed.vertices, whole.vertices)
    np.testing.assert_array_equal(resumed.vertex_colors, whole.vertex_colors)


def test_a_bad_method_option_fails_the_refinement_as_bad_spec(tiny_generator, tmp_path):
    from dreamstill.backend.jobs import run_job

    events = list(run_job(refined(tiny_generator, options={"no_such_option": 1}), tmp_path))
    assert isinstance(events[-1], Failed) and events[-1].code == "bad_spec"
    assert "no_such_option" in events[-1].message
