"""Replies to a client that never reads are capped in bytes, per client and in total."""

from __future__ import annotations

import errno

import numpy as np
import zmq

from dreamstill.backend.server.config import ServerConfig
from dreamstill.backend.server.fanout import Fanout


class StuckSocket:
    """A ROUTER whose clients never read: every send would block (or the client is gone)."""

    def __init__(self, gone=()):
        self.gone, self.sent = set(gone), []

    def send_multipart(self, frames, flags=0, copy=True):
        if frames[0] in self.gone:
            raise zmq.ZMQError(errno.EHOSTUNREACH)
        raise zmq.Again()


def test_outbox_is_capped_per_client_and_in_total():
    config = ServerConfig(max_reply_bytes_per_client=3_000_000, max_reply_bytes_total=5_000_000)
    fanout = Fanout(StuckSocket(gone=[b"gone"]), config, jobs={})
    chunk = [b"header", np.zeros(1 << 20, np.uint8)]  # ~1 MiB each
    for _ in range(120):
        fanout.reply(b"a", chunk)
    assert len(fanout.outbox[b"a"]) == 2 and fanout.outbox_bytes[b"a"] <= 3_000_000
    for _ in range(10):
        fanout.reply(b"b", chunk)
    assert fanout.total_bytes <= 5_000_000 and len(fanout.outbox[b"b"]) == 2
    assert fanout.dropped == 118 + 8
    fanout.reply(b"gone", chunk)  # a client that left: nothing kept
    assert b"gone" not in fanout.outbox
