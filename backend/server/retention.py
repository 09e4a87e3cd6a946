"""Retention: which finished jobs to delete (``dreamstill serve --keep-jobs N --keep-days D``).

Only finished jobs (done, failed, cancelled) are ever deleted, oldest first: beyond the newest ``keep_jobs`` of
them, and any that finished more than ``keep_days`` ago. 0 switches a rule off.
"""

from __future__ import annotations

from collections.abc import Iterable

from .jobs import LiveJob


def expired(jobs: Iterable[LiveJob], keep_jobs: int, keep_days: float, now: float) -> list[str]:
    """Ids of the finished jobs the rules delete, oldest first."""
    finished = sorted((j for j in jobs if not j.unfinished), key=lambda j: (j.stored.finished or 0.0, j.id))
    doomed = []
    cutoff = now - keep_days * 86400.0 if keep_days > 0 else None
    over = len(finished) - keep_jobs if keep_jobs > 0 else 0
    for index, job in enumerate(finished):
        if index < over or (cutoff is not None and (job.stored.finished or 0.0) < cutoff):
            doomed.append(job.id)
    return doomed


__all__ = ["expired"]
