"""The one newest-event policy: newest state per kind, the end never dropped and always last."""

from __future__ import annotations

import numpy as np
import pytest

from dreamstill.protocol import Cancelled, Done, Failed, MeshUpdate, Preview, Progress
from dreamstill.protocol.newest import NewestEvents, event_kind, split_newest


def progress(step):
    return Progress(step, 10, 1.0 / step, 0.0)


def test_put_replaces_state_and_keeps_the_first_terminal():
    box = NewestEvents()
    assert box.put("progress", "p1") == 1 and box.put("preview", "v1") == 2 and box.put("progress", "p2") == 3
    assert box.newer_than({}) == [(2, "preview", "v1"), (3, "progress", "p2")]
    assert box.newer_than({"preview": 2}) == [(3, "progress", "p2")]
    assert box.put("done", "d") == 4 and box.ended
    assert box.put("failed", "f") is None and box.put("mesh", "m") is None  # nothing after the end
    assert box.take() == ["v1", "p2", "d"]
    box.forget("preview")
    with pytest.raises(ValueError, match="kind"):
        box.put("pong", "x")


def test_split_newest_gives_the_newest_of_each_kind_and_the_end():
    mesh = MeshUpdate(3, np.zeros((3, 3), np.float32), np.zeros((1, 3), np.int32))
    events = [progress(1), Preview(1, np.zeros((1, 1, 4), np.uint8)), progress(2), mesh, Failed("x", "y")]
    events.append(progress(3))  # after the end: not applied
    newest, end = split_newest(events)
    assert newest["progress"].step == 2 and newest["mesh"] is mesh and isinstance(end, Failed)
    assert split_newest([progress(1), Cancelled(1), Done([])])[1] == Cancelled(1)
    assert event_kind(mesh) == "mesh"
    with pytest.raises(TypeError):
        event_kind("not an event")
