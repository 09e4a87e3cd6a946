"""The GPU worker: a separate process that owns the GPU and runs one job at a time.

The server starts it with multiprocessing's *spawn* context (a fresh interpreter: no CUDA state inherited from the
server, and torch is imported only here). Server and worker talk over one ZeroMQ PAIR socket on a private ipc://
path (tcp loopback where ipc is missing), using the protocol's own wire format, so nothing is pickled at run time:

    server -> worker   {"type": "_run", "job", "seq", "spec", "out_dir", "resume"} | {"type": "_stop"}
    worker -> server   {"type": "_ready", "pid", "error"} then, per job, the encoded protocol events

Cancel is a shared 64-bit integer: the server writes the running task's ``seq`` into it and the runner's cancel
callback compares it with its own, so a late cancel can never hit the next job. If the server process disappears,
the cancel callback returns True too, so an orphaned worker stops within a step and exits.

An exception in the runner becomes ``Failed`` with a code (``out_of_memory``, ``cuda_error``, ``internal_error``);
after an out-of-memory or CUDA error the worker exits, so the server starts a fresh process with a clean GPU.
"""

from __future__ import annotations

import importlib
import json
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path

DEFAULT_RUNNER = "dreamstill.backend.engine:run_job"
STOP_ALL = -1  # cancel_seq value that cancels whatever job is running (server shutdown)


def resolve_runner(runner: str | Callable) -> Callable:
    """A runner given as ``"module:function"`` (imported here, in the worker) or as a callable."""
    if callable(runner):
        return runner
    module, _, name = str(runner).partition(":")
    if not module or not name:
        raise ValueError(f"runner {runner!r} must look like 'package.module:function'")
    return getattr(importlib.import_module(module), name)


def classify(exc: BaseException, out_dir: Path) -> tuple[str, str, bool]:
    """(code, message for a person, fatal) for an exception that escaped the runner. Fatal = restart the worker."""
    text = f"{exc.__class__.__name__}: {str(exc)[:500]}"
    lowered = text.lower()
    if isinstance(exc, MemoryError) or "outofmemory" in lowered or "out of memory" in lowered:
        return (
            "out_of_memory",
            f"the worker ran out of memory ({text}); lower resolution, batch_size, "
            "mesh_resolution or texture_size, or close other programs using the GPU. The worker was restarted "
            "to release the memory.",
            True,
        )
    if "cuda" in lowered or "cudnn" in lowered or "device-side assert" in lowered:
        return (
            "cuda_error",
            f"a CUDA error stopped the job ({text}); the worker was restarted with a fresh GPU "
            "context. If it repeats, update the GPU driver or run the server with CUDA_LAUNCH_BLOCKING=1 to "
            f"find the failing step (traceback in {out_dir / 'error.log'}).",
            True,
        )
    return ("internal_error", f"the job runner raised {text}; traceback in {out_dir / 'error.log'}", False)


def _send_json(sock, header: dict, flags: int = 0) -> None:
    sock.send(json.dumps(header).encode("utf-8"), flags)


