"""The Dreamstill server: a ZeroMQ ROUTER in front of a job queue, worker processes and the job store.

One thread owns every socket and runs the loop (``serve_forever``); each turn::

    poll(ROUTER, workers)  ->  requests (intake.py -> handlers.py): submit / cancel / status / list_jobs / attach /
                               fetch_result / ping, each answered with its rid
                           ->  worker events: the newest progress / preview / mesh per job kept (protocol.newest),
                               small ones logged to the store
    listener               ->  stop listening a moment when accept fails for want of descriptors (listener.py)
    workers alive?         ->  a dead one fails its own job and is replaced; start failures back off (supervisor.py)
    housekeeping           ->  ends not yet on disk written again, retention (retention.py)
    dispatch               ->  queued jobs to idle workers, unless the store's disk is full
    flush                  ->  replies and job state to clients, rate-limited, capped in bytes (fanout.py)

State changes happen in memory first and reach the disk after; a failed write never leaves a job hanging: a full
disk fails the running job with ``disk_full``, holds the queue, and the next job starts as soon as a write works.

Security: any bind that is not loopback needs CURVE keys; clients are admitted by their public key (ZAP). Jobs
belong to their submitter (handlers.py); priors and generators come only from what the server offers (models.py);
no text that leaves the server carries a path of its disk (redact.py). Nothing is ever unpickled.
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

from dreamstill.protocol import Cancelled, Done, Failed
from dreamstill.protocol.messages import REQUESTS, STATE_EVENTS, TERMINAL, decode, encode, event_from
from dreamstill.protocol.wire import MAX_REQUEST_BYTES, PROTOCOL_VERSION, ProtocolError, unpack

from .config import DEFAULT_BIND, ServerConfig, default_store_dir
from .fanout import Fanout
from .handlers import Handlers, status_of
from .intake import Request, read_request
from .jobs import LiveJob, Subscriber
from .keys import ServerKeys, is_loopback, load_server_keys
from .listener import AcceptGuard, raise_fd_limit
from .models import ModelCatalog, ModelRefused
from .pacing import ChunkPacer, SubmitQuota
from .redact import Redactor
from .retention import expired
from .store import JobStore, StoredJob, StoreWriteError
from .supervisor import WorkerPool, WorkerSlot
from .worker import DEFAULT_RUNNER

log = logging.getLogger("dreamstill.server")

_STATE_OF = {Done: "done", Failed: "failed", Cancelled: "cancelled"}


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
        catalog: ModelCatalog | None = None,
    ):
        if keys is None and keys_dir is not None:
            keys = load_server_keys(keys_dir)
        if keys is None and not is_loopback(bind):
            raise ValueError(
                f"binding to {bind} would let anyone on the network use this GPU server; make keys with "
                "`dreamstill keys -o DIR` and pass --keys DIR, or bind to tcp://127.0.0.1:PORT"
            )
        self.bind, self.keys, self.runner = bind, keys, runner
        self.config = config = config or ServerConfig()
        self.store = JobStore(Path(store_dir or default_store_dir()).expanduser().resolve())
        self.catalog = catalog or ModelCatalog.build(config.priors, config.generators, config.allow_hub)
        self.redact = Redactor({str(self.store.root): "<job store>", **self.catalog.known_paths()})
        self.server_id = secrets.token_hex(8)
        self.address: str | None = None  # the bound endpoint (the real port when bind ends in :*)
        self.jobs: dict[str, LiveJob] = {}
        self.queue: deque[str] = deque()
        self.handlers = Handlers(self)
        self.pacer = ChunkPacer(config.max_chunk_bytes_total, config.chunk_ack_timeout_s)
        self.submit_quota = SubmitQuota(config.submits_per_minute_per_client)
        self.pool: WorkerPool | None = None
        self.fanout: Fanout | None = None
        self.guard: AcceptGuard | None = None
        self.disk_full: str | None = None  # why the queue is held, while the store cannot be written
        self._disk_retry_at = 0.0
        self._unwritten: set[str] = set()  # finished jobs whose end is not on disk yet
        self._retained: deque[str] = deque()
        self._task_seq = 0
        self._internal_errors = 0
        self._next_housekeeping = 0.0
        self._prune_due = True
        self._stop, self._bound = threading.Event(), threading.Event()
        self._bind_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        for stored in self.store.load():
            self.add_job(stored)

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

        raise_fd_limit()
        self._workdir = _make_workdir()
        self._ctx = ctx = zmq.Context()
        auth = None
        try:
            auth = self._start_auth(ctx)
            self._sock = self._bind_socket(ctx)
        except BaseException as err:
            self._bind_error = err
            self._bound.set()
            if auth is not None:
                auth.stop()
            ctx.destroy(0)
            shutil.rmtree(self._workdir, ignore_errors=True)
            if threading.current_thread() is not self._thread:
                raise  # serve_forever called directly: the caller sees the error
            return
        self._bound.set()
        log.info("Dreamstill server %s listening on %s (CURVE %s)", self.server_id, self.address,
                 "on" if self.keys else "off")  # fmt: skip
        try:
            self.fanout = Fanout(self._sock, self.config, self.jobs)
            self.guard = AcceptGuard(self._sock, self.address, self.config.accept_pause_s)
            self.pool = WorkerPool(ctx, self.runner, self.config, self._workdir, use_ipc=zmq.has("ipc"))
            self.pool.start_all()
            self._loop()
        finally:
            self._shutdown()
            if auth is not None:
                auth.stop()
            ctx.destroy(linger=1000)
            shutil.rmtree(self._workdir, ignore_errors=True)

    def _start_auth(self, ctx):
        if self.keys is None:
            return None
        from zmq.auth.thread import ThreadAuthenticator

        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve_callback("*", credentials_provider=_CurveClients(self.keys.authorized))
        return auth

    def _bind_socket(self, ctx):
        import zmq

        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # EAGAIN for a full client, EHOSTUNREACH for a gone one
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a client reconnecting with its routing id takes over
        sock.setsockopt(zmq.SNDHWM, self.config.sndhwm)
        sock.setsockopt(zmq.RCVHWM, 100)  # requests queued per client before libzmq stops reading its socket
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)  # a bigger frame from a client: libzmq disconnects it
        sock.setsockopt(zmq.LINGER, 1000)  # let the last replies (maybe a large chunk) leave on close
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
        sock.setsockopt(zmq.HANDSHAKE_IVL, int(self.config.handshake_s * 1000))
        if self.keys is not None:
            sock.curve_server = True
            sock.curve_secretkey = self.keys.secret
            sock.curve_publickey = self.keys.public
        try:
            sock.bind(self.bind)
        except zmq.ZMQError as err:
            sock.close(0)
            hint = (
                " (another server may be running there; stop it or pick another port with --bind)"
                if err.errno == errno.EADDRINUSE
                else ""
            )
            raise OSError(f"cannot bind {self.bind}: {err}{hint}") from None
        self.address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return sock

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._turn()
            except Exception:  # a bug of ours must not take the server down with every queued job
                log.exception("error in the server loop; continuing")
                time.sleep(0.1)

    def _turn(self) -> None:
        import zmq

        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self.guard.monitor, zmq.POLLIN)
        workers = self.pool.sockets()
        for _, sock in workers:
            poller.register(sock, zmq.POLLIN)
        ready = dict(poller.poll(self.fanout.flush()))
        if self._sock in ready:
            self._read_clients()
        for slot, sock in workers:
            if sock in ready and slot.handle is not None and slot.handle.sock is sock:
                self.pool.read(slot, self._on_worker_event)
        self.guard.check()
        self._check_workers()
        self._housekeeping()
        self.dispatch()

    def _shutdown(self) -> None:
        for job in list(self.jobs.values()):
            resumable = job.state == "running" and job.stored.spec.checkpoint_every > 0
            if job.unfinished and not resumable:  # a checkpointing job resumes at the next start
                self.finish(job, Failed("interrupted", f"the server was stopped while this job was {job.state}; "
                                                       "submit it again"))  # fmt: skip
            elif resumable and job.stored.last_progress is not None:
                try:  # where it got to, for status after the restart
                    self.store.log_event(job.id, job.stored.last_progress, force=True)
                except StoreWriteError:
                    pass
        if self.fanout is not None:
            self.fanout.flush()
        if self.pool is not None:
            self.pool.stop()
        if self.guard is not None:
            self.guard.close()

    # ------------------------------------------------------------------ requests
    def _read_clients(self) -> None:
        for _ in range(1000):  # bounded, so worker events and flushing get their turn
            req = read_request(self._sock, curve=self.keys is not None)
            if req is None:
                return
            self._on_request(req)

    def _on_request(self, req: Request) -> None:
        rid = req.rid
        try:
            if req.extra_frames:
                frames = len(req.frames) + req.extra_frames
                raise ProtocolError(
                    "malformed", f"a request has at most {len(req.frames)} frames; this one had {frames}", rid
                )
            self.handlers.handle(req, decode(req.frames, max_bytes=MAX_REQUEST_BYTES, expect=REQUESTS))
        except ProtocolError as err:
            self.handlers.error(req, err.code, err.message, err.rid or rid)
        except RecursionError:
            self.handlers.error(req, "bad_spec", "the request is nested too deeply; keep JobSpec.options flat", rid)
        except Exception as err:  # a bug of ours: answer it, log it, keep serving
            self._internal_errors += 1
            log.error("request failed: %s: %s", err.__class__.__name__, str(err)[:300],
                      exc_info=self._internal_errors <= 20)  # fmt: skip
            text = f"the server failed on this request: {err.__class__.__name__}: {str(err)[:300]}"
            self.handlers.error(req, "internal_error", text, rid)

    def ping_payload(self) -> dict:
        workers = self.pool.status() if self.pool else []
        running = [w["job"] for w in workers if w["job"]]
        return {
            "server_id": self.server_id,
            "time": time.time(),
            "protocol": PROTOCOL_VERSION,
            "queued": len(self.queue),
            "running": running[0] if running else None,
            "workers": workers,
            "worker_pid": workers[0]["pid"] if workers else None,
            "worker_ready": any(w["state"] in ("ready", "busy") for w in workers),
            "offers": self.catalog.offers(),
            "shared": self.config.shared,
            "disk_full": self.disk_full,
            "listening": self.guard.listening if self.guard else True,
            "accept_pauses": self.guard.pauses if self.guard else 0,
            "dropped_replies": self.fanout.dropped if self.fanout else 0,
        }

    # ------------------------------------------------------------------ jobs
    def add_job(self, stored: StoredJob) -> LiveJob:
        job = self.jobs[stored.job_id] = LiveJob(stored)
        if stored.state == "queued":
            self.queue.append(job.id)
        return job

    @staticmethod
    def new_subscriber() -> Subscriber:
        return Subscriber()

    def subscribe(self, job: LiveJob, ident: bytes) -> None:
        """Send ``ident`` the job's newest state and its end from now on (also for jobs loaded from disk)."""
        stored = job.stored
        if stored.last_progress is not None and "progress" not in job.events.latest:
            job.events.put("progress", encode(stored.last_progress, job_id=job.id))
        if stored.terminal is not None and not job.events.ended:
            job.events.put(_STATE_OF[type(stored.terminal)], encode(stored.terminal, job_id=job.id))
        self.fanout.subscribe(job, ident)

    def status(self, job: LiveJob) -> dict:
        position = self.queue.index(job.id) if job.state == "queued" and job.id in self.queue else None
        status = status_of(job, self.store, position)
        if "message" in status:
            status["message"] = self.redact(status["message"])
        return status

    def cancel(self, job: LiveJob) -> None:
        """Harmless when repeated or when the job has finished."""
        if job.state == "queued":
            self.finish(job, Cancelled(job.step))
        elif job.state == "running" and job.cancel_requested is None:
            job.cancel_requested = time.monotonic()
            slot = self.pool.running(job.id)
            if slot is not None:
                slot.handle.cancel(job.task_seq)
            log.info("job %s: cancel requested", job.id)

    def finish(self, job: LiveJob, event, frames: list | None = None, from_worker: bool = False) -> None:
        """End a job: in memory and to its subscribers first, then on disk (retried while the disk is full).

        A job the server ends while its worker still runs it (``from_worker`` False) keeps that worker busy until
        the worker has stopped it too, so the next job never waits behind it."""
        stored = job.stored
        if not job.unfinished:
            return
        stored.terminal, stored.finished, stored.state = event, time.time(), _STATE_OF[type(event)]
        job.events.put(stored.state, frames if frames is not None else encode(event, job_id=job.id))
        if job.id in self.queue:
            self.queue.remove(job.id)
        slot = self.pool.running(job.id) if self.pool else None
        if slot is not None:
            slot.handle.job_id = None
            if not from_worker:
                slot.handle.draining, slot.handle.draining_since = job.id, time.monotonic()
        self._retained.append(job.id)  # keep the big frames (preview, mesh) of the last few finished jobs only
        while len(self._retained) > self.config.retain_previews:
            old = self.jobs.get(self._retained.popleft())
            if old is not None:
                old.events.forget("preview", "mesh")
        if self.fanout is not None:
            self.fanout.dirty.add(job.id)
        self._write_end(job)
        self._prune_due = True
        detail = f": [{event.code}] {event.message}" if isinstance(event, Failed) else ""
        log.info("job %s %s%s", job.id, stored.state, detail)

    def _write_end(self, job: LiveJob) -> None:
        try:
            if job.stored.last_progress is not None:
                self.store.log_event(job.id, job.stored.last_progress, force=True)
            self.store.log_event(job.id, job.stored.terminal)
            self._unwritten.discard(job.id)
        except StoreWriteError as err:
            if job.id not in self._unwritten:
                log.warning("job %s: its end is not on disk yet (%s); writing it again later", job.id, err)
            self._unwritten.add(job.id)

    # ------------------------------------------------------------------ workers
    def _on_worker_event(self, slot: WorkerSlot, header: dict, frames: list) -> None:
        job, kind = self.jobs.get(header.get("job")), header.get("type")
        if slot.handle is not None and header.get("job") == slot.handle.draining and kind in TERMINAL:
            slot.handle.draining = None  # the worker has stopped the job the server ended: it is free again
            return
        if job is None or slot.handle is None or job.id != slot.handle.job_id:
            return  # an event of a job already failed or cancelled by the server
        if kind in STATE_EVENTS:
            job.events.put(kind, frames)
            if kind == "progress":
                job.stored.last_progress = event_from("progress", unpack(frames).body)
                try:
                    self.store.log_event(job.id, job.stored.last_progress)
                except StoreWriteError as err:
                    self._store_failed(job, err)
                    return
            self.fanout.dirty.add(job.id)
        elif kind in TERMINAL:
            event = event_from(kind, unpack(frames).body)
            if isinstance(event, Failed):
                event, frames = Failed(event.code, self.redact(event.message)), None
            self.finish(job, event, frames, from_worker=True)

    def _store_failed(self, job: LiveJob, err: StoreWriteError) -> None:
        """The store cannot be written while ``job`` runs: stop it and say why; hold the queue on a full disk."""
        slot = self.pool.running(job.id)
        if slot is not None:
            slot.handle.cancel(job.task_seq)
        if err.disk_full:
            self.disk_full = "the job store's disk is full"
            self._disk_retry_at = time.monotonic() + 1.0
            message = (
                f"the server's disk is full, so this job stopped at step {job.step}; "
                "free space on the server and submit it again (queued jobs start once there is space)"
            )
            self.finish(job, Failed("disk_full", message))
        else:
            self.finish(job, Failed("store_error", f"the server cannot write this job's log ({err.strerror})"))

    def _check_workers(self) -> None:
        now = time.monotonic()
        grace = self.config.cancel_grace_s
        for slot in self.pool.slots:
            handle = slot.handle
            job = self.jobs.get(handle.job_id) if handle and handle.job_id else None
            late = job is not None and job.cancel_requested and now - job.cancel_requested > grace
            if late or (handle and handle.draining and now - handle.draining_since > grace):
                log.warning("worker %d did not stop its job within %.0fs; killing it", slot.index, grace)
                handle.kill()
        for slot, handle, reason in self.pool.reap(self._on_worker_event):
            job = self.jobs.get(handle.job_id) if handle.job_id else None
            if job is None or not job.unfinished:
                continue
            if job.cancel_requested is not None:
                self.finish(job, Cancelled(job.step))
                continue
            message = (
                f"the worker process on {slot.device} {reason} at step {job.step} of {job.stored.spec.steps}; this "
                "job was stopped and a fresh worker started. If it happens again, lower resolution, batch_size or "
                "mesh_resolution, and look at the server's log."
            )
            self.finish(job, Failed("worker_died", message))
        broken = self.pool.all_broken
        if broken is not None:
            for job_id in list(self.queue):
                self.finish(self.jobs[job_id], Failed("worker_unavailable", broken))

    def dispatch(self) -> None:
        """Hand queued jobs to idle workers, oldest first; hold them while the store's disk is full."""
        if not self.queue or self.pool is None or time.monotonic() < self._disk_retry_at:
            return
        for slot in self.pool.idle():
            while self.queue and slot.handle is not None and slot.handle.idle:
                if self._start_job(slot, self.jobs[self.queue[0]]):
                    break
                if self.disk_full is not None:
                    return

    def _start_job(self, slot: WorkerSlot, job: LiveJob) -> bool:
        """Start ``job`` on ``slot``; False when it did not start (failed, or held back by a full disk)."""
        try:
            spec = self.catalog.resolve(job.stored.spec.to_dict())
        except ModelRefused as err:
            self.finish(job, Failed("bad_spec", str(err)))
            return False
        free = _free_bytes(self.store.root)
        if free < self.config.min_free_bytes:
            self.disk_full = f"the job store's disk has {free >> 20} MiB free, less than a job needs"
            self._disk_retry_at = time.monotonic() + 1.0
            return False
        started = time.time()
        try:
            self.store.log(job.id, {"type": "started", "t": started, "worker_pid": slot.handle.pid,
                                    "device": slot.device})  # fmt: skip
        except StoreWriteError as err:
            if err.disk_full:
                self.disk_full, self._disk_retry_at = "the job store's disk is full", time.monotonic() + 1.0
            else:
                self.finish(job, Failed("store_error", f"the server cannot write this job's log ({err.strerror})"))
            return False
        self.disk_full = None
        self.queue.popleft()
        self._task_seq += 1
        job.task_seq, job.stored.state, job.stored.started = self._task_seq, "running", started
        if not slot.handle.run(job.id, job.task_seq, spec, self.store.job_dir(job.id), resume=job.stored.resume):
            log.warning("worker pid %s did not take job %s; restarting it", slot.handle.pid, job.id)
            slot.handle.job_id, slot.handle.retiring = None, True
            job.stored.state = "queued"
            self.queue.appendleft(job.id)  # the next worker runs it
            slot.handle.kill()
            return False
        return True

    # ------------------------------------------------------------------ housekeeping
    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now < self._next_housekeeping:
            return
        self._next_housekeeping = now + 1.0
        for job_id in list(self._unwritten):
            job = self.jobs.get(job_id)
            if job is None:
                self._unwritten.discard(job_id)
            else:
                self._write_end(job)
        if self._prune_due or self.config.keep_days > 0:
            self._prune_due = False
            self.prune()

    def prune(self) -> list[str]:
        """Delete the finished jobs the retention rules expire (not one a client is still being sent)."""
        doomed = expired(self.jobs.values(), self.config.keep_jobs, self.config.keep_days, time.time())
        gone = []
        for job_id in doomed:
            job = self.jobs[job_id]
            if job.subs or job_id in self._unwritten:
                continue
            del self.jobs[job_id]
            self.store.delete(job_id)
            gone.append(job_id)
        if gone:
            log.info("retention: deleted %d finished jobs", len(gone))
        return gone


def _make_workdir() -> str:
    """A private folder for the workers' sockets and working directory; stale ones of dead servers removed."""
    base = tempfile.gettempdir()
    for old in glob.glob(os.path.join(base, "dreamstill-*-*")):
        pid = os.path.basename(old).split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"dreamstill-{os.getpid()}-")


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 1 << 62  # unknown: let the write itself tell


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["DEFAULT_BIND", "Server", "ServerConfig", "default_store_dir"]
