"""A texture or refine job: the field fitted to the given mesh ("fit" progress), distillation with checkpoints, live
meshes and cancel, then the one finish (jobs.finish) of every job. The mesh work is engine.MeshAssetOptimizer's."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

from dreamstill.protocol import Cancelled, Failed, InputMesh, JobEvent, JobSpec, Progress

from ..engine.texture import MeshAssetOptimizer
from ..priors import PriorNotFoundError
from .finish import finish_asset, finish_phase_names, mesh_update
from .optimize_job import CHECKPOINT_NAME, cancelled_early, resume_from
from .phases import PhaseClock


def run_mesh_job(
    spec: JobSpec,
    out_dir: Path,
    output_path: Path,
    started: float,
    input_mesh: InputMesh,
    cancel: Callable[[], bool] | None = None,
    resume: bool = False,
    prior=None,
) -> Iterator[JobEvent]:
    """Fit (or resume from out_dir's checkpoint), distil, finish; a cancelled job saves its checkpoint (when
    checkpoints are on) and ends in Cancelled."""
    optimizer = yield from _start(spec, input_mesh, prior)
    if optimizer is None:
        return
    checkpoint = out_dir / CHECKPOINT_NAME
    if resume and checkpoint.exists():
        if not (yield from resume_from(optimizer, checkpoint)):  # another spec or mesh
            return
    else:
        yield from _fit(optimizer, started, cancel)
        if not optimizer.fitted:
            yield Cancelled(0)
            return
    yield from _distil(optimizer, checkpoint, cancel)
    if (yield from cancelled_early(optimizer, checkpoint)):
        return
    clock = PhaseClock(finish_phase_names(optimizer, spec), started)
    metrics = {"seconds_per_step": optimizer.seconds_per_step, **input_mesh.summary()}
    yield from finish_asset(optimizer, spec, output_path, clock, optimizer.step, metrics)


def _start(spec: JobSpec, mesh: InputMesh, prior) -> Generator[JobEvent, None, MeshAssetOptimizer | None]:
    """The optimizer with the mesh's distance grid; None after a Failed event."""
    try:
        return MeshAssetOptimizer(spec, mesh, prior=prior)
    except PriorNotFoundError as err:
        yield Failed("missing_weights", str(err))
    except KeyError as err:  # an unknown method option
        yield Failed("bad_spec", str(err))
    except ValueError as err:  # bad method settings, or a mesh with no extent / no surface on the grid
        yield Failed("bad_spec", str(err))
    return None


def _fit(optimizer: MeshAssetOptimizer, started: float, cancel) -> Iterator[Progress]:
    """Progress in phase "fit" while the field's distance is regressed onto the mesh's; stops early on cancel
    (``optimizer.fitted`` stays False)."""
    fit_started = time.perf_counter()
    for step, total, loss in optimizer.fit():
        spent = time.perf_counter() - fit_started
        yield Progress(step, total, loss, spent / step * (total - step), time.perf_counter() - started, phase="fit")
        if cancel is not None and cancel() and step < total:
            return


def _distil(optimizer: MeshAssetOptimizer, checkpoint: Path, cancel) -> Iterator[JobEvent]:
    """The optimizer's events, with a checkpoint every spec.checkpoint_every steps and a live mesh every
    spec.mesh_every steps (before the last): the input textured at a small size, or the refined surface."""
    spec = optimizer.spec
    live_size = min(spec.texture_size, optimizer.config.live_texture_size)
    for event in optimizer.run(cancel):
        yield event
        if not isinstance(event, Progress):
            continue
        if spec.checkpoint_every and event.step % spec.checkpoint_every == 0:
            optimizer.save_checkpoint(checkpoint)
        if spec.mesh_every and event.step % spec.mesh_every == 0 and event.step < spec.steps:
            yield mesh_update(optimizer.live_mesh(live_size), event.step, final=False)
