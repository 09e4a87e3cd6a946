"""The job store on disk: one folder per job, so finished results survive a server restart.

    store_dir/<job_id>/spec.json     the JobSpec (reproduces the asset with the prior's weights)
    store_dir/<job_id>/events.jsonl  small events, one JSON object a line: queued, started, progress (at most about
                                     once a second), and the terminal done / failed / cancelled
    store_dir/<job_id>/...           what the job runner wrote: result files, checkpoint, previews

Previews and meshes are not logged (they are large and only the newest matters); the final mesh is a result file.
A job found without a terminal line was interrupted by a server stop; ``load`` marks it failed (``interrupted``).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from dreamstill.protocol import JobSpec
from dreamstill.protocol.messages import JOB_ID, TERMINAL, event_fields, event_from

PROGRESS_LOG_INTERVAL_S = 1.0


@dataclass
class StoredJob:
    job_id: str
    spec: JobSpec
    created: float
    state: str = "queued"  # queued | running | done | failed | cancelled
    started: float | None = None
    finished: float | None = None
    last_progress: object | None = None  # protocol.events.Progress
    terminal: object | None = None  # Done | Failed | Cancelled
    extra: dict = field(default_factory=dict)


class JobStore:
    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        self._last_progress_write: dict[str, float] = {}
        self._digests: dict[tuple[str, str], tuple[float, int, str]] = {}

    def job_dir(self, job_id: str) -> Path:
        if not JOB_ID.match(job_id):
            raise ValueError(f"bad job id {job_id!r}")
        return self.root / job_id

    def new_id(self) -> str:
        """A fresh job id: time-ordered prefix + random suffix (ids sort by submission time)."""
        while True:
            job_id = f"{int(time.time() * 1000):013x}-{secrets.token_hex(3)}"
            if not (self.root / job_id).exists():
                return job_id

    def create(self, spec: JobSpec) -> StoredJob:
        job_id = self.new_id()
        folder = self.root / job_id
        folder.mkdir(parents=True)
        (folder / "spec.json").write_text(spec.to_json() + "\n")
        job = StoredJob(job_id, spec, created=time.time())
        self.log(job_id, {"type": "queued", "t": job.created})
        return job

    def log(self, job_id: str, record: dict) -> None:
        """Append one JSON line (flushed, so a crash loses at most the line being written)."""
        with open(self.job_dir(job_id) / "events.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=str) + "\n")

    def log_event(self, job_id: str, event, force: bool = False) -> None:
        """Log a small event; progress at most every PROGRESS_LOG_INTERVAL_S unless ``force``."""
        kind, body = event_fields(event)
        now = time.time()
        if kind == "progress" and not force:
            if now - self._last_progress_write.get(job_id, 0.0) < PROGRESS_LOG_INTERVAL_S:
                return
            self._last_progress_write[job_id] = now
        self.log(job_id, {"type": kind, "t": now, **body})
        if kind in TERMINAL:
            self._last_progress_write.pop(job_id, None)

    def load(self) -> list[StoredJob]:
        """Every job in the store, oldest first; unfinished ones are marked failed (interrupted) on disk."""
        jobs = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and JOB_ID.match(p.name)):
            try:
                spec = JobSpec.from_json((folder / "spec.json").read_text())
            except Exception:  # a folder that is not a job, or a damaged spec: skip it, never crash the server
                continue
            job = StoredJob(folder.name, spec, created=folder.stat().st_mtime)
            for line in _lines(folder / "events.jsonl"):
                kind, t = line.get("type"), line.get("t")
                body = {k: v for k, v in line.items() if k not in ("type", "t")}
                if kind == "queued" and isinstance(t, (int, float)):
                    job.created = t
                elif kind == "started":
                    job.started, job.state = t, "running"
                else:
                    try:
                        event = event_from(kind, body)
                    except Exception:
                        continue
                    if kind == "progress":
                        job.last_progress = event
                    elif kind in TERMINAL:
                        job.terminal, job.state, job.finished = event, kind, t
            if job.terminal is None:
                from dreamstill.protocol import Failed

                job.terminal = Failed(
                    "interrupted",
                    f"the server stopped while this job was {job.state}; submit it again (its spec is in spec.json)",
                )
                job.state, job.finished = "failed", time.time()
                self.log_event(job.job_id, job.terminal)
            jobs.append(job)
        return jobs

    def result_path(self, job_id: str, name: str) -> Path:
        """The file ``name`` inside the job's folder; ValueError for anything that escapes it."""
        folder = self.job_dir(job_id).resolve()
        if not name or name.startswith(("/", "\\")) or ".." in Path(name).parts:
            raise ValueError(f"bad result file name {name!r}")
        path = (folder / name).resolve()
        if folder not in path.parents:
            raise ValueError(f"result file {name!r} lies outside the job folder")
        return path

    def result_files(self, job_id: str, files: list[str]) -> list[dict]:
        """[{name, size, sha256}] for the Done files that lie inside the job folder (relative names)."""
        folder = self.job_dir(job_id).resolve()
        out = []
        for f in files:
            path = Path(f)
            path = (path if path.is_absolute() else folder / path).resolve()
            if folder not in path.parents or not path.is_file():
                continue
            name = path.relative_to(folder).as_posix()
            out.append({"name": name, "size": path.stat().st_size, "sha256": self._digest(job_id, name, path)})
        return out

    def _digest(self, job_id: str, name: str, path: Path) -> str:
        stat = path.stat()
        cached = self._digests.get((job_id, name))
        if cached and cached[:2] == (stat.st_mtime, stat.st_size):
            return cached[2]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        self._digests[(job_id, name)] = (stat.st_mtime, stat.st_size, h.hexdigest())
        return h.hexdigest()


def _lines(path: Path):
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    for raw in text.splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            continue  # a line cut short by a crash
        if isinstance(record, dict):
            yield record


__all__ = ["JobStore", "StoredJob", "PROGRESS_LOG_INTERVAL_S"]
