"""A job as the running server holds it: its stored record, its newest events and its subscribers."""

from __future__ import annotations

from dataclasses import dataclass, field

from dreamstill.protocol.newest import NewestEvents

from .store import StoredJob


@dataclass
class Subscriber:
    """What one client has been sent of one job: the sequence number and time of each kind, and the end."""

    sent: dict = field(default_factory=dict)  # kind -> seq last sent
    last_sent: dict = field(default_factory=dict)  # kind -> monotonic time
    terminal_sent: bool = False


@dataclass
class LiveJob:
    stored: StoredJob
    events: NewestEvents = field(default_factory=NewestEvents)  # kind -> newest frames, as the worker sent them
    subs: dict[bytes, Subscriber] = field(default_factory=dict)  # client routing id -> what it has seen
    cancel_requested: float | None = None
    task_seq: int = 0

    @property
    def id(self) -> str:
        return self.stored.job_id

    @property
    def state(self) -> str:
        return self.stored.state

    @property
    def owner(self) -> str | None:
        return self.stored.owner

    @property
    def step(self) -> int:
        progress = self.stored.last_progress
        return progress.step if progress is not None else 0

    @property
    def unfinished(self) -> bool:
        return self.stored.state in ("queued", "running")


__all__ = ["LiveJob", "Subscriber"]
