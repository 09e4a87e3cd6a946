"""Worker supervision: one worker process per device, started, restarted with backoff, and watched.

``--devices cuda:0,cuda:1`` gives one worker per GPU (each sees only its own), ``--workers N`` N CPU workers
sharing the cores. A worker that cannot be started (EAGAIN, ENOMEM, EMFILE at spawn) or that dies before it is
ready is retried after ``worker_backoff_s``; after ``max_worker_start_failures`` in a row its slot is *broken*
(the reason is in ping); when every slot is broken the server fails the queued jobs with that reason, and the next
submit tries again. A worker that dies while running a job fails that job only and is replaced at once.

The pool knows nothing about jobs beyond which one each worker runs; the server decides what a death means.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass

from .config import ServerConfig
from .worker import WorkerHandle

log = logging.getLogger("dreamstill.server")


@dataclass
class WorkerSlot:
    index: int
    device: str
    threads: int = 0
    handle: WorkerHandle | None = None
    failures: int = 0  # start attempts in a row that failed or died before ready
    retry_at: float = 0.0
    broken: str | None = None
    last_error: str | None = None

    @property
    def state(self) -> str:
        if self.broken is not None:
            return "broken"
        if self.handle is None:
            return "backoff"
        if not self.handle.ready:
            return "starting"
        return "busy" if self.handle.job_id is not None else "ready"

    def status(self) -> dict:
        handle = self.handle
        return {
            "device": self.device,
            "state": self.state,
            "pid": handle.pid if handle else None,
            "job": handle.job_id if handle else None,
            "failures": self.failures,
            "error": self.broken or self.last_error,
        }


def cpu_threads(devices: list[str]) -> int:
    """Threads for each CPU worker when several share the machine (0 = leave torch's default)."""
    cpu = sum(d in ("cpu", "auto") for d in devices)
    return max(1, (os.cpu_count() or 1) // cpu) if cpu > 1 else 0


class WorkerPool:
    def __init__(self, ctx, runner, config: ServerConfig, workdir: str, use_ipc: bool):
        self.ctx, self.runner, self.config = ctx, runner, config
        self.workdir, self.use_ipc = workdir, use_ipc
        devices = list(config.devices) or ["auto"]
        threads = cpu_threads(devices)
        self.slots = [WorkerSlot(i, d, threads=threads if d in ("cpu", "auto") else 0) for i, d in enumerate(devices)]

    # ------------------------------------------------------------------ starting
    def start_all(self) -> None:
        for slot in self.slots:
            self._start(slot)

    def _start(self, slot: WorkerSlot) -> None:
        try:
            slot.handle = WorkerHandle(
                self.ctx, self.runner, self.workdir if self.use_ipc else None, slot.device, slot.threads, self.workdir
            )
        except OSError as err:  # EAGAIN, ENOMEM, EMFILE at spawn
            slot.handle = None
            self._failed_start(slot, f"could not be started ({err.__class__.__name__}: {err})")
            return
        log.info("started worker %d (%s) pid %s", slot.index, slot.device, slot.handle.pid)

    def _failed_start(self, slot: WorkerSlot, reason: str) -> None:
        slot.failures += 1
        slot.last_error = f"the worker on {slot.device} {reason}"
        if slot.failures >= self.config.max_worker_start_failures:
            slot.broken = f"{slot.last_error}, {slot.failures} times in a row; look at the server's log"
            log.error("worker %d: %s", slot.index, slot.broken)
            return
        backoff = self.config.worker_backoff_s
        wait = backoff[min(slot.failures - 1, len(backoff) - 1)] if backoff else 0.0
        slot.retry_at = time.monotonic() + wait
        log.warning("worker %d: %s; trying again in %.1fs", slot.index, slot.last_error, wait)

    def revive(self) -> None:
        """Give broken slots a fresh series of attempts (a new submit while no worker could start)."""
        for slot in self.slots:
            if slot.broken is not None:
                slot.broken, slot.failures, slot.retry_at = None, 0, 0.0
                self._start(slot)

    # ------------------------------------------------------------------ watching
    def sockets(self) -> list[tuple[WorkerSlot, object]]:
        return [(slot, slot.handle.sock) for slot in self.slots if slot.handle is not None]

    def read(self, slot: WorkerSlot, on_event) -> None:
        """Take what the slot's worker sent (bounded); control messages here, job events to ``on_event``."""
        import zmq

        handle = slot.handle
        for _ in range(1000):
            try:
                frames = handle.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                header = json.loads(frames[0].bytes)
                if str(header.get("type", "")).startswith("_"):
                    self._control(slot, header)
                else:
                    on_event(slot, header, frames)
            except Exception:  # noqa: BLE001 - a bad message must not stop the server
                log.exception("bad message from worker %d", slot.index)

    def _control(self, slot: WorkerSlot, header: dict) -> None:
        handle = slot.handle
        if header.get("type") == "_ready":
            handle.ready, handle.pid = True, header.get("pid")
            handle.load_error = header.get("error")
            slot.failures, slot.last_error = 0, None
            if handle.load_error:
                log.error("worker %d: %s", slot.index, handle.load_error)
        elif header.get("type") == "_exiting":
            handle.retiring = True

    def reap(self, on_event) -> list[tuple[WorkerSlot, WorkerHandle, str]]:
        """Dead workers since the last call: (slot, its old handle with job_id, reason); restarts due slots."""
        dead = []
        now = time.monotonic()
        for slot in self.slots:
            handle = slot.handle
            if handle is None:
                if slot.broken is None and now >= slot.retry_at:
                    self._start(slot)
                continue
            if handle.alive():
                continue
            self.read(slot, on_event)  # events it sent before dying (e.g. failed: out_of_memory) come first
            handle.proc.join(1)
            reason = handle.exit_description()
            handle.close()
            slot.handle = None
            log.warning("worker %d pid %s %s", slot.index, handle.pid, reason)
            dead.append((slot, handle, reason))
            if handle.ready:
                self._start(slot)  # it ran: replace it at once
            else:
                self._failed_start(slot, f"{reason} before it was ready")
        return dead

    def idle(self) -> list[WorkerSlot]:
        return [s for s in self.slots if s.handle is not None and s.handle.idle]

    def running(self, job_id: str) -> WorkerSlot | None:
        return next((s for s in self.slots if s.handle is not None and s.handle.job_id == job_id), None)

    @property
    def all_broken(self) -> str | None:
        """The reason when no slot can run a job any more, else None."""
        if all(s.broken is not None for s in self.slots):
            return "; ".join(s.broken for s in self.slots)
        return None

    def status(self) -> list[dict]:
        return [slot.status() for slot in self.slots]

    def stop(self) -> None:
        for slot in self.slots:
            if slot.handle is not None:
                slot.handle.stop()
                slot.handle = None


__all__ = ["WorkerPool", "WorkerSlot", "cpu_threads"]
