"""Retention rules: only finished jobs go, oldest first, by count and by age."""

from __future__ import annotations

from dreamstill.backend.server.jobs import LiveJob
from dreamstill.backend.server.retention import expired
from dreamstill.backend.server.store import StoredJob
from dreamstill.protocol import JobSpec

DAY = 86400.0


def job(job_id: str, state: str, finished: float | None) -> LiveJob:
    return LiveJob(StoredJob(job_id, JobSpec(prompt="x"), created=0.0, state=state, finished=finished))


def test_keep_jobs_deletes_the_oldest_finished_beyond_n():
    jobs = [job("a", "done", 1.0), job("b", "failed", 3.0), job("c", "cancelled", 2.0), job("d", "running", None)]
    jobs.append(job("e", "queued", None))
    assert expired(jobs, keep_jobs=1, keep_days=0, now=10.0) == ["a", "c"]  # b is the newest finished
    assert expired(jobs, keep_jobs=3, keep_days=0, now=10.0) == []
    assert expired(jobs, keep_jobs=0, keep_days=0, now=10.0) == []  # 0 = no limit


def test_keep_days_deletes_finished_jobs_older_than_d_days():
    now = 100 * DAY
    jobs = [job("old", "done", now - 3 * DAY), job("new", "done", now - 0.5 * DAY), job("run", "running", None)]
    assert expired(jobs, keep_jobs=0, keep_days=1, now=now) == ["old"]
    assert expired(jobs, keep_jobs=0, keep_days=4, now=now) == []
