"""A per-prompt job: optimize one asset (engine.AssetOptimizer) with checkpoints, intermediate meshes and cancel,
then finish it (jobs.finish)."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path

from dreamstill.protocol import Cancelled, Failed, JobEvent, JobSpec, MeshUpdate, Progress

from ..engine import AssetOptimizer
from ..mesh import EmptyFieldError
from ..priors import PriorNotFoundError
from .finish import finish_asset, finish_phase_names, mesh_update
from .phases import PhaseClock

CHECKPOINT_NAME = "checkpoint.pt"
INTERMEDIATE_MESH_RESOLUTION = 64  # intermediate meshes are previews: at most this grid, never textured


def run_optimize_job(
    spec: JobSpec,
    out_dir: Path,
    output_path: Path,
    started: float,
    cancel: Callable[[], bool] | None = None,
    resume: bool = False,
    prior=None,
) -> Iterator[JobEvent]:
    """Optimize, then finish; a cancelled job saves its checkpoint (when checkpoints are on) and ends in Cancelled."""
    optimizer = yield from _start(spec, out_dir / CHECKPOINT_NAME if resume else None, prior)
    if optimizer is None:
        return
    checkpoint = out_dir / CHECKPOINT_NAME
    yield from _optimize(optimizer, checkpoint, cancel)
    if (yield from cancelled_early(optimizer, checkpoint)):
        return
    clock = PhaseClock(finish_phase_names(optimizer, spec), started)
    metrics = {"seconds_per_step": optimizer.seconds_per_step}
    yield from finish_asset(optimizer, spec, output_path, clock, optimizer.step, metrics)


def _start(spec: JobSpec, checkpoint: Path | None, prior) -> Generator[JobEvent, None, AssetOptimizer | None]:
    """The optimizer, resumed from ``checkpoint`` when one is given and exists; None after a Failed event."""
    try:
        optimizer = AssetOptimizer(spec, prior=prior)
    except PriorNotFoundError as err:
        yield Failed("missing_weights", str(err))
        return None
    except (KeyError, ValueError) as err:  # unknown method option, bad method settings
        yield Failed("bad_spec", str(err))
        return None
    resumed = yield from resume_from(optimizer, checkpoint)
    return optimizer if resumed else None


def resume_from(optimizer, checkpoint: Path | None, errors: tuple = (ValueError,)) -> Generator[JobEvent, None, bool]:
    """Load ``checkpoint`` into ``optimizer`` when one is given and exists; False after a Failed event (a checkpoint
    of another spec, one of ``errors``: it stays on disk, not overwritten)."""
    if checkpoint is not None and checkpoint.exists():
        try:
            optimizer.load_checkpoint(checkpoint)
        except errors as err:
            yield Failed("bad_spec", f"cannot resume from {checkpoint}: {err}")
            return False
    return True


def cancelled_early(optimizer, checkpoint: Path) -> Generator[JobEvent, None, bool]:
    """True, after saving a checkpoint (when checkpoints are on) and a Cancelled event, when ``optimizer`` stopped
    before its spec's steps (a refinement's spec has its refine_steps as steps)."""
    if optimizer.step >= optimizer.spec.steps:
        return False
    if optimizer.spec.checkpoint_every:
        optimizer.save_checkpoint(checkpoint)
    yield Cancelled(optimizer.step)
    return True


def _optimize(optimizer: AssetOptimizer, checkpoint: Path, cancel) -> Iterator[JobEvent]:
    """The optimizer's events, with a checkpoint every spec.checkpoint_every steps and an intermediate mesh every
    spec.mesh_every steps (before the last)."""
    spec = optimizer.spec
    for event in optimizer.run(cancel):
        yield event
        if not isinstance(event, Progress):
            continue
        if spec.checkpoint_every and event.step % spec.checkpoint_every == 0:
            optimizer.save_checkpoint(checkpoint)
        if spec.mesh_every and event.step % spec.mesh_every == 0 and event.step < spec.steps:
            update = _intermediate_mesh(optimizer, event.step)
            if update is not None:
                yield update


def _intermediate_mesh(optimizer: AssetOptimizer, step: int) -> MeshUpdate | None:
    """A quick untextured mesh; early in a run the field may still be empty, which is not an error."""
    spec = optimizer.spec
    resolution = min(INTERMEDIATE_MESH_RESOLUTION, spec.mesh_grid)
    try:
        return mesh_update(optimizer.to_mesh(resolution, 0, spec.face_budget), step, final=False)
    except EmptyFieldError:
        return None
