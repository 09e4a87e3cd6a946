"""A backend process started by this add-on (``dreamstill serve`` from the preferences' command): start, stop, and
notice when it exited, with the tail of its log for the panel. Quitting Blender stops it (atexit)."""

from __future__ import annotations

import atexit
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .clients import drop_client
from .preferences import output_dir


@dataclass
class Backend:
    process: subprocess.Popen
    address: str
    log_path: Path

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""


_current: Backend | None = None
_atexit_registered = False


def current() -> Backend | None:
    """The backend this add-on started (running or exited but not yet noticed), else None."""
    return _current


def forget() -> None:
    """Stop tracking the backend (it exited and that was reported)."""
    global _current
    _current = None


def start_backend(address: str, command: str) -> Backend:
    """Start ``command`` (``{address}`` is replaced by the address) with its output in a log file; the running one
    when there is one already."""
    global _current, _atexit_registered
    if _current is not None and _current.process.poll() is None:
        return _current
    argv = shlex.split(command.replace("{address}", address), posix=os.name != "nt")
    if not argv:
        raise ValueError(
            "the start-backend command in the Dreamstill preferences is empty; e.g. dreamstill serve --bind {address}"
        )
    log_path = output_dir() / "backend.log"
    log = open(log_path, "ab")
    try:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    except OSError as err:
        raise OSError(
            f"could not start the backend with {argv[0]!r}: {err}; set the command in the Dreamstill "
            "preferences (e.g. the full path to `dreamstill`)"
        ) from None
    finally:
        log.close()
    _current = Backend(process, address, log_path)
    if not _atexit_registered:  # quitting Blender must not leave a GPU process behind
        atexit.register(stop_backend)
        _atexit_registered = True
    return _current


def stop_backend(timeout_s: float = 10.0) -> bool:
    """Stop the backend this add-on started (terminate, then kill); False when there was none."""
    backend = _current
    forget()
    if backend is None:
        return False
    drop_client(backend.address)
    if backend.process.poll() is None:
        backend.process.terminate()
        try:
            backend.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            backend.process.kill()
            backend.process.wait(timeout_s)
    return True


def exit_message() -> tuple[str, str] | None:
    """(address, message) once when the backend this add-on started has exited, else None."""
    backend = _current
    if backend is None or backend.process.poll() is None:
        return None
    forget()
    tail = backend.log_tail()
    return backend.address, (
        f"the backend this add-on started exited (code {backend.process.returncode}); "
        f"log {backend.log_path}" + (f": {tail}" if tail else "")
    )
