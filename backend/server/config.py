"""ServerConfig: every knob of the server, with defaults that work for one user on one machine."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from dreamstill.protocol.addresses import DEFAULT_ADDRESS

DEFAULT_BIND = DEFAULT_ADDRESS  # the one default (protocol.addresses)


def default_store_dir() -> Path:
    return Path(os.environ.get("DREAMSTILL_HOME", "~/.dreamstill")).expanduser() / "jobs"


@dataclass
class ServerConfig:
    # fan-out: at most this often per subscriber and job
    progress_interval_s: float = 0.05
    preview_interval_s: float = 0.2
    mesh_interval_s: float = 0.5
    poll_ms: int = 50
    sndhwm: int = 16  # messages libzmq queues per client before the server holds back
    # what a client that does not read can cost: replies the server holds for it (libzmq holds sndhwm more)
    max_reply_bytes_per_client: int = 8 << 20
    max_reply_bytes_total: int = 128 << 20
    chunk_bytes: int = 1 << 20  # fetch_result chunk size; one unread chunk per client at most
    max_chunk_bytes_total: int = 256 << 20  # unread chunks of all clients together
    chunk_ack_timeout_s: float = 60.0  # a chunk never asked past counts as read after this long
    list_page_bytes: int = 256 << 10  # a job_list reply stays under this
    # queue, quotas and retention
    max_queued: int = 1000
    max_queued_per_client: int = 500
    submits_per_minute_per_client: int = 600  # a burst of this many, then this many a minute
    keep_jobs: int = 1000  # finished jobs kept on disk and in memory (0 = no limit)
    keep_days: float = 0.0  # finished jobs older than this are deleted (0 = no age limit)
    retain_previews: int = 8  # finished jobs whose newest preview / mesh stay in memory for late attaches
    min_free_bytes: int = 16 << 20  # queued jobs wait while the store's disk has less free space than this
    shared: bool = False  # every client sees, fetches and cancels every job (one team, one server)
    # workers
    devices: tuple[str, ...] = ("auto",)  # one worker per entry: "auto", "cpu", "cuda:0", ...
    cancel_grace_s: float = 30.0  # a cancelled job that has not stopped by then: kill its worker
    max_worker_start_failures: int = 3  # in a row, per worker: then its queued jobs fail with the reason
    worker_backoff_s: tuple[float, ...] = (0.5, 2.0, 8.0)  # waits before the 2nd, 3rd, ... start attempt
    # transport
    handshake_s: float = 3.0  # a connection that has not finished its (CURVE) handshake by then is dropped
    accept_pause_s: float = 1.0  # stop listening this long when accepting a connection fails (out of descriptors)
    # models the server offers (see models.py); filled by `dreamstill serve --prior/--generator/--models`
    priors: dict[str, str] = field(default_factory=dict)
    generators: dict[str, str] = field(default_factory=dict)
    allow_hub: bool = False  # Hugging Face hub ids as priors (downloaded by the server)


__all__ = ["DEFAULT_BIND", "ServerConfig", "default_store_dir"]
