"""reporting without bpy: progress lines for scripts, the panel's bar text through the phases, warnings."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dreamstill.blender_addon.reporting import (
    FINISHING,
    bar_text,
    done_line,
    duration,
    phase_of,
    progress_line,
    warnings_of,
)
from dreamstill.protocol import Progress


@pytest.mark.parametrize(("seconds", "text"), [(0, "0 s"), (42.4, "42 s"), (185, "3 min 05 s"), (3720, "1 h 02 min")])
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_phase_of_reads_the_field_when_there_is_one():
    assert phase_of(Progress(1, 2, 0.5, 1.0)) in ("", "optimize")
    assert phase_of(SimpleNamespace(phase="bake")) == "bake"
    assert phase_of(SimpleNamespace(phase=None)) == ""


def test_progress_line_names_step_total_phase_and_eta():
    assert progress_line("a red cube", 120, 400, 0.1234, 42) == (
        "Dreamstill [a red cube] optimize 120/400 (30%)  loss 0.123  ETA 42 s"
    )
    assert (
        progress_line("a red cube", 2, 3, 0.0, 65, "mesh") == "Dreamstill [a red cube] mesh 2/3 (66%)  ETA 1 min 05 s"
    )
    assert progress_line("x", 400, 400, 0.1, 0) == "Dreamstill [x] optimize 400/400 (100%)  loss 0.1"
    assert progress_line("x", 0, 0, 0.0, 0, "unwrap") == "Dreamstill [x] unwrap"


def test_bar_text_says_what_happens_after_the_bar_is_full():
    assert bar_text(0, 0, 0.0, 0.0) == "Queued"
    assert bar_text(6, 10, 0.1666, 3.2) == "6/10  loss 0.167  3 s left"
    assert bar_text(10, 10, 0.1, 0.0) == FINISHING  # 100% and no phase yet: not a silent full bar
    assert bar_text(10, 10, 0.1, 0.0, "optimize") == FINISHING
    assert bar_text(1, 3, 0.0, 20.0, "mesh") == "Extracting the mesh 1/3  20 s left"
    assert bar_text(2, 2, 0.0, 0.0, "bake") == "Baking the texture 2/2"
    assert bar_text(1, 1, 0.0, 0.0, "write_usd") == "Write usd 1/1"
    assert bar_text(0, 0, 0.0, 0.0, "unwrap") == "Unwrapping UVs"  # a phase without steps is not "Queued"


def test_warnings_of_is_tolerant_of_what_a_backend_sends():
    assert warnings_of({"warnings": ["outside the world:  'hamburger'", ""]}) == ["outside the world: 'hamburger'"]
    assert warnings_of({"warnings": "one"}) == ["one"]
    assert warnings_of({"warnings": 3}) == [] and warnings_of({}) == [] and warnings_of(None) == []
    assert len(warnings_of({"warnings": ["w"] * 50})) == 20
    assert (
        warnings_of({"warnings": ["x" * 1000]})[0].endswith("...")
        and len(warnings_of({"warnings": ["x" * 1000]})[0]) == 500
    )


def test_done_line_counts_the_warnings():
    assert done_line("a cube", 12.34, []) == "Done: a cube (12.3 s)"
    assert done_line("a cube", 1, ["w1", "w2"]) == "Done: a cube (1.0 s); 2 warnings: w1"
