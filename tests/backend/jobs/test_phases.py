"""PhaseClock: planned phases become Progress events in order; a phase outside the plan is a programming error."""

from __future__ import annotations

import math

import pytest

from dreamstill.backend.jobs.phases import PhaseClock


def test_announce_turns_phase_names_into_progress_and_returns_the_result():
    clock = PhaseClock(["generate", "mesh", "export"], started=0.0)

    def phases():
        yield "mesh"
        yield "export"
        return "the mesh"

    events = []
    runner = clock.announce(phases())
    while True:
        try:
            events.append(next(runner))
        except StopIteration as stop:
            result = stop.value
            break
    assert result == "the mesh"
    assert [(e.phase, e.step, e.total) for e in events] == [("mesh", 1, 3), ("export", 2, 3)]
    assert all(math.isnan(e.loss) and math.isnan(e.eta_s) and e.elapsed_s > 0 for e in events)


def test_a_phase_outside_the_plan_is_refused():
    clock = PhaseClock(["mesh", "export"], 0.0)
    with pytest.raises(ValueError, match="'bake' was not planned"):
        clock.progress("bake")
    with pytest.raises(ValueError, match="repeat"):
        PhaseClock(["mesh", "mesh"], 0.0)