def worker_main(endpoint: str, runner, cancel_seq) -> None:
    """Entry point of the worker process (a spawn target: module-level, plain arguments)."""
    import multiprocessing
    import signal

    import zmq

    from dreamstill.protocol import Failed, JobSpec

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the server's terminal: the server stops us in order
    from dreamstill.protocol.messages import EVENT_TYPES, TERMINAL, encode
    from dreamstill.protocol.wire import ProtocolError

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    sock.setsockopt(zmq.LINGER, 5000)  # let the last (possibly large) event leave before exiting
    sock.setsockopt(zmq.SNDTIMEO, 60_000)  # a server gone for a minute: give up instead of blocking forever
    sock.connect(endpoint)
    parent = multiprocessing.parent_process()
    parent_pid = os.getppid()

    def parent_gone() -> bool:
        return (parent is not None and not parent.is_alive()) or os.getppid() != parent_pid

    try:
        fn, load_error = resolve_runner(runner), None
    except Exception as exc:  # report, then fail each job with the reason instead of dying in a restart loop
        fn, load_error = None, f"could not load the job runner {runner!r}: {exc.__class__.__name__}: {exc}"
    _send_json(sock, {"type": "_ready", "pid": os.getpid(), "error": load_error})

    try:
        while True:
            if not sock.poll(1000):
                if parent_gone():
                    return
                continue
            header = json.loads(sock.recv())
            if header.get("type") == "_stop":
                return
            if header.get("type") != "_run":
                continue
            job_id, seq = header["job"], int(header["seq"])
            out_dir = Path(header["out_dir"])
            if fn is None:
                sock.send_multipart(encode(Failed("worker_broken", load_error), job_id=job_id), copy=False)
                continue
            last_check = [time.monotonic()]

            def cancel(seq=seq) -> bool:
                if cancel_seq.value in (seq, STOP_ALL):
                    return True
                now = time.monotonic()
                if now - last_check[0] > 1.0:
                    last_check[0] = now
                    return parent_gone()
                return False

            fatal = False
            try:
                spec = JobSpec.from_dict(header["spec"])
                events = fn(spec, out_dir, cancel=cancel, resume=bool(header.get("resume")))
                terminal = None
                try:
                    for event in events:
                        if type(event) not in EVENT_TYPES:
                            continue
                        try:
                            frames = encode(event, job_id=job_id)
                        except (ProtocolError, TypeError, ValueError) as exc:
                            if EVENT_TYPES[type(event)] in TERMINAL:
                                raise
                            print(
                                f"dreamstill worker: dropped a {type(event).__name__} that cannot travel: {exc}",
                                flush=True,
                            )
                            continue
                        sock.send_multipart(frames, copy=False)
                        if EVENT_TYPES[type(event)] in TERMINAL:
                            terminal = event
                            break
                finally:
                    close = getattr(events, "close", None)
                    if close is not None:
                        close()
                if terminal is None:
                    failed = Failed(
                        "internal_error",
                        "the job runner stopped without a done, failed or cancelled event; this is a bug in the engine",
                    )
                    sock.send_multipart(encode(failed, job_id=job_id), copy=False)
            except Exception as exc:
                code, message, fatal = classify(exc, out_dir)
                try:
                    out_dir.mkdir(parents=True, exist_ok=True)
                    (out_dir / "error.log").write_text(traceback.format_exc())
                except OSError:
                    pass
                if fatal:  # tell the server first, so it hands the next job to a fresh worker instead
                    _send_json(sock, {"type": "_exiting", "reason": code})
                sock.send_multipart(encode(Failed(code, message), job_id=job_id), copy=False)
            if fatal:
                return
    finally:
        sock.close()
        ctx.term()


class WorkerHandle:
    """The server's side of one worker process: start, hand it a job, cancel, notice death, kill."""

    _count = 0

    def __init__(self, ctx, runner, ipc_dir: str | None):
        import multiprocessing

        import zmq

        mp = multiprocessing.get_context("spawn")
        WorkerHandle._count += 1
        self.cancel_seq = mp.RawValue("q", 0)
        self.sock = ctx.socket(zmq.PAIR)
        self.sock.setsockopt(zmq.LINGER, 0)
        if ipc_dir is not None:
            self.endpoint = f"ipc://{ipc_dir}/worker-{os.getpid()}-{WorkerHandle._count}"
            self.sock.bind(self.endpoint)
        else:
            self.sock.bind("tcp://127.0.0.1:*")
            self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.proc = mp.Process(
            target=worker_main, args=(self.endpoint, runner, self.cancel_seq), name="dreamstill-worker", daemon=True
        )
        self.proc.start()
        self.started = time.monotonic()
        self.ready = False
        self.load_error: str | None = None
        self.pid: int | None = self.proc.pid
        self.job_id: str | None = None
        self.retiring = False  # said it will exit (after a fatal error): give it no more jobs

    def run(self, job_id: str, seq: int, spec_dict: dict, out_dir: Path, resume: bool = False) -> bool:
        """Hand one job to the (ready, idle) worker; False when it cannot take it (then treat it as dead)."""
        import zmq

        self.job_id = job_id
        try:
            _send_json(
                self.sock,
                {
                    "type": "_run",
                    "job": job_id,
                    "seq": seq,
                    "spec": spec_dict,
                    "out_dir": str(out_dir),
                    "resume": resume,
                },
                zmq.NOBLOCK,
            )
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
