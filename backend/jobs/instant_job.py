"""An instant job: a trained generator's forward pass (generators.instant.InstantAsset), then the same finish as a
per-prompt job (jobs.finish). Its progress is its own phases, generate, mesh, (decimate, bake,) export, views:
never a bar of optimization steps it does not take. With refine_steps > 0 the forward pass is a draft that
per-prompt distillation continues (jobs.refine_job), and its steps are a step bar."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from dreamstill.protocol import Cancelled, Failed, JobEvent, JobSpec

from ..generators.instant import GeneratorNotFoundError, InstantAsset, generator_config
from ..priors import PriorNotFoundError
from .finish import finish_asset, finish_phase_names
from .phases import PhaseClock
from .refine_job import draft_phase_names, refine_and_finish

INSTANT_VIEWS_SIZE = 64  # at 128 px the contact sheet's 4 renders would take longer than the rest of the job


def prior_mismatch(spec: JobSpec, trained_with: str) -> str | None:
    """Why ``spec`` cannot run on a generator trained with the prior ``trained_with``; None when it can."""
    if spec.prior == trained_with:
        return None
    return (
        f"generator {spec.generator!r} was trained with the prior {trained_with!r}, and this job asks for the prior "
        f"{spec.prior!r}; an instant job runs its generator with the prior it was trained on. Set the prior to "
        f"{trained_with!r} (--prior {trained_with}), or train a generator on {spec.prior!r} "
        f"(dreamstill train-generator --prior {spec.prior} -o DIR) and pass --generator DIR"
    )


def run_instant_job(
    spec: JobSpec,
    out_dir: Path,
    output_path: Path,
    started: float,
    cancel: Callable[[], bool] | None = None,
    resume: bool = False,
    prior=None,
) -> Iterator[JobEvent]:
    """Generate, then finish; with ``spec.refine_steps``, generate, draft, refine, finish (jobs.refine_job).
    ``resume`` continues a refinement from its checkpoint (a plain instant job has nothing to resume); a loaded
    ``prior`` object is refused (the generator loads the prior it was trained on, by name)."""
    if prior is not None:
        yield Failed("bad_spec", "an instant job loads its generator's own prior; call run_job without prior=")
        return
    try:
        trained_with = generator_config(spec.generator).prior
    except GeneratorNotFoundError as err:
        yield Failed("no_generator", str(err))
        return
    why = prior_mismatch(spec, trained_with)
    if why is not None:
        yield Failed("bad_spec", why)
        return
    plan = (
        draft_phase_names(InstantAsset, spec)
        if spec.refine_steps
        else ["generate"] + finish_phase_names(InstantAsset, spec)
    )
    clock = PhaseClock(plan, started)
    yield clock.progress("generate")
    try:
        asset = InstantAsset(spec)
    except PriorNotFoundError as err:
        yield Failed("missing_weights", str(err))
        return
    if cancel is not None and cancel():
        yield Cancelled(0)
        return
    if spec.refine_steps:
        yield from refine_and_finish(asset, spec, out_dir, output_path, clock, cancel, resume)
        return
    yield from finish_asset(asset, spec, output_path, clock, step=0, views_size=INSTANT_VIEWS_SIZE)
