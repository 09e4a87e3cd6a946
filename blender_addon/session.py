"""The add-on's live state: one client per backend address, the jobs being followed, the pump and its timer.

Everything here runs on Blender's main thread. With a window, a ``bpy.app.timers`` callback (:func:`timer_tick`)
calls :func:`pump` every 0.1 s; ``Client.poll()`` never blocks and hands over only the newest progress, preview and
mesh of each job, so the viewport always shows the latest state however slow the updates are to apply. Without a
window (``blender -b`` or the bpy module) timers never fire, so operators call :func:`wait`, which drives the same
:func:`pump` through the client's blocking ``pump(seconds)``.

What is saved with the .blend is the queue (``scene.dreamstill.queue``); what lives only here is rebuilt from it on
load (:func:`resume`). Faults end up in the queue item and the panel's status line: a backend that does not answer
(``ServerUnavailable`` from the client's heartbeat), or a backend process this add-on started that exited.
"""

from __future__ import annotations

import atexit
import json
import os
import shlex
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import bpy

from . import live
from .proto import DEFAULT_ADDRESS, JobSpec, client_api, protocol
from .proto import is_loopback as is_local

TIMER_INTERVAL_S = 0.1


@dataclass
class LiveJob:
    job_id: str
    address: str
    scene: str


@dataclass
class Backend:
    """A backend process started by this add-on."""

    process: subprocess.Popen
    address: str
    log_path: Path
    command: list = field(default_factory=list)

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""


class _State:
    def __init__(self):
        self.clients: dict = {}
        self.jobs: dict[str, LiveJob] = {}
        self.backend: Backend | None = None
        self.atexit_registered = False


STATE = _State()


# ---------------------------------------------------------------------------------------------- preferences
def prefs():
    """The add-on preferences, or the defaults when the add-on's preferences are not registered."""
    addon = bpy.context.preferences.addons.get(__package__)
    if addon is not None and addon.preferences is not None:
        return addon.preferences
    from types import SimpleNamespace

    return SimpleNamespace(
        address=DEFAULT_ADDRESS,
        keys_dir="",
        backend_command="dreamstill serve --bind {address}",
        output_dir="",
        timeout_s=10.0,
    )


def address_for(server: str) -> str:
    """The address to use: the operator's / panel's ``server`` when set, else the preferences'."""
    address = client_api().check_address((server or "").strip() or (prefs().address or "").strip() or DEFAULT_ADDRESS)
    if not bpy.app.online_access and not is_local(address):
        raise ValueError(
            f"{address} is on another machine and Blender's online access is off: allow it in "
            "Preferences > System > Network, or run the backend on this machine"
        )
    return address


def output_dir() -> Path:
    """Where results are fetched to: the preferences' folder (``//`` = next to the .blend) or a temp folder."""
    folder = (prefs().output_dir or "").strip()
    if folder.startswith("//") and not bpy.data.filepath:
        folder = ""
    path = Path(bpy.path.abspath(folder)) if folder else Path(tempfile.gettempdir()) / "dreamstill"
    path.mkdir(parents=True, exist_ok=True)
    return path


def client_for(address: str):
    """The client for ``address`` (made once; CURVE keys from the preferences' keys folder when set)."""
    client = STATE.clients.get(address)
    if client is not None and not client.closed:
        return client
    api = client_api()
    p = prefs()
    kwargs = {}
    if (p.keys_dir or "").strip():
        kwargs = api.load_client_keys(bpy.path.abspath(p.keys_dir.strip()))
    client = api.Client(address, timeout_s=float(p.timeout_s), **kwargs)
    STATE.clients[address] = client
    return client


def drop_client(address: str) -> None:
    client = STATE.clients.pop(address, None)
    if client is not None:
        client.close()


def close_all() -> None:
    """Close every socket and forget the followed jobs (the queue in the .blend keeps them)."""
    for address in list(STATE.clients):
        drop_client(address)
    STATE.jobs.clear()


# ---------------------------------------------------------------------------------------------- jobs
def settings_of(scene_name: str):
    scene = bpy.data.scenes.get(scene_name)
    return None if scene is None else scene.dreamstill


def follow(job_id: str, address: str, scene) -> None:
    STATE.jobs[job_id] = LiveJob(job_id, address, scene.name)
    ensure_timer()


def asset_object(item):
    """The object of a queue item, by name, else by the job id stored on it."""
    obj = bpy.data.objects.get(item.object_name)
    if obj is not None and obj.get("dreamstill_job_id", item.job_id) == item.job_id:
        return obj
    for obj in bpy.data.objects:
        if item.job_id and obj.get("dreamstill_job_id") == item.job_id:
            item.object_name = obj.name
            return obj
    return None


