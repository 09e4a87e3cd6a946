"""An instant job with test-time refinement (JobSpec.refine_steps > 0): the generator's asset as a draft mesh, then
``refine_steps`` per-prompt distillation steps from it (generators.refine) with the per-prompt job's checkpoints,
previews, intermediate meshes and cancel, then the usual finish.

Progress: the draft's phases (generate, mesh, decimate) as an instant job reports them, the draft MeshUpdate and a
Preview, then one Progress per refinement step whose phase is the step's stage, then the finishing phases
(jobs.finish). The stages of a density generator's draft are JobSpec.stage_plan of the refinement's steps
("optimize", or with the surface stage "density" (the generator's field refined), then "geometry" and "texture" on
the signed-distance field fitted to it); an SDF generator's draft is a surface already, so its stages are "geometry"
then "texture" on the draft itself (generators.refine.surface_refine_plan), and it meshes as a surface."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

from dreamstill.protocol import Failed, JobEvent, JobSpec, Preview

from ..engine import AssetOptimizer
from ..generators.refine import refine_optimizer
from ..mesh import EmptyFieldError
from .finish import finish_asset, finish_phase_names, mesh_update
from .optimize_job import _optimize, cancelled_early, resume_from
from .phases import PhaseClock, asset_mesh_phases, mesh_phase_names

REFINE_CHECKPOINT_NAME = "refine_checkpoint.pt"


def draft_spec(spec: JobSpec) -> JobSpec:
    """The draft mesh's settings: the job's grid, an instant draft's face budget, vertex colours (no bake: the
    draft is replaced)."""
    return dataclasses.replace(spec, texture_size=0, refine_steps=0)


def draft_phase_names(asset_class, spec: JobSpec) -> list[str]:
    """The phases before the refinement: the forward pass, then the draft mesh's."""
    return ["generate"] + mesh_phase_names(asset_class, draft_spec(spec))


def draft_events(asset, clock: PhaseClock) -> Iterator[JobEvent]:
    """The draft mesh of the generator's asset as a non-final MeshUpdate (step 0); an empty field has no draft,
    which is not an error (the refinement may still make a surface)."""
    try:
        mesh = yield from clock.announce(asset_mesh_phases(asset, draft_spec(asset.spec)))
    except EmptyFieldError:
        return
    yield mesh_update(mesh, 0, final=False)


def _start(asset, spec: JobSpec, checkpoint: Path | None) -> Generator[JobEvent, None, AssetOptimizer | None]:
    """The refinement's optimizer, resumed from ``checkpoint`` when one is given and exists; None after Failed."""
    try:
        optimizer = refine_optimizer(asset.fields, 0, spec, asset.prior)
    except (KeyError, ValueError) as err:  # unknown method option, bad method settings, bad stage split
        yield Failed("bad_spec", str(err))
        return None
    # another spec's, or another generator's (RuntimeError: other tensor shapes), checkpoint
    resumed = yield from resume_from(optimizer, checkpoint, (ValueError, RuntimeError))
    return optimizer if resumed else None


def refine_and_finish(
    asset,
    spec: JobSpec,
    out_dir: Path,
    output_path: Path,
    clock: PhaseClock,
    cancel: Callable[[], bool] | None = None,
    resume: bool = False,
) -> Iterator[JobEvent]:
    """Draft, refine, finish ``asset`` (a generators.instant.InstantAsset whose "generate" phase ``clock`` has
    announced; ``clock`` plans ``draft_phase_names``). A cancelled refinement saves its checkpoint (when checkpoints
    are on) and ends in Cancelled; ``resume`` continues from out_dir's refinement checkpoint."""
    yield from draft_events(asset, clock)
    checkpoint = Path(out_dir) / REFINE_CHECKPOINT_NAME
    optimizer = yield from _start(asset, spec, checkpoint if resume else None)
    if optimizer is None:
        return
    if optimizer.step == 0 and spec.preview_every:
        yield Preview(0, optimizer.preview())
    yield from _optimize(optimizer, checkpoint, cancel)
    if (yield from cancelled_early(optimizer, checkpoint)):
        return
    finish = PhaseClock(finish_phase_names(optimizer, spec), clock.started)
    metrics = {"seconds_per_step": optimizer.seconds_per_step, "refine_steps": optimizer.step}
    yield from finish_asset(optimizer, spec, output_path, finish, optimizer.step, metrics)
