"""Several workers: jobs run side by side on free workers, a crash fails its own job only, and no worker outlives
a killed server."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import pytest

from dreamstill.backend.server import Server, ServerConfig
from dreamstill.backend.server.supervisor import cpu_threads
from dreamstill.backend.server.testing import FAKE_RUNNER, fake_spec, spawn_server, wait_until_up
from dreamstill.protocol import Done, Failed, Progress
from dreamstill.protocol.client import Client

FAST = {"progress_interval_s": 0, "preview_interval_s": 0, "mesh_interval_s": 0}


def wait_for(predicate, what, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    config = ServerConfig(devices=("cpu", "cpu"), **FAST)
    with Server(
        "tcp://127.0.0.1:*", store_dir=tmp_path_factory.mktemp("store"), runner=FAKE_RUNNER, config=config
    ) as s:
        yield s


def test_cpu_workers_share_the_cores():
    cores = os.cpu_count() or 1
    assert cpu_threads(["cpu", "cpu"]) == max(1, cores // 2)
    assert cpu_threads(["auto"]) == 0 and cpu_threads(["cuda:0", "cuda:1"]) == 0


def test_two_workers_run_two_jobs_at_once_and_queue_the_third(two_workers):
    with Client(two_workers.address, timeout_s=20) as c:
        c.ping()
        assert [w["device"] for w in c.server_info["workers"]] == ["cpu", "cpu"]
        jobs = [c.submit(fake_spec(steps=60, seed=i, fake_step_s=0.05)) for i in range(3)]
        wait_for(lambda: [c.status(j)["state"] for j in jobs[:2]] == ["running", "running"], "two running jobs")
        assert c.status(jobs[2])["state"] == "queued"
        c.ping()
        assert {w["job"] for w in c.server_info["workers"]} == set(jobs[:2])
        for job in jobs:
            assert isinstance(list(c.events(job, timeout_s=120))[-1], Done)


def test_a_crash_fails_its_own_job_only(two_workers):
    with Client(two_workers.address, timeout_s=20) as c:
        steady = c.submit(fake_spec(steps=80, fake_step_s=0.05))
        crashing = c.submit(fake_spec(steps=80, fake_step_s=0.05, fake_exit_at=5))
        wait_for(lambda: c.status(crashing)["state"] == "running", "the crashing job to start")
        pids = {w["job"]: w["pid"] for w in (c.ping() and c.server_info["workers"])}
        last = list(c.events(crashing, timeout_s=60))[-1]
        assert isinstance(last, Failed) and last.code == "worker_died" and "exited with code 3" in last.message
        assert c.status(steady)["state"] == "running"  # the other worker did not notice
        events = list(c.events(steady, timeout_s=120))
        assert isinstance(events[-1], Done) and [e.step for e in events if isinstance(e, Progress)][-1] == 80
        c.ping()
        assert pids[crashing] not in {w["pid"] for w in c.server_info["workers"]}  # replaced
        assert all(w["state"] in ("ready", "busy", "starting") for w in c.server_info["workers"])


def test_no_worker_outlives_a_killed_server(tmp_path):
    proc, address = spawn_server(tmp_path / "store", log_path=tmp_path / "server.log")
    try:
        with wait_until_up(address) as c:
            job = c.submit(fake_spec(steps=5000, fake_step_s=0.05, fake_ignore_cancel=True))
            for event in c.events(job, timeout_s=60):
                if isinstance(event, Progress):
                    break
            worker = c.server_info["workers"][0]["pid"] if c.ping() else None
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    wait_for(lambda: _stat_state(worker) in (None, "Z"), "the orphaned worker to die", timeout_s=10)
    stale = [p for p in Path(tempfile.gettempdir()).glob(f"dreamstill-{proc.pid}-*")]
    assert stale  # the killed server could not clean up ...
    with Server("tcp://127.0.0.1:*", store_dir=tmp_path / "other", runner=FAKE_RUNNER):
        assert not any(p.exists() for p in stale)  # ... the next one does


def _stat_state(pid: int) -> str | None:
    """The process state letter (Z = zombie, already dead), or None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
