"""Fan-out: replies and job events from the server to its clients, never an unbounded queue.

Every send goes out with NOBLOCK on a ROUTER with ROUTER_MANDATORY and a small SNDHWM: EAGAIN when a client's
queue is full, EHOSTUNREACH when it has gone. Then:

- a *reply* waits in that client's outbox, which is capped in bytes per client and in total; a reply over a cap is
  dropped (counted, logged once per client): a client that sends requests and never reads costs the server at most
  ``sndhwm`` messages in libzmq plus its outbox cap;
- a *job event* is not queued at all: per job the server holds only the newest frames of each kind
  (protocol.newest) and per subscriber the sequence number it has seen, so a slow client later gets the newest
  progress, preview and mesh, each at most once per its rate interval, and the terminal event always last.
"""

from __future__ import annotations

import errno
import logging
import time
from collections import deque

from .config import ServerConfig
from .jobs import LiveJob, Subscriber

log = logging.getLogger("dreamstill.server")


class Gone(Exception):
    """The client identity is no longer connected."""


def frames_nbytes(frames: list) -> int:
    total = 0
    for frame in frames:
        nbytes = getattr(frame, "nbytes", None)  # numpy arrays
        total += int(nbytes) if nbytes is not None else len(frame)
    return total


class Fanout:
    def __init__(self, sock, config: ServerConfig, jobs: dict[str, LiveJob]):
        self.sock = sock
        self.config = config
        self.jobs = jobs
        self.dirty: set[str] = set()  # jobs some subscriber has not caught up with
        self.outbox: dict[bytes, deque] = {}  # ident -> [(frames, nbytes)]
        self.outbox_bytes: dict[bytes, int] = {}
        self.total_bytes = 0
        self.dropped = 0  # replies dropped because a client or the server was over its cap
        self._warned: set[bytes] = set()
        self.intervals = {
            "progress": config.progress_interval_s,
            "preview": config.preview_interval_s,
            "mesh": config.mesh_interval_s,
        }

    def send(self, ident: bytes, frames: list) -> bool:
        """Send now if the client can take it; False when its queue is full; Gone when it disconnected."""
        import zmq

        try:
            self.sock.send_multipart([ident, *frames], flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            return False
        except zmq.ZMQError as err:
            if err.errno == errno.EHOSTUNREACH:
                raise Gone() from None
            raise

    def reply(self, ident: bytes, frames: list) -> None:
        """Send a reply now, or keep it in the client's outbox within the caps; drop it over a cap."""
        if not self.outbox.get(ident):
            try:
                if self.send(ident, frames):
                    return
            except Gone:
                return
        size = frames_nbytes(frames)
        held = self.outbox_bytes.get(ident, 0)
        if held + size > self.config.max_reply_bytes_per_client or (
            self.total_bytes + size > self.config.max_reply_bytes_total
        ):
            self.dropped += 1
            if ident not in self._warned:
                self._warned.add(ident)
                log.warning("a client does not read its replies; dropping replies over its %d-byte cap", held)
            return
        self.outbox.setdefault(ident, deque()).append((frames, size))
        self.outbox_bytes[ident] = held + size
        self.total_bytes += size

    def subscribe(self, job: LiveJob, ident: bytes) -> None:
        """(Re)send the job's newest state and its end to ``ident`` from now on."""
        job.subs[ident] = Subscriber()
        self.dirty.add(job.id)

    def flush(self) -> int:
        """Send held replies and job state; return the poll timeout (ms) until the next rate-limited send."""
        now = time.monotonic()
        wake = now + self.config.poll_ms / 1000
        for ident in list(self.outbox):
            self._flush_outbox(ident)
        for job_id in list(self.dirty):
            job = self.jobs.get(job_id)
            clean, due = (True, None) if job is None else self._flush_job(job, now)
            if clean:
                self.dirty.discard(job_id)
            elif due is not None:
                wake = min(wake, due)
        return max(0, int((wake - now) * 1000) + 1)

    def _flush_outbox(self, ident: bytes) -> None:
        box = self.outbox[ident]
        try:
            while box and self.send(ident, box[0][0]):
                self._release(ident, box.popleft()[1])
        except Gone:
            while box:
                self._release(ident, box.popleft()[1])
        if not box:
            del self.outbox[ident]
            self.outbox_bytes.pop(ident, None)
            self._warned.discard(ident)

    def _release(self, ident: bytes, size: int) -> None:
        self.outbox_bytes[ident] = self.outbox_bytes.get(ident, 0) - size
        self.total_bytes -= size

    def _flush_job(self, job: LiveJob, now: float) -> tuple[bool, float | None]:
        """Advance every subscriber of ``job``: (all up to date?, earliest time a rate-limited send is due)."""
        clean, next_due = True, None
        for ident, sub in list(job.subs.items()):
            try:
                caught_up, due = self._advance(job, sub, ident, now)
            except Gone:
                job.subs.pop(ident, None)
                continue
            if due is not None:
                next_due = due if next_due is None else min(next_due, due)
            if not caught_up:
                clean = False
            elif sub.terminal_sent:
                del job.subs[ident]  # nothing more will come for this job
        return clean, next_due

    def _advance(self, job: LiveJob, sub: Subscriber, ident: bytes, now: float) -> tuple[bool, float | None]:
        """Send one subscriber what it has not seen: (caught up?, when a held-back send is due)."""
        ended, next_due = job.events.ended, None
        for seq, kind, frames in job.events.newer_than(sub.sent):
            if not ended:  # rate limits apply while the job runs
                due = sub.last_sent.get(kind, -1e9) + self.intervals[kind]
                if now < due:
                    next_due = due if next_due is None else min(next_due, due)
                    continue
            if not self.send(ident, frames):
                return False, None  # the client is slow: keep the newest state, try again later
            sub.sent[kind], sub.last_sent[kind] = seq, now
        if next_due is not None:
            return False, next_due
        if ended and not sub.terminal_sent:
            if not self.send(ident, job.events.terminal[1]):
                return False, None
            sub.terminal_sent = True
        return True, None


__all__ = ["Fanout", "Gone", "frames_nbytes"]
