"""Chunk pacing by the reader's token, and the per-owner submit bucket."""

from __future__ import annotations

from dreamstill.backend.server import pacing
from dreamstill.backend.server.pacing import ChunkPacer, SubmitQuota


def test_one_unread_chunk_per_client_and_a_total_cap():
    pacer = ChunkPacer(max_total=300, ack_timeout_s=60)
    assert pacer.refuse(b"a", None, 100) is None
    token = pacer.issue(b"a", 100)
    assert pacer.refuse(b"a", None, 100)[0] == "busy"  # asked again without reading
    assert pacer.refuse(b"a", "wrong", 100)[0] == "busy"
    assert pacer.refuse(b"a", token, 100) is None  # read it: the next one may go
    pacer.issue(b"a", 100)
    pacer.issue(b"b", 150)
    assert pacer.total == 250
    assert pacer.refuse(b"c", None, 100)[0] == "server_busy"  # 250 + 100 > 300
    assert pacer.refuse(b"c", None, 50) is None


def test_an_unacknowledged_chunk_expires(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(pacing.time, "monotonic", lambda: clock[0])
    pacer = ChunkPacer(max_total=100, ack_timeout_s=30)
    pacer.issue(b"a", 100)
    assert pacer.refuse(b"a", None, 10)[0] == "busy"
    clock[0] += 31
    assert pacer.refuse(b"a", None, 100) is None and pacer.total == 0


def test_submit_bucket_refills_at_its_rate(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(pacing.time, "monotonic", lambda: clock[0])
    quota = SubmitQuota(per_minute=3)
    assert [quota.take("me") for _ in range(3)] == [None, None, None]
    wait = quota.take("me")
    assert wait == 20.0  # one token every 60/3 s
    assert quota.take("you") is None  # owners are counted apart
    clock[0] += 20.0
    assert quota.take("me") is None and quota.take("me") is not None
    assert SubmitQuota(per_minute=0).take("me") is None  # 0 = no quota