def _finish(job: LiveJob, item, state: str, message: str, error: bool = False) -> None:
    settings = settings_of(job.scene)
    item.state = state
    item.message = message
    obj = asset_object(item)
    if obj is not None:
        obj["dreamstill_state"] = state.lower()
        if message:
            obj["dreamstill_message"] = message
    if settings is not None and (settings.active_job == job.job_id or error):
        settings.set_status(message, error)
    STATE.jobs.pop(job.job_id, None)


def apply_events(job: LiveJob, events: list) -> None:
    """Apply one job's events: only the newest progress, preview and mesh, then its end if it came."""
    settings = settings_of(job.scene)
    item = None if settings is None else settings.find_job(job.job_id)
    if item is None:  # the scene or its queue entry is gone: stop following
        STATE.jobs.pop(job.job_id, None)
        return
    newest = {}
    end = None
    for event in events:
        if isinstance(event, (protocol.Done, protocol.Failed, protocol.Cancelled)):
            end = event
        else:
            newest[type(event)] = event
    progress = newest.get(protocol.Progress)
    if progress is not None:
        item.step, item.total, item.loss = progress.step, progress.total, progress.loss
        item.eta_s, item.elapsed_s = progress.eta_s, progress.elapsed_s
    preview = newest.get(protocol.Preview)
    mesh = newest.get(protocol.MeshUpdate)
    obj = asset_object(item)
    try:
        if preview is not None and settings.active_job == job.job_id:
            image = settings.preview_image = live.set_image(settings.preview_image, "Dreamstill Preview", preview.rgba)
            image.preview_ensure().reload()  # the panel's thumbnail (draw() must not create it)
        if mesh is not None and obj is not None:
            live.apply_update(obj, mesh)
    except (ValueError, TypeError, RuntimeError) as err:  # a malformed update: stop this job, keep what is there
        _finish(
            job, item, "FAILED", f"Failed: the add-on could not apply an update from the backend ({err})", error=True
        )
        return
    if isinstance(end, protocol.Done):
        if obj is not None:
            obj["dreamstill_spec"] = item.spec_json
            obj["dreamstill_job_id"] = item.job_id
            obj["dreamstill_files"] = [str(f) for f in end.files]
        item.step = item.total = max(item.total, item.step)
        _finish(job, item, "DONE", f"Done: {item.prompt} ({end.seconds:.1f} s)")
    elif isinstance(end, protocol.Failed):
        _finish(job, item, "FAILED", f"Failed: {end.message} [{end.code}]", error=True)
    elif isinstance(end, protocol.Cancelled):
        _finish(job, item, "CANCELLED", f"Cancelled at step {end.step}")


def fail_address(address: str, message: str) -> None:
    """Mark every followed job of ``address`` failed (the backend is gone) and drop its client."""
    for job in [j for j in STATE.jobs.values() if j.address == address]:
        settings = settings_of(job.scene)
        item = None if settings is None else settings.find_job(job.job_id)
        if item is None:
            STATE.jobs.pop(job.job_id, None)
        else:
            _finish(job, item, "FAILED", message, error=True)
    drop_client(address)


def _backend_exit_message() -> tuple[str, str] | None:
    """(address, message) when the backend this add-on started has exited, else None."""
    backend = STATE.backend
    if backend is None or backend.process.poll() is None:
        return None
    STATE.backend = None
    tail = backend.log_tail()
    return backend.address, (
        f"the backend this add-on started exited (code {backend.process.returncode}); "
        f"log {backend.log_path}" + (f": {tail}" if tail else "")
    )


def pump(wait_s: float = 0.0) -> int:
    """Receive and apply what arrived for the followed jobs; wait up to ``wait_s`` for it. Jobs left."""
    died = _backend_exit_message()
    if died is not None:
        fail_address(*died)
    api = client_api()
    addresses = {job.address for job in STATE.jobs.values()}
    for address in sorted(addresses):
        try:
            client = client_for(address)
            arrived = client.pump(wait_s) if wait_s > 0 else client.poll()
        except api.ServerUnavailable as err:
            fail_address(address, f"Backend stopped answering: {err}")
            continue
        wait_s = 0.0  # waited once already
        per_job: dict[str, list] = {}
        for job_id, event in arrived:
            per_job.setdefault(job_id, []).append(event)
        for job_id, events in per_job.items():
            job = STATE.jobs.get(job_id)
            if job is not None:
                apply_events(job, events)
    if addresses:
        live.redraw()
    return len(STATE.jobs)


