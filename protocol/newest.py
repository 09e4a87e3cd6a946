"""The one "keep only the newest event" policy, shared by the server's fan-out, the client's inbox and the add-on.

A viewer of a job wants its *latest* state, not a backlog: of the state events (``progress``, ``preview``,
``mesh``) only the newest of each kind matters, and a newer one replaces an older one that nobody has taken yet.
The terminal event (``done`` / ``failed`` / ``cancelled``) is never dropped, never replaced and always comes last.

:class:`NewestEvents` holds one job's items (encoded frames on the server, decoded events in the client) under
that policy; :func:`split_newest` applies it to a list of events that already arrived (what the add-on's timer gets
from ``Client.poll()``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .events import Cancelled, Done, Failed, MeshUpdate, Preview, Progress

STATE_KINDS = ("progress", "preview", "mesh")  # only the newest of each kind matters to a viewer
TERMINAL_KINDS = ("done", "failed", "cancelled")
_KIND_OF_TYPE = {
    Progress: "progress",
    Preview: "preview",
    MeshUpdate: "mesh",
    Done: "done",
    Failed: "failed",
    Cancelled: "cancelled",
}


def event_kind(event) -> str:
    """The wire type name of a protocol.events instance ("progress", ..., "cancelled")."""
    try:
        return _KIND_OF_TYPE[type(event)]
    except KeyError:
        raise TypeError(f"{type(event).__name__} is not a job event") from None


@dataclass
class NewestEvents:
    """One job's newest item per state kind plus its terminal item, each stamped with a rising sequence number.

    ``put`` returns the item's sequence number, or None when it was refused (a state item after the end, or a
    second terminal). Readers either take everything (``take``, the client's inbox) or remember the last sequence
    number they saw per kind and ask for what is newer (``newer_than``, the server's subscribers).
    """

    seq: int = 0
    latest: dict[str, tuple[int, Any]] = field(default_factory=dict)  # kind -> (seq, item)
    terminal: tuple[int, Any] | None = None

    @property
    def ended(self) -> bool:
        return self.terminal is not None

    def put(self, kind: str, item) -> int | None:
        if kind in TERMINAL_KINDS:
            if self.terminal is not None:
                return None
            self.seq += 1
            self.terminal = (self.seq, item)
            return self.seq
        if kind not in STATE_KINDS:
            raise ValueError(f"{kind!r} is not a job event kind; expected one of {STATE_KINDS + TERMINAL_KINDS}")
        if self.terminal is not None:
            return None  # a late state event after the end (e.g. re-sent on attach)
        self.seq += 1
        self.latest[kind] = (self.seq, item)
        return self.seq

    def forget(self, *kinds: str) -> None:
        """Drop the held items of ``kinds`` (e.g. a finished job's big preview and mesh)."""
        for kind in kinds:
            self.latest.pop(kind, None)

    def newer_than(self, seen: dict[str, int]) -> list[tuple[int, str, Any]]:
        """State items newer than what ``seen`` (kind -> seq) says was delivered, oldest first; no terminal."""
        return sorted((seq, kind, item) for kind, (seq, item) in self.latest.items() if seq > seen.get(kind, 0))

    def take(self) -> list:
        """Every held item in arrival order (the terminal last) and forget them; the end stays remembered."""
        items = [item for _, _, item in self.newer_than({})]
        self.latest.clear()
        if self.terminal is not None:
            items.append(self.terminal[1])
        return items


def split_newest(events: Iterable) -> tuple[dict[str, Any], Any | None]:
    """({kind: newest state event}, terminal event or None) of a list of one job's events, in arrival order.

    What a GUI applies from a batch of events: the latest progress, preview and mesh, then the end if it came.
    """
    newest: dict[str, Any] = {}
    end = None
    for event in events:
        kind = event_kind(event)
        if kind in TERMINAL_KINDS:
            end = end if end is not None else event
        elif end is None:
            newest[kind] = event
    return newest, end


__all__ = ["NewestEvents", "STATE_KINDS", "TERMINAL_KINDS", "event_kind", "split_newest"]
