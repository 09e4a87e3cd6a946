"""The job store on disk: one folder per job, so finished results survive a server restart.

    store_dir/<job_id>/spec.json     the JobSpec (reproduces the asset with the prior's weights)
    store_dir/<job_id>/events.jsonl  small events, one JSON object a line: queued (with the owner), started,
                                     progress (at most about once a second), and the terminal done / failed /
                                     cancelled (fsynced)
    store_dir/<job_id>/input_mesh.npz  the mesh a texture or refine job works on (vertices, faces, optional
                                     per-corner uvs), written with spec.json; the worker hands it to the runner
    store_dir/<job_id>/result.json   the manifest of a finished job's files (name, size, SHA-256), written by the
                                     worker before it reports done (fsynced, atomic)
    store_dir/<job_id>/...           what the job runner wrote: result files, checkpoint, previews

A line is written with one ``write`` call and cut back when the write fails, so a full disk never leaves half a
line; every write failure is a :class:`StoreWriteError` the server handles. ``load`` recovers what it can: a job
whose terminal line was lost but whose manifest verifies counts as done; one that was queued, or running with a
checkpoint, is queued again (resumed from the checkpoint); any other unfinished one is failed ``interrupted``; an
unreadable folder is skipped with a warning.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import secrets
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dreamstill.protocol import Done, Failed, InputMesh, JobSpec
from dreamstill.protocol.messages import JOB_ID, TERMINAL, event_fields, event_from

log = logging.getLogger("dreamstill.server")

PROGRESS_LOG_INTERVAL_S = 1.0
EVENTS_FILE = "events.jsonl"
MANIFEST_FILE = "result.json"
INPUT_MESH_FILE = "input_mesh.npz"
CHECKPOINT_FILE = "checkpoint.pt"  # jobs.optimize_job.CHECKPOINT_NAME (not imported: the store must not import torch)


class StoreWriteError(OSError):
    """A write to the job store failed (``errno`` says why); nothing half-written is left behind."""

    @property
    def disk_full(self) -> bool:
        return self.errno in (errno.ENOSPC, errno.EDQUOT)


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
    owner: str | None = None  # who submitted it (CURVE key or client owner tag); None in stores from before owners
    resume: bool = False  # run it from its checkpoint (it was interrupted while running)


def _append_bytes(fd: int, data: bytes) -> int:
    """One ``write`` (tests replace this to simulate a full disk)."""
    return os.write(fd, data)


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if _append_bytes(fd, data) != len(data):
            raise OSError(errno.ENOSPC, "No space left on device (short write)")
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_manifest(out_dir: Path, files: list[str], seconds: float = 0.0) -> list[str]:
    """Record the result files inside ``out_dir`` (name, size, SHA-256) in result.json; their relative names.

    Called in the worker, so hashing never stalls the server. Files outside ``out_dir`` are left out."""
    folder = Path(out_dir).resolve()
    entries = []
    for f in files:
        path = Path(f)
        path = (path if path.is_absolute() else folder / path).resolve()
        if folder not in path.parents or not path.is_file():
            continue
        entries.append({"name": path.relative_to(folder).as_posix(), "size": path.stat().st_size, "sha256": _sha(path)})
    tmp = folder / f".{MANIFEST_FILE}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"files": entries, "seconds": float(seconds)}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MANIFEST_FILE)
    _fsync_dir(folder)
    return [e["name"] for e in entries]


def read_manifest(folder: Path) -> dict | None:
    """The manifest when it is readable and every file it lists exists with its recorded size; else None."""
    try:
        data = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        entries = data["files"]
        ok = bool(entries) and all(
            isinstance(e.get("name"), str)
            and isinstance(e.get("sha256"), str)
            and (folder / e["name"]).is_file()
            and (folder / e["name"]).stat().st_size == e.get("size")
            for e in entries
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return data if ok else None


def mesh_npz_bytes(mesh: InputMesh) -> bytes:
    """The input mesh as an uncompressed .npz (arrays vertices, faces and, when it has them, uvs)."""
    buffer = io.BytesIO()
    np.savez(buffer, **mesh.arrays())
    return buffer.getvalue()


def read_input_mesh(folder: Path) -> InputMesh | None:
    """The input mesh stored in a job folder (None when the job has none); ValueError when the file is damaged."""
    path = Path(folder) / INPUT_MESH_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return InputMesh.from_arrays({name: data[name] for name in data.files})
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"the job's {INPUT_MESH_FILE} cannot be read ({err}); submit the job again") from None


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class JobStore:
    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        self._last_progress_write: dict[str, float] = {}
        self._digests: dict[tuple[str, str], tuple[float, int, str]] = {}
        self._last_ms = 0

    def job_dir(self, job_id: str) -> Path:
        if not JOB_ID.match(job_id):
            raise ValueError(f"bad job id {job_id!r}")
        return self.root / job_id

    def new_id(self) -> str:
        """A fresh job id: a strictly rising millisecond prefix + random suffix (ids sort in submission order)."""
        while True:
            self._last_ms = max(int(time.time() * 1000), self._last_ms + 1)
            job_id = f"{self._last_ms:013x}-{secrets.token_hex(3)}"
            if not (self.root / job_id).exists():
                return job_id

    def create(self, spec: JobSpec, owner: str | None = None, mesh: InputMesh | None = None) -> StoredJob:
        """A new job folder with spec.json, the input mesh when there is one, and its queued line, made whole or not
        at all (StoreWriteError)."""
        job_id = self.new_id()
        job = StoredJob(job_id, spec, created=time.time(), owner=owner)
        staging = self.root / f".new-{job_id}"
        try:
            staging.mkdir()
            _write_new(staging / "spec.json", (spec.to_json() + "\n").encode("utf-8"))
            if mesh is not None:
                _write_new(staging / INPUT_MESH_FILE, mesh_npz_bytes(mesh))
            record = {"type": "queued", "t": job.created, "owner": owner}
            _write_new(staging / EVENTS_FILE, (json.dumps(record) + "\n").encode("utf-8"))
            os.replace(staging, self.root / job_id)
        except OSError as err:
            shutil.rmtree(staging, ignore_errors=True)
            raise StoreWriteError(err.errno, f"cannot create the job's folder: {err.strerror}") from None
        return job

    def log(self, job_id: str, record: dict, sync: bool = False) -> None:
        """Append one JSON line with one write; on failure cut the file back and raise StoreWriteError."""
        line = (json.dumps(record, default=str) + "\n").encode("utf-8")
        path = self.job_dir(job_id) / EVENTS_FILE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as err:
            raise StoreWriteError(err.errno, f"cannot open {EVENTS_FILE} of job {job_id}: {err.strerror}") from None
        try:
            size = os.fstat(fd).st_size
            written = _append_bytes(fd, line)
            if written != len(line):
                raise OSError(errno.ENOSPC, "No space left on device (short write)")
            if sync:
                os.fsync(fd)
        except OSError as err:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise StoreWriteError(err.errno, f"cannot write {EVENTS_FILE} of job {job_id}: {err.strerror}") from None
        finally:
            os.close(fd)

    def log_event(self, job_id: str, event, force: bool = False) -> None:
        """Log a small event; progress at most every PROGRESS_LOG_INTERVAL_S unless ``force``; terminals fsynced."""
        kind, body = event_fields(event)
        now = time.time()
        if kind == "progress" and not force:
            if now - self._last_progress_write.get(job_id, 0.0) < PROGRESS_LOG_INTERVAL_S:
                return
            self._last_progress_write[job_id] = now
        self.log(job_id, {"type": kind, "t": now, **body}, sync=kind in TERMINAL)
        if kind in TERMINAL:
            self._last_progress_write.pop(job_id, None)

    def load(self) -> list[StoredJob]:
        """Every readable job in the store, oldest first (see the module docstring for the recovery rules)."""
        jobs = []
        for staging in self.root.glob(".new-*"):  # a create cut short by a crash
            shutil.rmtree(staging, ignore_errors=True)
        for folder in sorted(p for p in self.root.iterdir() if JOB_ID.match(p.name)):
            try:
                job = self._load_one(folder)
            except Exception as err:  # noqa: BLE001 - one damaged folder must never stop the server
                log.warning("skipping job folder %s: %s: %s", folder.name, err.__class__.__name__, err)
                continue
            if job is not None:
                jobs.append(job)
                self._last_ms = max(self._last_ms, int(job.job_id.split("-")[0], 16))
        return jobs

    def _load_one(self, folder: Path) -> StoredJob | None:
        if not folder.is_dir():
            return None
        spec = JobSpec.from_json((folder / "spec.json").read_text())
        job = StoredJob(folder.name, spec, created=folder.stat().st_mtime)
        for line in _lines(folder / EVENTS_FILE):
            _replay(job, line)
        if job.terminal is None:
            self._recover(job, folder)
        return job

    def _recover(self, job: StoredJob, folder: Path) -> None:
        manifest = read_manifest(folder)
        if manifest is not None:
            job.terminal = Done(files=[e["name"] for e in manifest["files"]], seconds=float(manifest.get("seconds", 0)))
            job.state, job.finished = "done", (folder / MANIFEST_FILE).stat().st_mtime
        elif job.state == "running" and job.spec.checkpoint_every > 0 and (folder / CHECKPOINT_FILE).is_file():
            job.state, job.resume = "queued", True
            return
        elif job.state == "queued":
            return  # accepted, never started: it runs now
        else:
            job.terminal = Failed(
                "interrupted", "the server stopped while this job was running; submit it again (its spec is kept)"
            )
            job.state, job.finished = "failed", time.time()
        try:
            self.log_event(job.job_id, job.terminal)
        except StoreWriteError as err:
            log.warning("job %s: could not record its recovered end: %s", job.job_id, err)

    def result_path(self, job_id: str, name: str) -> Path:
        """The file ``name`` inside the job's folder; ValueError for anything that escapes it."""
        folder = self.job_dir(job_id).resolve()
        if not name or name.startswith(("/", "\\")) or ".." in Path(name).parts:
            raise ValueError(f"bad result file name {name!r}")
        path = (folder / name).resolve()
        if folder not in path.parents:
            raise ValueError(f"result file {name!r} lies outside the job folder")
        return path

    def result_names(self, job_id: str, files: list[str]) -> list[str]:
        """The names (relative to the job folder) of the Done files that exist there; no file is read."""
        folder = self.job_dir(job_id).resolve()
        names = []
        for f in files:
            path = Path(f)
            path = (path if path.is_absolute() else folder / path).resolve()
            if folder in path.parents and path.is_file():
                names.append(path.relative_to(folder).as_posix())
        return names

    def result_files(self, job_id: str, files: list[str]) -> list[dict]:
        """[{name, size, sha256}] of the Done files: from the manifest, or hashed once (stores from before it)."""
        folder = self.job_dir(job_id)
        manifest = read_manifest(folder)
        if manifest is not None:
            return [{"name": e["name"], "size": e["size"], "sha256": e["sha256"]} for e in manifest["files"]]
        out = []
        for name in self.result_names(job_id, files):
            path = folder / name
            out.append({"name": name, "size": path.stat().st_size, "sha256": self._digest(job_id, name, path)})
        return out

    def delete(self, job_id: str) -> None:
        """Remove a job's folder (retention); a folder that is already gone is fine."""
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        self._last_progress_write.pop(job_id, None)
        for key in [k for k in self._digests if k[0] == job_id]:
            del self._digests[key]

    def _digest(self, job_id: str, name: str, path: Path) -> str:
        stat = path.stat()
        cached = self._digests.get((job_id, name))
        if cached and cached[:2] == (stat.st_mtime, stat.st_size):
            return cached[2]
        digest = _sha(path)
        self._digests[(job_id, name)] = (stat.st_mtime, stat.st_size, digest)
        return digest


def _replay(job: StoredJob, line: dict) -> None:
    kind, t = line.get("type"), line.get("t")
    body = {k: v for k, v in line.items() if k not in ("type", "t")}
    if kind == "queued":
        job.created = t if isinstance(t, (int, float)) else job.created
        job.owner = body.get("owner") if isinstance(body.get("owner"), str) else None
    elif kind == "started":
        job.started, job.state = t, "running"
    elif kind in ("progress", *TERMINAL):
        try:
            event = event_from(kind, body)
        except Exception:  # noqa: BLE001 - a damaged line: skip it
            return
        if kind == "progress":
            job.last_progress = event
        elif job.terminal is None:
            job.terminal, job.state, job.finished = event, kind, t


def _lines(path: Path):
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    for raw in text.splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            continue  # a line cut short by a crash
        if isinstance(record, dict):
            yield record


__all__ = [
    "JobStore",
    "StoredJob",
    "StoreWriteError",
    "PROGRESS_LOG_INTERVAL_S",
    "INPUT_MESH_FILE",
    "read_input_mesh",
    "read_manifest",
    "write_manifest",
]
