"""Progress events for the phases after the last optimization step (protocol.events.FINISH_PHASES).

A job plans its finishing phases up front (which ones run depends on the asset and the spec), then announces each as
it starts: Progress(step = phases already done, total = phases planned, phase = its name), so a client shows
"meshing 0/4", "baking the texture 1/4", ... instead of a silent bar at 100%.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from typing import TypeVar

from dreamstill.protocol import JobSpec, Progress

Result = TypeVar("Result")


def mesh_phase_names(asset, spec: JobSpec) -> list[str]:
    """The phases ``asset`` goes through to make its final mesh: its own plan when it reports phases, else "mesh"."""
    plan = getattr(asset, "mesh_phase_names", None)
    return list(plan(spec.bake_size, spec.face_budget)) if plan is not None else ["mesh"]


class PhaseClock:
    """Announces planned phases in order, with the job's elapsed time; an unplanned name is a programming error."""

    def __init__(self, names: list[str], started: float):
        if len(set(names)) != len(names):
            raise ValueError(f"phase names repeat in {names}")
        self.names, self.started = list(names), started

    def progress(self, name: str) -> Progress:
        if name not in self.names:
            raise ValueError(f"phase {name!r} was not planned; the plan is {self.names}")
        elapsed = time.perf_counter() - self.started
        return Progress(self.names.index(name), len(self.names), float("nan"), float("nan"), elapsed, phase=name)

    def announce(self, phases: Generator[str, None, Result]) -> Generator[Progress, None, Result]:
        """Turn a generator of phase names into Progress events; returns what the phase generator returns."""
        while True:
            try:
                name = next(phases)
            except StopIteration as stop:
                return stop.value
            yield self.progress(name)


def asset_mesh_phases(asset, spec: JobSpec) -> Generator[str, None, object]:
    """The asset's final mesh at the spec's grid, texture size and face budget, phase by phase when the asset
    reports its phases (engine.asset.FieldAsset.mesh_phases), else as one "mesh" phase around ``to_mesh``."""
    phases = getattr(asset, "mesh_phases", None)
    if phases is not None:
        return phases(spec.mesh_grid, spec.bake_size, spec.face_budget)
    return _one_phase(asset, spec)


def _one_phase(asset, spec: JobSpec) -> Iterator[str]:
    yield "mesh"
    return asset.to_mesh(spec.mesh_grid, spec.bake_size, spec.face_budget)
