"""Progress phases: they survive the wire, old senders still decode, and every phase has a label for people."""

from __future__ import annotations

import math

import pytest

from dreamstill.protocol import Progress
from dreamstill.protocol.events import (
    FINISH_PHASES,
    OPTIMIZE,
    OPTIMIZE_PHASES,
    PHASE_LABELS,
    STAGE_PHASES,
    START_PHASES,
)
from dreamstill.protocol.messages import decode, encode


@pytest.mark.parametrize("phase", (*START_PHASES, OPTIMIZE, *STAGE_PHASES, *FINISH_PHASES))
def test_progress_phase_round_trips_over_the_wire(phase):
    sent = Progress(step=2, total=5, loss=float("nan"), eta_s=float("nan"), elapsed_s=1.25, phase=phase)
    got = decode(encode(sent, job_id="j")).payload
    assert (got.step, got.total, got.elapsed_s, got.phase) == (2, 5, 1.25, phase)
    assert math.isnan(got.loss) and math.isnan(got.eta_s)
    assert got.label == PHASE_LABELS[phase] and got.label != phase


def test_progress_without_a_phase_is_an_optimization_step():
    """A sender from before phases existed (no "phase" in the body) decodes as an optimization step."""
    frames = encode(Progress(3, 10, 0.5, 2.0), job_id="j")
    header_and_body = bytes(frames[0]).replace(b',"phase":"optimize"', b"").replace(b'"phase":"optimize",', b"")
    assert b"phase" not in header_and_body
    assert decode([header_and_body, *frames[1:]]).payload == Progress(3, 10, 0.5, 2.0, 0.0, OPTIMIZE)


def test_unknown_phase_reads_as_itself():
    assert Progress(0, 1, 0.0, 0.0, phase="refine").label == "refine"


def test_the_stages_are_optimization_phases_and_the_finishing_phases_are_not():
    assert all(Progress(1, 9, 0.5, 1.0, phase=p).optimizing for p in (OPTIMIZE, "density", "geometry", "texture"))
    assert not any(Progress(0, 4, math.nan, math.nan, phase=p).optimizing for p in FINISH_PHASES)
    assert set(STAGE_PHASES) < set(OPTIMIZE_PHASES) and not set(OPTIMIZE_PHASES) & set(FINISH_PHASES)