def wait(job_ids=None, timeout_s: float | None = None) -> None:
    """Blocking pump (background mode and scripts) until the given jobs (default: all followed) have ended."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        pending = [j for j in (STATE.jobs if job_ids is None else job_ids) if j in STATE.jobs]
        if not pending:
            return
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(
                f"{len(pending)} Dreamstill job(s) still running after {timeout_s:g}s; they keep "
                "running on the backend (wait again or cancel them)"
            )
        pump(0.2)


# ---------------------------------------------------------------------------------------------- timer
def timer_tick():
    """The main-thread timer: pump without blocking; stops itself when nothing is followed."""
    try:
        left = pump(0.0)
    except Exception as err:  # a timer that raises is unregistered by Blender: report and keep going
        print(f"Dreamstill: {err!r}")
        left = len(STATE.jobs)
    return TIMER_INTERVAL_S if left else None


def ensure_timer() -> None:
    if not bpy.app.background and not bpy.app.timers.is_registered(timer_tick):
        bpy.app.timers.register(timer_tick, first_interval=TIMER_INTERVAL_S, persistent=True)


def stop_timer() -> None:
    if bpy.app.timers.is_registered(timer_tick):
        bpy.app.timers.unregister(timer_tick)


# ---------------------------------------------------------------------------------------------- submit / resume
def submit_item(scene, item) -> str:
    """Send a queue item's JobSpec; its job id. ServerUnavailable / JobSpecError / ServerError propagate."""
    spec = JobSpec.from_json(item.spec_json)
    job_id = client_for(item.address).submit(spec)
    item.job_id = job_id
    item.state = "SUBMITTED"
    item.message = ""
    obj = asset_object(item)
    if obj is not None:
        obj["dreamstill_job_id"] = job_id
        obj["dreamstill_spec"] = item.spec_json
        obj["dreamstill_state"] = "submitted"
    follow(job_id, item.address, scene)
    return job_id


def ensure_object(scene, item):
    obj = asset_object(item)
    if obj is None:
        coll = live.child_collection(scene, item.batch) if item.batch else live.root_collection(scene)
        name = _object_name(item.prompt)
        obj = live.new_asset_object(name, item.location, coll)
        item.object_name = obj.name
        if item.job_id:
            obj["dreamstill_job_id"] = item.job_id
    return obj


def _object_name(prompt: str) -> str:
    words = "_".join(prompt.split()[:4]) or "asset"
    return f"DS_{words}"[:56]


def resume(scenes=None) -> list[str]:
    """Follow again every unfinished queue item (after loading a .blend): attach to submitted jobs, send pending
    ones. Returns messages about items that could not be resumed (they stay in the queue for a later try)."""
    api = client_api()
    problems = []
    down: dict[str, str] = {}  # address -> why; each address is tried once, so a dead backend costs one timeout
    for scene in scenes if scenes is not None else bpy.data.scenes:
        for item in scene.dreamstill.queue:
            if item.state not in ("PENDING", "SUBMITTED") or item.job_id in STATE.jobs:
                continue
            if item.address in down:
                item.message = down[item.address]
                continue
            try:
                client_for(item.address).ping()
                ensure_object(scene, item)
                if item.state == "SUBMITTED" and item.job_id:
                    try:
                        client_for(item.address).attach(item.job_id)
                        follow(item.job_id, item.address, scene)
                        continue
                    except api.ServerError as err:
                        if err.code != "unknown_job":
                            raise
                        item.message = "resubmitted: the backend did not know the job (a fresh job store)"
                submit_item(scene, item)
            except api.ServerUnavailable as err:
                item.message = down[item.address] = f"not resumed (press Resume once the backend runs): {err}"
                drop_client(item.address)
                problems.append(item.message)
            except (ValueError, OSError, api.ServerError) as err:
                item.state, item.message = "FAILED", f"not resumed: {err}"
                problems.append(item.message)
    return problems


# ---------------------------------------------------------------------------------------------- local backend
def start_backend(address: str, command: str) -> Backend:
    """Start ``command`` (``{address}`` is replaced by the address) with its output in a log file."""
    if STATE.backend is not None and STATE.backend.process.poll() is None:
        return STATE.backend
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
    STATE.backend = Backend(process, address, log_path, argv)
    if not STATE.atexit_registered:  # quitting Blender must not leave a GPU process behind
        atexit.register(stop_backend)
        STATE.atexit_registered = True
    return STATE.backend


def stop_backend(timeout_s: float = 10.0) -> bool:
    backend, STATE.backend = STATE.backend, None
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


def spec_json(spec: JobSpec) -> str:
    return json.dumps(spec.to_dict(), sort_keys=True)
