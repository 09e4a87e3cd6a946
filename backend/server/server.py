"""The Dreamstill server: a ZeroMQ ROUTER in front of a job queue, one GPU worker process and the job store.

One thread owns every socket and runs the loop (``serve_forever``)::

    poll(ROUTER, worker PAIR)  ->  requests: submit / cancel / status / list_jobs / attach / fetch_result / ping
                               ->  worker events: keep the newest progress / preview / mesh per job, log small ones
    worker alive?              ->  if not: fail its job ("worker_died", with the exit reason), start a fresh worker
    dispatch                   ->  hand the next queued job to an idle, ready worker
    flush                      ->  send each subscriber what it has not seen yet, rate-limited, never queued up

Backpressure: per job the server keeps only the *newest* event of each state kind (progress, preview, mesh) as
the frames the worker sent (forwarded as they are, no re-encoding), and per subscriber the sequence number it has
seen. A slow client makes ``send`` fail with EAGAIN (ROUTER_MANDATORY and a small SNDHWM); the server keeps the
state and tries again later, so a slow client gets the newest preview and mesh, never an unbounded queue. A
terminal event (done / failed / cancelled) is sent only after the state events before it, so it is always last.

Security: any bind that is not loopback (127.0.0.0/8, ::1, localhost, ipc://) needs CURVE keys; clients are
admitted by their public key (ZAP through zmq.auth.thread.ThreadAuthenticator). Nothing is ever unpickled.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from dreamstill.protocol import Cancelled, Done, Failed, JobSpec
from dreamstill.protocol.messages import REQUESTS, STATE_EVENTS, TERMINAL, Message, decode, encode, event_from
from dreamstill.protocol.wire import MAX_REQUEST_BYTES, PROTOCOL_VERSION, ProtocolError, peek_header, unpack

from .keys import ServerKeys, is_loopback, load_server_keys
from .store import JobStore, StoredJob
from .worker import DEFAULT_RUNNER, WorkerHandle

log = logging.getLogger("dreamstill.server")

DEFAULT_BIND = "tcp://127.0.0.1:5555"


def default_store_dir() -> Path:
    return Path(os.environ.get("DREAMSTILL_HOME", "~/.dreamstill")).expanduser() / "jobs"


@dataclass
class ServerConfig:
    progress_interval_s: float = 0.05  # at most this often per subscriber and job
    preview_interval_s: float = 0.2
    mesh_interval_s: float = 0.5
    cancel_grace_s: float = 30.0  # a cancelled job that has not stopped by then: kill the worker
    max_queued: int = 1000
    chunk_bytes: int = 4 << 20  # fetch_result chunk size
    poll_ms: int = 50
    sndhwm: int = 64  # messages queued per client before the server holds back
    max_worker_start_failures: int = 3  # workers dying before ready in a row: stop restarting
    retain_finished: int = 8  # finished jobs whose newest preview / mesh stay in memory for late attaches


@dataclass
class _Sub:
    sent: dict = field(default_factory=dict)  # kind -> seq last sent
    last_sent: dict = field(default_factory=dict)  # kind -> monotonic time
    terminal_sent: bool = False


@dataclass
class _Job:
    stored: StoredJob
    seq: int = 0
    latest: dict = field(default_factory=dict)  # kind -> (seq, frames) for progress / preview / mesh
    terminal_frames: tuple | None = None  # (seq, frames)
    subs: dict = field(default_factory=dict)  # client identity -> _Sub
    cancel_requested: float | None = None
    task_seq: int = 0

    @property
    def id(self) -> str:
        return self.stored.job_id

    @property
    def state(self) -> str:
        return self.stored.state


class _Gone(Exception):
    """The client identity is no longer connected."""


class _CurveClients:
    """ZAP credentials provider: a client is admitted when its public key (Z85) is authorized."""

    def __init__(self, authorized: set[bytes]):
        self.authorized = set(authorized)

    def callback(self, domain, key) -> bool:
        allowed = bytes(key) in self.authorized
        if not allowed:
            log.warning("refused a client whose CURVE key is not in authorized_clients/: %s", bytes(key)[:8] + b"...")
        return allowed


class Server:
    """``Server(bind, store_dir, runner).serve_forever()``, or ``start()`` / ``stop()`` to run it in a thread."""

    def __init__(
        self,
        bind: str = DEFAULT_BIND,
        store_dir: Path | str | None = None,
        runner=DEFAULT_RUNNER,
        *,
        keys_dir: Path | str | None = None,
        keys: ServerKeys | None = None,
        config: ServerConfig | None = None,
    ):
        if keys is None and keys_dir is not None:
            keys = load_server_keys(keys_dir)
        if keys is None and not is_loopback(bind):
            raise ValueError(
                f"binding to {bind} would let anyone on the network use this GPU server; make keys with "
                "`dreamstill keys -o DIR` and pass --keys DIR, or bind to tcp://127.0.0.1:PORT"
            )
        self.bind = bind
        self.keys = keys
        self.runner = runner
        self.config = config or ServerConfig()
        self.store = JobStore(store_dir or default_store_dir())
        self.server_id = secrets.token_hex(8)
        self.address: str | None = None  # the bound endpoint (the real port when bind ends in :*)
        self.jobs: dict[str, _Job] = {}
        self.queue: deque[str] = deque()
        self.worker: WorkerHandle | None = None
        self._worker_failures = 0
        self._worker_broken: str | None = None
        self._task_seq = 0
        self._dirty: set[str] = set()
        self._outbox: dict[bytes, deque] = {}
        self._retained: deque[str] = deque()
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._bind_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._intervals = {
            "progress": self.config.progress_interval_s,
            "preview": self.config.preview_interval_s,
            "mesh": self.config.mesh_interval_s,
        }
        for stored in self.store.load():
            self.jobs[stored.job_id] = _Job(stored)

    # ------------------------------------------------------------------ running
    def start(self, timeout_s: float = 30.0) -> Server:
        """Serve in a background thread; return once bound (raises what binding raised)."""
        self._thread = threading.Thread(target=self.serve_forever, name="dreamstill-server", daemon=True)
        self._thread.start()
        if not self._bound.wait(timeout_s):
            raise TimeoutError(f"the server did not bind {self.bind} within {timeout_s}s")
        if self._bind_error is not None:
            raise self._bind_error
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def request_stop(self) -> None:
        """Ask serve_forever to return (safe from a signal handler or another thread)."""
        self._stop.set()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def serve_forever(self) -> None:
        import zmq

        self._ctx = ctx = zmq.Context()
        auth = None
        self._ipc_dir = tempfile.mkdtemp(prefix="dreamstill-") if zmq.has("ipc") else None
        try:
            sock = self._sock = ctx.socket(zmq.ROUTER)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # EAGAIN for a full client, EHOSTUNREACH for a gone one
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a client reconnecting with its routing id takes over
            sock.setsockopt(zmq.SNDHWM, self.config.sndhwm)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)  # larger frames from a client: disconnect it
            sock.setsockopt(zmq.LINGER, 1000)  # let the last replies (maybe a large chunk) leave on close
            sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
            if self.keys is not None:
                from zmq.auth.thread import ThreadAuthenticator

                auth = ThreadAuthenticator(ctx)
                auth.start()
                auth.configure_curve_callback("*", credentials_provider=_CurveClients(self.keys.authorized))
                sock.curve_server = True
                sock.curve_secretkey = self.keys.secret
                sock.curve_publickey = self.keys.public
            try:
                sock.bind(self.bind)
            except zmq.ZMQError as err:
                hint = (
                    " (another server may be running there; stop it or pick another port with --bind)"
                    if err.errno == errno.EADDRINUSE
                    else ""
                )
                raise OSError(f"cannot bind {self.bind}: {err}{hint}") from None
            self.address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except BaseException as err:
            self._bind_error = err
            self._bound.set()
            if auth is not None:
                auth.stop()
            ctx.destroy(0)
            if threading.current_thread() is not self._thread:
                raise  # serve_forever called directly: the caller sees the error
            return
        self._bound.set()
        log.info(
            "Dreamstill server %s listening on %s (store %s, CURVE %s)",
            self.server_id,
            self.address,
            self.store.root,
            "on" if self.keys else "off",
        )
        try:
            self._start_worker()
            self._loop()
        finally:
            self._shutdown()
            if auth is not None:
                auth.stop()
            ctx.destroy(linger=1000)
            if self._ipc_dir:
                shutil.rmtree(self._ipc_dir, ignore_errors=True)

    def _loop(self) -> None:
        import zmq

        while not self._stop.is_set():
            poller = zmq.Poller()
            poller.register(self._sock, zmq.POLLIN)
            if self.worker is not None:
                poller.register(self.worker.sock, zmq.POLLIN)
            try:
                timeout = self._flush()
                ready = dict(poller.poll(timeout))
                if self._sock in ready:
                    self._drain_clients()
                if self.worker is not None and self.worker.sock in ready:
                    self._drain_worker()
                self._check_worker()
                self._dispatch()
            except Exception:  # a bug of ours must not take the server down with every queued job
                log.exception("error in the server loop; continuing")
                time.sleep(0.1)

    def _shutdown(self) -> None:
        for job in self.jobs.values():
            if job.state in ("queued", "running"):
                self._finish(
                    job,
                    Failed("interrupted", f"the server was stopped while this job was {job.state}; submit it again"),
                )
        self._flush()
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    # ------------------------------------------------------------------ sending
    def _send(self, ident: bytes, frames: list) -> bool:
        """Send now if the client can take it; False when its queue is full; _Gone when it disconnected."""
        import zmq

        try:
            self._sock.send_multipart([ident, *frames], flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            return False
        except zmq.ZMQError as err:
            if err.errno == errno.EHOSTUNREACH:
                raise _Gone() from None
            raise

    def _reply(self, ident: bytes, frames: list) -> None:
        box = self._outbox.get(ident)
        if box:
            if len(box) < 1000:
                box.append(frames)
            return
        try:
            if not self._send(ident, frames):
                self._outbox.setdefault(ident, deque()).append(frames)
        except _Gone:
            pass

    def _error(self, ident: bytes, code: str, message: str, rid: str | None = None, job_id: str | None = None):
        self._reply(ident, encode(Message("error", job_id=job_id, rid=rid, payload={"code": code, "message": message})))

    def _flush(self) -> int:
        """Send pending replies and job state; return the poll timeout (ms) until the next rate-limited send."""
        now = time.monotonic()
        wake = now + self.config.poll_ms / 1000
        for ident in list(self._outbox):
            box = self._outbox[ident]
            try:
                while box and self._send(ident, box[0]):
                    box.popleft()
            except _Gone:
                box.clear()
            if not box:
                del self._outbox[ident]
        for job_id in list(self._dirty):
            job = self.jobs.get(job_id)
            clean, due = (True, None) if job is None else self._flush_job(job, now)
            if clean:
                self._dirty.discard(job_id)
            elif due is not None:
                wake = min(wake, due)
        return max(0, int((wake - now) * 1000) + 1)

    def _flush_job(self, job: _Job, now: float) -> tuple[bool, float | None]:
        """Advance every subscriber of ``job``: (all up to date?, earliest time a rate-limited send is due)."""
        clean, next_due = True, None
        for ident, sub in list(job.subs.items()):
            pending = sorted(
                (seq, kind, frames) for kind, (seq, frames) in job.latest.items() if seq > sub.sent.get(kind, 0)
            )
            try:
                held = False
                for seq, kind, frames in pending:
                    if job.terminal_frames is None:  # rate limits apply while the job runs
                        due = sub.last_sent.get(kind, -1e9) + self._intervals[kind]
                        if now < due:
                            next_due = due if next_due is None else min(next_due, due)
                            held = True
                            continue
                    if not self._send(ident, frames):
                        held = True  # the client is slow: keep the newest state, try again later
                        break
                    sub.sent[kind], sub.last_sent[kind] = seq, now
                if held:
                    clean = False
                    continue
                if job.terminal_frames is not None and not sub.terminal_sent:
                    if not self._send(ident, job.terminal_frames[1]):
                        clean = False
                        continue
                    sub.terminal_sent = True
                if sub.terminal_sent:
                    del job.subs[ident]  # nothing more will come for this job
            except _Gone:
                job.subs.pop(ident, None)
        return clean, next_due

    def _subscribe(self, job: _Job, ident: bytes) -> None:
        """(Re)send the job's newest state and its end to ``ident`` from now on."""
        job.subs[ident] = _Sub()
        if job.stored.last_progress is not None and "progress" not in job.latest:
            job.seq += 1
            job.latest["progress"] = (job.seq, encode(job.stored.last_progress, job_id=job.id))
        if job.stored.terminal is not None and job.terminal_frames is None:
            job.seq += 1
            job.terminal_frames = (job.seq, encode(job.stored.terminal, job_id=job.id))
        self._dirty.add(job.id)

    # ------------------------------------------------------------------ requests
    def _drain_clients(self) -> None:
        import zmq

        for _ in range(1000):  # bounded, so worker events and flushing get their turn
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            ident, body = frames[0].bytes, frames[1:]
            try:
                self._handle(ident, decode(body, max_bytes=MAX_REQUEST_BYTES, expect=REQUESTS))
            except ProtocolError as err:
                self._error(ident, err.code, err.message, err.rid)
            except Exception as err:  # a bug of ours: answer it, log it, keep serving
                log.exception("request failed")
                self._error(
                    ident, "internal_error", f"the server failed on this request: {err.__class__.__name__}: {err}", None
                )

    def _job_or_error(self, ident: bytes, msg: Message) -> _Job | None:
        job = self.jobs.get(msg.job_id)
        if job is None:
            self._error(
                ident,
                "unknown_job",
                f"no job {msg.job_id!r} on this server (store {self.store.root}); list_jobs shows the known ones",
                msg.rid,
                msg.job_id,
            )
        return job

    def _handle(self, ident: bytes, msg: Message) -> None:
        kind, rid = msg.type, msg.rid
        if kind == "ping":
            running = self.worker.job_id if self.worker else None
            payload = {
                "server_id": self.server_id,
                "time": time.time(),
                "queued": len(self.queue),
                "running": running,
                "worker_pid": self.worker.pid if self.worker else None,
                "worker_ready": bool(self.worker and self.worker.ready),
                "protocol": PROTOCOL_VERSION,
            }
            self._reply(ident, encode(Message("pong", rid=rid, payload=payload)))
        elif kind == "submit":
            self._submit(ident, msg)
        elif kind == "list_jobs":
            limit = max(1, min(int(msg.payload.get("limit") or 100), 1000))
            jobs = [self._status(job) for job in list(self.jobs.values())[::-1][:limit]]
            self._reply(ident, encode(Message("job_list", rid=rid, payload={"jobs": jobs})))
        else:
            job = self._job_or_error(ident, msg)
            if job is None:
                return
            if kind == "cancel":
                self._cancel(job)
            elif kind == "attach":
                self._subscribe(job, ident)
            elif kind == "fetch_result":
                self._fetch(ident, job, msg)
                return
            self._reply(
                ident, encode(Message("job_status", job_id=job.id, rid=rid, payload={"status": self._status(job)}))
            )

    def _submit(self, ident: bytes, msg: Message) -> None:
        spec: JobSpec = msg.payload
        if len(self.queue) >= self.config.max_queued:
            self._error(
                ident,
                "queue_full",
                f"{len(self.queue)} jobs are already queued; wait for some to finish or cancel them",
                msg.rid,
            )
            return
        if self._worker_broken is not None and self.worker is None:
            self._worker_broken, self._worker_failures = None, 0  # try again with a fresh worker
            self._start_worker()
        stored = self.store.create(spec)
        job = _Job(stored)
        self.jobs[job.id] = job
        self.queue.append(job.id)
        job.subs[ident] = _Sub()
        position = len(self.queue) - 1 + (1 if self.worker and self.worker.job_id else 0)
        self._reply(ident, encode(Message("accepted", job_id=job.id, rid=msg.rid, payload={"position": position})))
        log.info("job %s queued (position %d): %r", job.id, position, spec.prompt[:80])
        self._dispatch()

    def _cancel(self, job: _Job) -> None:
        """Harmless when repeated or when the job has finished."""
        if job.state == "queued":
            try:
                self.queue.remove(job.id)
            except ValueError:
                pass
            self._finish(job, Cancelled(0))
        elif job.state == "running" and job.cancel_requested is None:
            job.cancel_requested = time.monotonic()
            if self.worker is not None and self.worker.job_id == job.id:
                self.worker.cancel(job.task_seq)
            log.info("job %s: cancel requested", job.id)

    def _fetch(self, ident: bytes, job: _Job, msg: Message) -> None:
        rid = msg.rid
        if not isinstance(job.stored.terminal, Done):
            if job.state in ("queued", "running"):
                step = job.stored.last_progress.step if job.stored.last_progress else 0
                self._error(
                    ident,
                    "not_finished",
                    f"job {job.id} is {job.state} (step {step}/{job.stored.spec.steps});"
                    " fetch its result after its done event",
                    rid,
                    job.id,
                )
            else:
                reason = getattr(job.stored.terminal, "message", "")
                self._error(
                    ident, "no_result", f"job {job.id} ended {job.state} and has no result. {reason}", rid, job.id
                )
            return
        files = self.store.result_files(job.id, job.stored.terminal.files)
        name = msg.payload.get("name")
        if name is None:
            self._reply(ident, encode(Message("result_files", job_id=job.id, rid=rid, payload={"files": files})))
            return
        if name not in {f["name"] for f in files}:
            self._error(
                ident,
                "unknown_file",
                f"job {job.id} has no result file {name!r}; it has {[f['name'] for f in files]}",
                rid,
                job.id,
            )
            return
        import numpy as np

        path = self.store.result_path(job.id, name)
        offset = max(0, int(msg.payload.get("offset") or 0))
        size = path.stat().st_size
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(self.config.chunk_bytes)
        payload = {
            "name": name,
            "offset": offset,
            "size": size,
            "eof": offset + len(data) >= size,
            "data": np.frombuffer(data, dtype=np.uint8),
        }
        self._reply(ident, encode(Message("file_chunk", job_id=job.id, rid=rid, payload=payload)))

    def _status(self, job: _Job) -> dict:
        stored, spec = job.stored, job.stored.spec
        status = {
            "job_id": job.id,
            "state": stored.state,
            "prompt": spec.prompt,
            "method": spec.method,
            "mode": spec.mode,
            "steps": spec.steps,
            "created": stored.created,
            "started": stored.started,
            "finished": stored.finished,
            "cancel_requested": job.cancel_requested is not None,
        }
        if stored.state == "queued":
            status["position"] = self.queue.index(job.id) if job.id in self.queue else None
        progress = stored.last_progress
        if progress is not None:
            status.update(step=progress.step, total=progress.total, loss=progress.loss, eta_s=progress.eta_s)
        terminal = stored.terminal
        if isinstance(terminal, Failed):
            status.update(code=terminal.code, message=terminal.message)
        elif isinstance(terminal, Done):
            status.update(
                files=[f["name"] for f in self.store.result_files(job.id, terminal.files)], seconds=terminal.seconds
            )
        elif isinstance(terminal, Cancelled):
            status.update(step=terminal.step)
        return status

    # ------------------------------------------------------------------ worker
    def _start_worker(self) -> None:
        self.worker = WorkerHandle(self._ctx, self.runner, self._ipc_dir)
        log.info("started worker pid %s", self.worker.pid)

    def _drain_worker(self) -> None:
        import zmq

        worker = self.worker
        for _ in range(1000):
            try:
                frames = worker.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                self._on_worker(worker, frames)
            except Exception:
                log.exception("bad message from the worker")

    def _on_worker(self, worker: WorkerHandle, frames: list) -> None:
        import json

        header = json.loads(frames[0].bytes)
        if str(header.get("type", "")).startswith("_"):  # control message of the worker itself
            if header.get("type") == "_ready":
                worker.ready, worker.pid = True, header.get("pid")
                worker.load_error = header.get("error")
                self._worker_failures = 0
                if worker.load_error:
                    log.error("worker: %s", worker.load_error)
            elif header.get("type") == "_exiting":
                worker.retiring = True
            return
        peek_header(frames)  # version check
        job = self.jobs.get(header.get("job"))
        if job is None or job.id != worker.job_id:
            return  # an event of a job already failed or cancelled by the server
        kind = header.get("type")
        if kind in STATE_EVENTS:
            job.seq += 1
            job.latest[kind] = (job.seq, frames)
            if kind == "progress":
                raw = unpack(frames)
                job.stored.last_progress = event_from("progress", raw.body)
                self.store.log_event(job.id, job.stored.last_progress)
            self._dirty.add(job.id)
        elif kind in TERMINAL:
            raw = unpack(frames)
            event = event_from(kind, raw.body)
            self._finish(job, event, frames)

    def _finish(self, job: _Job, event, frames: list | None = None) -> None:
        stored = job.stored
        if stored.last_progress is not None:
            self.store.log_event(job.id, stored.last_progress, force=True)  # the last step, for status after restart
        stored.terminal, stored.finished = event, time.time()
        stored.state = {Done: "done", Failed: "failed", Cancelled: "cancelled"}[type(event)]
        self.store.log_event(job.id, event, force=True)
        job.seq += 1
        job.terminal_frames = (job.seq, frames if frames is not None else encode(event, job_id=job.id))
        self._retained.append(job.id)  # keep the big frames (preview, mesh) of the last few finished jobs only
        while len(self._retained) > self.config.retain_finished:
            old = self.jobs.get(self._retained.popleft())
            if old is not None:
                old.latest.pop("preview", None)
                old.latest.pop("mesh", None)
        if self.worker is not None and self.worker.job_id == job.id:
            self.worker.job_id = None
        self._dirty.add(job.id)
        log.info(
            "job %s %s%s",
            job.id,
            stored.state,
            f": [{event.code}] {event.message}" if isinstance(event, Failed) else "",
        )

    def _check_worker(self) -> None:
        worker = self.worker
        if worker is None:
            return
        running = self.jobs.get(worker.job_id) if worker.job_id else None
        if (
            running is not None
            and running.cancel_requested is not None
            and time.monotonic() - running.cancel_requested > self.config.cancel_grace_s
        ):
            log.warning(
                "job %s did not stop within %.0fs of its cancel; killing the worker",
                running.id,
                self.config.cancel_grace_s,
            )
            worker.kill()
        if worker.alive():
            return
        self._drain_worker()  # events it sent before dying (e.g. failed: out_of_memory) come first
        worker.proc.join(1)
        reason = worker.exit_description()
        running = self.jobs.get(worker.job_id) if worker.job_id else None
        if running is not None:
            if running.cancel_requested is not None:
                step = running.stored.last_progress.step if running.stored.last_progress else 0
                self._finish(running, Cancelled(step))
            else:
                step = running.stored.last_progress.step if running.stored.last_progress else 0
                self._finish(
                    running,
                    Failed(
                        "worker_died",
                        f"the GPU worker process {reason} at step {step} of {running.stored.spec.steps}; this job was "
                        "stopped and a fresh worker started. If it happens again, lower resolution, batch_size or "
                        "mesh_resolution, and look at the server's log.",
                    ),
                )
        if not worker.ready:
            self._worker_failures += 1
        worker.close()
        self.worker = None
        log.warning("worker pid %s %s", worker.pid, reason)
        if self._worker_failures >= self.config.max_worker_start_failures:
            self._worker_broken = (
                f"the GPU worker process {reason} before it was ready, "
                f"{self._worker_failures} times in a row; look at the server's log"
            )
            for job_id in list(self.queue):
                self.queue.remove(job_id)
                self._finish(self.jobs[job_id], Failed("worker_unavailable", self._worker_broken))
            return
        self._start_worker()

    def _dispatch(self) -> None:
        worker = self.worker
        if worker is None or not worker.ready or worker.retiring or worker.job_id is not None or not self.queue:
            return
        job = self.jobs[self.queue.popleft()]
        self._task_seq += 1
        job.task_seq = self._task_seq
        job.stored.state, job.stored.started = "running", time.time()
        self.store.log(job.id, {"type": "started", "t": job.stored.started, "worker_pid": worker.pid})
        if not worker.run(job.id, job.task_seq, job.stored.spec.to_dict(), self.store.job_dir(job.id)):
            log.warning("worker pid %s did not take job %s; restarting it", worker.pid, job.id)
            worker.job_id, worker.retiring = None, True
            job.stored.state = "queued"
            self.queue.appendleft(job.id)  # the next worker runs it
            worker.kill()
