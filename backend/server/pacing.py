"""Per-client pacing and quotas: unread result chunks, and how fast one owner may submit.

Chunks: each ``file_chunk`` reply carries a fresh random ``token``; a client's next ``fetch_result`` must echo it
while that chunk is outstanding. A client that asks without reading therefore never has more than one chunk
queued for it, and all clients together at most ``max_total`` bytes; a chunk nobody asks past counts as read after
``ack_timeout_s``.

Submits: a token bucket per owner (``per_minute`` tokens, refilled continuously), so submit-then-cancel loops run
out long before they fill the disk.
"""

from __future__ import annotations

import secrets
import time


class ChunkPacer:
    def __init__(self, max_total: int, ack_timeout_s: float):
        self.max_total, self.ack_timeout_s = max_total, ack_timeout_s
        self.outstanding: dict[bytes, tuple[str, int, float]] = {}  # ident -> (token, bytes, when sent)
        self.total = 0

    def _expire(self, now: float) -> None:
        for ident, (_, size, since) in list(self.outstanding.items()):
            if now - since > self.ack_timeout_s:
                del self.outstanding[ident]
                self.total -= size

    def refuse(self, ident: bytes, token: str | None, size: int) -> tuple[str, str] | None:
        """(code, message) when this client may not have another chunk now, else None (its last one is read)."""
        now = time.monotonic()
        self._expire(now)
        held = self.outstanding.get(ident)
        if held is not None:
            if token != held[0]:
                return (
                    "busy",
                    "this client has not read its previous result chunk; read it and pass its token "
                    "(dreamstill's Client does this; a client older than this server does not: update it)",
                )
            del self.outstanding[ident]
            self.total -= held[1]
        if self.total + size > self.max_total:
            return "server_busy", "the server is sending too many result chunks right now; try again in a few seconds"
        return None

    def issue(self, ident: bytes, size: int) -> str:
        token = secrets.token_hex(8)
        self.outstanding[ident] = (token, size, time.monotonic())
        self.total += size
        return token


class SubmitQuota:
    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self.buckets: dict[str, tuple[float, float]] = {}  # owner -> (tokens, last refill)

    def take(self, owner: str) -> float | None:
        """None when ``owner`` may submit now (one token taken), else the seconds until it may."""
        if self.per_minute <= 0:
            return None
        now = time.monotonic()
        tokens, last = self.buckets.get(owner, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - last) * self.per_minute / 60.0)
        if tokens < 1.0:
            self.buckets[owner] = (tokens, now)
            return (1.0 - tokens) * 60.0 / self.per_minute
        self.buckets[owner] = (tokens - 1.0, now)
        if len(self.buckets) > 10_000:  # owners long full again need no entry
            for key, (_tokens, seen) in list(self.buckets.items()):
                if now - seen > 60.0:
                    del self.buckets[key]
        return None


__all__ = ["ChunkPacer", "SubmitQuota"]
