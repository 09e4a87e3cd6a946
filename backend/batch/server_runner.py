"""Run a batch on a running ``dreamstill serve``: queue every prompt, follow each job, fetch its files.

Resumable: the id of every submitted job is kept in ``.batch_jobs.json``; a rerun re-attaches to a job the server
still has (fetching its result again instead of computing it) and submits only the others.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .items import BatchItem
from .results import Manifest

STATE_NAME = ".batch_jobs.json"


class JobState:
    """{asset file name: job id} of the jobs this batch submitted, saved after every change."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / STATE_NAME
        try:
            self.jobs = json.loads(self.path.read_text()) if self.path.exists() else {}
        except ValueError:
            self.jobs = {}

    def set(self, name: str, job_id: str) -> None:
        self.jobs[name] = job_id
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.jobs, indent=1))
        os.replace(tmp, self.path)


def _job_for(client, item: BatchItem, state: JobState) -> str:
    """The job of ``item``: the one submitted earlier if the server can still finish or has finished it, else new."""
    from dreamstill.protocol.client import ServerError

    job_id = state.jobs.get(item.path.name)
    if job_id is not None:
        try:
            alive = client.attach(job_id)["state"] not in ("failed", "cancelled")
        except ServerError:
            alive = False
        if alive:
            return job_id
    job_id = client.submit(item.spec)
    state.set(item.path.name, job_id)
    return job_id


def run_on_server(args, todo: list[BatchItem], out_dir: Path, manifest: Manifest) -> int:
    """Run ``todo`` on ``args.server``; returns the number of prompts that failed.

    Raises ServerUnavailable when the server does not answer and KeyboardInterrupt when interrupted; finished
    results are on disk in both cases.
    """
    from PIL import Image

    from dreamstill.protocol import Cancelled, Done

    from ..server import commands as server_commands

    state, failures = JobState(out_dir), 0
    (out_dir / "previews").mkdir(parents=True, exist_ok=True)
    client = server_commands._connect(args, "batch")
    try:
        jobs = [(item, _job_for(client, item, state)) for item in todo]  # all queued: the server runs them in turn
        for n, (item, job_id) in enumerate(jobs, 1):
            preview_path = out_dir / "previews" / f"{item.path.stem}.png"

            def keep_preview(event, preview_path=preview_path):
                Image.fromarray(event.rgba, "RGBA").save(preview_path)

            desc = f"[{n}/{len(jobs)}] {item.prompt}"
            end = server_commands._follow(client, job_id, item.spec.steps, desc, args.quiet, keep_preview)
            if isinstance(end, Done):
                fmt = item.spec.output_format
                placed = server_commands._fetch_into(client, job_id, item.path, fmt)  # relinks USD textures
                manifest.record(item.path, placed)
                if not args.quiet:
                    print(f"[{n}/{len(jobs)}] {placed[0]}", file=sys.stderr)
            else:
                failures += 1
                why = f"cancelled at step {end.step}" if isinstance(end, Cancelled) else f"{end.message} [{end.code}]"
                print(f"dreamstill batch: {item.prompt!r}: {why}", file=sys.stderr)
    finally:
        client.close()
    return failures
