"""Throughput of one server with 1 and with 2 CPU workers, side by side in one run (jobs per minute, load average).

    python benchmarks/server_workers.py [--jobs 6] [--steps 20] [--runner engine|fake]

Each configuration starts a server on loopback (``devices=("cpu",) * N``, the real engine by default), warms every
worker up with one job (torch import, prior load), then submits ``--jobs`` cheap jobs at once (the built-in prior,
32 px renders, batch 1, a 32^3 mesh, vertex colours) and times the first submit to the last done. The load
average is read before and after: on a shared machine it says how much of the CPU the workers really had.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from dreamstill.backend.server import Server, ServerConfig
from dreamstill.protocol import Done, JobSpec
from dreamstill.protocol.client import Client

RUNNERS = {"engine": "dreamstill.backend.jobs:run_job", "fake": "dreamstill.backend.server.testing:fake_runner"}


def cheap_spec(steps: int, seed: int, runner: str) -> JobSpec:
    options = {"fake_step_s": 0.05} if runner == "fake" else {}
    return JobSpec(
        prompt="a red cube",
        steps=steps,
        seed=seed,
        resolution=32,
        batch_size=1,
        mesh_resolution=32,
        texture_size=0,
        preview_every=0,
        options=options,
    )


def run(workers: int, jobs: int, steps: int, runner: str) -> dict:
    config = ServerConfig(devices=("cpu",) * workers)
    with tempfile.TemporaryDirectory() as tmp:
        with Server("tcp://127.0.0.1:*", store_dir=Path(tmp), runner=RUNNERS[runner], config=config) as srv:
            with Client(srv.address, timeout_s=120) as c:
                warm = [c.submit(cheap_spec(steps, 1000 + i, runner)) for i in range(workers)]
                for job in warm:
                    _finish(c, job)
                load_before = os.getloadavg()[0]
                started = time.perf_counter()
                ids = [c.submit(cheap_spec(steps, i, runner)) for i in range(jobs)]
                for job in ids:
                    _finish(c, job)
                took = time.perf_counter() - started
                return {
                    "workers": workers,
                    "jobs": jobs,
                    "seconds": took,
                    "per_minute": jobs / took * 60,
                    "load": (load_before, os.getloadavg()[0]),
                }


def _finish(client: Client, job: str) -> None:
    last = list(client.events(job, timeout_s=1800))[-1]
    if not isinstance(last, Done):
        raise RuntimeError(f"job {job} ended with {last}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runner", choices=sorted(RUNNERS), default="engine")
    args = parser.parse_args(argv)
    print(f"{os.cpu_count()} CPUs; {args.jobs} jobs of {args.steps} steps each ({args.runner})")
    rows = [run(workers, args.jobs, args.steps, args.runner) for workers in (1, 2)]
    print(f"{'workers':>7} {'jobs':>5} {'seconds':>8} {'jobs/min':>9} {'load before -> after':>21}")
    for r in rows:
        load = f"{r['load'][0]:.1f} -> {r['load'][1]:.1f}"
        print(f"{r['workers']:>7} {r['jobs']:>5} {r['seconds']:>8.1f} {r['per_minute']:>9.2f} {load:>21}")
    print(f"2 workers / 1 worker: {rows[1]['per_minute'] / rows[0]['per_minute']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
