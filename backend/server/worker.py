"""The worker: a separate process that owns one device (a GPU, or a share of the CPU) and runs one job at a time.

The server starts it with multiprocessing's *spawn* context (a fresh interpreter: no CUDA state inherited from the
server, and torch is imported only here). Server and worker talk over one ZeroMQ PAIR socket on a private ipc://
path (tcp loopback where ipc is missing), using the protocol's own wire format, so nothing is pickled at run time:

    server -> worker   {"type": "_run", "job", "seq", "spec", "out_dir", "resume"} | {"type": "_stop"}
    worker -> server   {"type": "_ready", "pid", "error"} then, per job, the encoded protocol events

A texture or refine job's mesh is not sent over this socket: the store wrote it into the job's folder
(input_mesh.npz) and the worker reads it from there and passes it to the runner as ``input_mesh``.

Cancel is a shared 64-bit integer: the server writes the running task's ``seq`` into it and the runner's cancel
callback compares it with its own, so a late cancel can never hit the next job. The kernel kills the worker when
the server process dies (PR_SET_PDEATHSIG on Linux); elsewhere the cancel callback notices within a second.

An exception in the runner becomes ``Failed`` with a code (``out_of_memory``, ``cuda_error``, ``disk_full``,
``internal_error``); after an out-of-memory or CUDA error the worker exits, so the server starts a fresh process
with a clean device. Before ``Done`` goes out the worker records the result files in the job's manifest
(store.write_manifest: sizes and SHA-256, hashed here rather than in the server loop) and names them relative to
the job folder, so no path of the server's disk travels to a client.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

DEFAULT_RUNNER = "dreamstill.backend.jobs:run_job"
STOP_ALL = -1  # cancel_seq value that cancels whatever job is running (server shutdown)
_DISK_FULL_TEXT = ("no space left on device", "[errno 28]", "disk quota exceeded", "[errno 122]")
_OOM_TEXT = ("outofmemory", "out of memory", "can't allocate memory", "cannot allocate memory", "bad_alloc")


def resolve_runner(runner: str | Callable) -> Callable:
    """A runner given as ``"module:function"`` (imported here, in the worker) or as a callable."""
    if callable(runner):
        return runner
    module, _, name = str(runner).partition(":")
    if not module or not name:
        raise ValueError(f"runner {runner!r} must look like 'package.module:function'")
    return getattr(importlib.import_module(module), name)


def is_disk_full(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in _DISK_FULL_TEXT)


def classify(exc: BaseException) -> tuple[str, str, bool]:
    """(code, message for a person, fatal) for an exception that escaped the runner. Fatal = restart the worker."""
    text = f"{exc.__class__.__name__}: {str(exc)[:500]}"
    lowered = text.lower()
    if isinstance(exc, MemoryError) or any(marker in lowered for marker in _OOM_TEXT):
        return (
            "out_of_memory",
            f"the worker ran out of memory ({text}); lower resolution, batch_size, "
            "mesh_resolution or texture_size, or close other programs using the GPU or RAM. The worker was "
            "restarted to release the memory.",
            True,
        )
    if "cuda" in lowered or "cudnn" in lowered or "device-side assert" in lowered:
        return (
            "cuda_error",
            f"a CUDA error stopped the job ({text}); the worker was restarted with a fresh GPU "
            "context. If it repeats, update the GPU driver or run the server with CUDA_LAUNCH_BLOCKING=1 to "
            "find the failing step (traceback in error.log in the job's folder).",
            True,
        )
    if is_disk_full(text):
        return "disk_full", f"the server's disk is full ({text}); free space there and submit the job again", False
    return ("internal_error", f"the job runner raised {text}; traceback in error.log in the job's folder", False)


def prepare_process(device: str, threads: int, workdir: str | None = None) -> None:
    """Before torch is imported: show the worker only its device, give it its share of the CPU threads, and run it
    in an empty folder (a model name is never read as a path relative to the server's folder)."""
    if workdir is not None:
        os.chdir(workdir)
    if device.startswith("cuda:"):
        os.environ["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
    elif device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if "OMP_NUM_THREADS" not in os.environ:  # torch's first threads; _set_threads adjusts them before each job
        from dreamstill.backend.threads import choose_threads, physical_cores

        count = choose_threads(cores=min(threads, physical_cores()) if threads else None).threads
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(count)
    if sys.platform.startswith("linux"):  # die with the server, even when it is SIGKILLed
        try:
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _send_json(sock, header: dict, flags: int = 0) -> None:
    sock.send(json.dumps(header).encode("utf-8"), flags)


class _Parent:
    """Is the server still there? (Checked at most once a second from the runner's cancel callback.)"""

    def __init__(self):
        import multiprocessing

        self.process, self.pid, self.checked = multiprocessing.parent_process(), os.getppid(), time.monotonic()

    def gone(self) -> bool:
        return (self.process is not None and not self.process.is_alive()) or os.getppid() != self.pid

    def gone_throttled(self) -> bool:
        now = time.monotonic()
        if now - self.checked <= 1.0:
            return False
        self.checked = now
        return self.gone()


def worker_main(
    endpoint: str, runner, cancel_seq, device: str = "auto", threads: int = 0, workdir: str | None = None
) -> None:
    """Entry point of the worker process (a spawn target: module-level, plain arguments)."""
    import signal

    import zmq

    prepare_process(device, threads, workdir)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the server's terminal: the server stops us in order
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    sock.setsockopt(zmq.LINGER, 5000)  # let the last (possibly large) event leave before exiting
    sock.setsockopt(zmq.SNDTIMEO, 60_000)  # a server gone for a minute: give up instead of blocking forever
    sock.connect(endpoint)
    parent = _Parent()
    try:
        fn, load_error = resolve_runner(runner), None
    except Exception as exc:  # report, then fail each job with the reason instead of dying in a restart loop
        fn, load_error = None, f"could not load the job runner {runner!r}: {exc.__class__.__name__}: {exc}"
    _send_json(sock, {"type": "_ready", "pid": os.getpid(), "error": load_error, "device": device})
    try:
        while True:
            header = _next_command(sock, parent)
            if header is None:
                return
            _set_threads(threads)
            if not _run_one(sock, fn, load_error, header, cancel_seq, parent):
                return
    finally:
        sock.close()
        ctx.term()


def _set_threads(cap: int) -> None:
    """Before each job: torch's threads by the load now (backend.threads), at most ``cap`` (this worker's share
    of the cores when several CPU workers run; 0 = all physical cores)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    from dreamstill.backend.threads import choose_threads, physical_cores

    torch.set_num_threads(choose_threads(cores=min(cap, physical_cores()) if cap else None).threads)


def _next_command(sock, parent: _Parent) -> dict | None:
    """The next ``_run`` header, or None when the worker should exit (``_stop``, or the server is gone)."""
    while True:
        if not sock.poll(1000):
            if parent.gone():
                return None
            continue
        header = json.loads(sock.recv())
        if header.get("type") == "_stop":
            return None
        if header.get("type") == "_run":
            return header


def _run_one(sock, fn, load_error, header: dict, cancel_seq, parent: _Parent) -> bool:
    """Run one job and send its events; False when the worker must exit afterwards (a fatal error)."""
    from dreamstill.protocol import Failed, JobSpec
    from dreamstill.protocol.messages import encode

    job_id, seq, out_dir = header["job"], int(header["seq"]), Path(header["out_dir"])
    if fn is None:
        sock.send_multipart(encode(Failed("worker_broken", load_error), job_id=job_id), copy=False)
        return True

    def cancel() -> bool:
        return cancel_seq.value in (seq, STOP_ALL) or parent.gone_throttled()

    try:
        extra = _input_mesh_argument(out_dir)
    except ValueError as err:  # a damaged input_mesh.npz: this job cannot run, the worker is fine
        sock.send_multipart(encode(Failed("bad_mesh", str(err)), job_id=job_id), copy=False)
        return True
    try:
        spec = JobSpec.from_dict(header["spec"])
        events = fn(spec, out_dir, cancel=cancel, resume=bool(header.get("resume")), **extra)
        terminal = _stream(sock, events, job_id, out_dir)
        if terminal is None:
            failed = Failed(
                "internal_error",
                "the job runner stopped without a done, failed or cancelled event; this is a bug in the engine",
            )
            sock.send_multipart(encode(failed, job_id=job_id), copy=False)
        return True
    except Exception as exc:
        code, message, fatal = classify(exc)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "error.log").write_text(traceback.format_exc())
        except OSError:
            pass
        if fatal:  # tell the server first, so it hands the next job to a fresh worker instead
            _send_json(sock, {"type": "_exiting", "reason": code})
        sock.send_multipart(encode(Failed(code, message), job_id=job_id), copy=False)
        return not fatal


def _input_mesh_argument(out_dir: Path) -> dict:
    """``{"input_mesh": InputMesh}`` when the job's folder holds the mesh it was submitted with (store.create),
    else nothing (so runners that take no mesh keep working)."""
    from .store import read_input_mesh

    mesh = read_input_mesh(out_dir)
    return {} if mesh is None else {"input_mesh": mesh}


def _stream(sock, events, job_id: str, out_dir: Path):
    """Send the runner's events until its terminal one (returned; None when it never came)."""
    from dreamstill.protocol.messages import EVENT_TYPES, TERMINAL, encode
    from dreamstill.protocol.wire import ProtocolError

    try:
        for event in events:
            if type(event) not in EVENT_TYPES:
                continue
            terminal = EVENT_TYPES[type(event)] in TERMINAL
            if terminal:
                event = _final_event(event, out_dir)
            try:
                frames = encode(event, job_id=job_id)
            except (ProtocolError, TypeError, ValueError) as exc:
                if terminal:
                    raise
                print(f"dreamstill worker: dropped a {type(event).__name__} that cannot travel: {exc}", flush=True)
                continue
            sock.send_multipart(frames, copy=False)
            if terminal:
                return event
        return None
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


def _final_event(event, out_dir: Path):
    """Done with its files recorded in the manifest and named relative to the job folder; a disk-full failure
    under its own code."""
    from dreamstill.protocol import Done, Failed

    from .store import write_manifest

    if isinstance(event, Failed) and event.code != "disk_full" and is_disk_full(event.message):
        return Failed("disk_full", f"the server's disk is full: {event.message}")
    if not isinstance(event, Done):
        return event
    try:
        names = write_manifest(out_dir, [str(f) for f in event.files], event.seconds)
    except OSError as err:
        code = "disk_full" if is_disk_full(str(err)) else "unwritable_output"
        return Failed(code, f"the results could not be recorded in the job's folder: {err.strerror}")
    return Done(files=names, seconds=event.seconds, metrics=event.metrics)


class WorkerHandle:
    """The server's side of one worker process: start, hand it a job, cancel, notice death, kill.

    Starting may raise OSError (EAGAIN, ENOMEM, EMFILE at spawn); the supervisor retries with backoff."""

    _count = 0

    def __init__(
        self,
        ctx,
        runner,
        ipc_dir: str | None,
        device: str = "auto",
        threads: int = 0,
        workdir: str | None = None,
    ):
        import multiprocessing

        import zmq

        mp = multiprocessing.get_context("spawn")
        WorkerHandle._count += 1
        self.device = device
        self.cancel_seq = mp.RawValue("q", 0)
        self.sock = ctx.socket(zmq.PAIR)
        self.sock.setsockopt(zmq.LINGER, 0)
        try:
            if ipc_dir is not None:
                self.endpoint = f"ipc://{ipc_dir}/worker-{WorkerHandle._count}"
                self.sock.bind(self.endpoint)
            else:
                self.sock.bind("tcp://127.0.0.1:*")
                self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
            self.proc = mp.Process(
                target=worker_main,
                args=(self.endpoint, runner, self.cancel_seq, device, threads, workdir),
                name=f"dreamstill-worker-{device}",
                daemon=True,
            )
            self.proc.start()
        except BaseException:
            self.sock.close(0)
            raise
        self.started = time.monotonic()
        self.ready = False
        self.load_error: str | None = None
        self.pid: int | None = self.proc.pid
        self.job_id: str | None = None
        self.retiring = False  # said it will exit (after a fatal error): give it no more jobs
        self.draining: str | None = None  # a job the server ended that the worker has not stopped yet
        self.draining_since = 0.0

    @property
    def idle(self) -> bool:
        return self.ready and not self.retiring and self.job_id is None and self.draining is None

    def run(self, job_id: str, seq: int, spec_dict: dict, out_dir: Path, resume: bool = False) -> bool:
        """Hand one job to the (ready, idle) worker; False when it cannot take it (then treat it as dead)."""
        import zmq

        self.job_id = job_id
        header = {"type": "_run", "job": job_id, "seq": seq, "spec": spec_dict, "out_dir": str(out_dir)}
        try:
            _send_json(self.sock, {**header, "resume": resume}, zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def cancel(self, seq: int) -> None:
        self.cancel_seq.value = seq

    def alive(self) -> bool:
        return self.proc.is_alive()

    def exit_description(self) -> str:
        code = self.proc.exitcode
        if code is None:
            return "is still running"
        if code < 0:
            import signal

            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            hint = " (the system may have run out of memory)" if -code == 9 else ""
            return f"was killed by {name}{hint}"
        return f"exited with code {code}"

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the worker to exit after its current step; kill it when it does not within ``timeout_s``."""
        if self.proc.is_alive():
            self.cancel_seq.value = STOP_ALL
            try:
                import zmq

                _send_json(self.sock, {"type": "_stop"}, zmq.NOBLOCK)
            except Exception:
                pass
            self.proc.join(timeout_s)
        self.kill()
        self.close()

    def close(self) -> None:
        self.sock.close(0)
        if self.endpoint.startswith("ipc://"):
            try:
                os.unlink(self.endpoint[len("ipc://") :])
            except OSError:
                pass
