"""Following jobs: the pump that receives their events, applying them to the scene, the timer and the blocking wait.

Everything here runs on Blender's main thread. With a window, a ``bpy.app.timers`` callback (:func:`timer_tick`)
calls :func:`pump` every 0.1 s; ``Client.poll()`` never blocks and hands over only the newest progress, preview and
mesh of each job, so the viewport always shows the latest state however slow the updates are to apply. Without a
window (``blender -b`` or the bpy module) timers never fire, so operators call :func:`wait`, which drives the same
:func:`pump` through the client's blocking ``pump(seconds)`` and, for a script, prints a progress line now and then
(step/total, phase, time left) and the job's end with its warnings.

Faults end up in the queue item and the panel's status line: a backend that does not answer (``ServerUnavailable``
from the client's heartbeat), or a backend process this add-on started that exited.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import bpy

from . import backend_process, clients, live, painting, reporting
from .proto import client_api, protocol

TIMER_INTERVAL_S = 0.1
ECHO_INTERVAL_S = 5.0  # blocking mode prints a progress line at most this often (and at every phase change)


@dataclass
class LiveJob:
    job_id: str
    address: str
    scene: str
    echo: bool = False  # print progress lines (blocking mode)
    echoed_at: float = float("-inf")
    echoed_phase: str | None = None


JOBS: dict[str, LiveJob] = {}


def settings_of(scene_name: str):
    scene = bpy.data.scenes.get(scene_name)
    return None if scene is None else scene.dreamstill


def follow(job_id: str, address: str, scene) -> None:
    JOBS[job_id] = LiveJob(job_id, address, scene.name)
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


def finish(job: LiveJob, item, state: str, message: str, error: bool = False, details=()) -> None:
    """End a followed job: its queue item, its object's properties, the panel's status, and in blocking mode a line
    (and one per detail) on the console."""
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
    if job.echo:
        for line in (message, *details):
            print(f"Dreamstill [{item.prompt}] {line}", flush=True)
    JOBS.pop(job.job_id, None)


def _apply_progress(job: LiveJob, item, progress) -> None:
    item.step, item.total, item.loss = progress.step, progress.total, progress.loss
    item.eta_s, item.elapsed_s = progress.eta_s, progress.elapsed_s
    item.phase = reporting.phase_of(progress)
    if not job.echo:
        return
    now = time.monotonic()
    if item.phase != job.echoed_phase or item.step >= item.total or now - job.echoed_at >= ECHO_INTERVAL_S:
        print(
            reporting.progress_line(item.prompt, item.step, item.total, item.loss, item.eta_s, item.phase), flush=True
        )
        job.echoed_at, job.echoed_phase = now, item.phase


def _apply_end(job: LiveJob, item, obj, end) -> None:
    if isinstance(end, protocol.Done):
        warnings = reporting.warnings_of(end.metrics)
        item.warnings = "\n".join(warnings)
        if obj is not None:
            obj["dreamstill_spec"] = item.spec_json
            obj["dreamstill_job_id"] = item.job_id
            obj["dreamstill_files"] = [str(f) for f in end.files]
            obj["dreamstill_warnings"] = warnings
        item.step = item.total = max(item.total, item.step)
        item.phase = ""
        text = reporting.done_line(item.prompt, end.seconds, warnings)
        finish(job, item, "DONE", text, details=[f"warning: {w}" for w in warnings])
    elif isinstance(end, protocol.Failed):
        finish(job, item, "FAILED", f"Failed: {end.message} [{end.code}]", error=True)
    elif isinstance(end, protocol.Cancelled):
        finish(job, item, "CANCELLED", f"Cancelled at step {end.step}")


def apply_events(job: LiveJob, events: list) -> None:
    """Apply one job's events: only the newest progress, preview and mesh, then its end if it came."""
    settings = settings_of(job.scene)
    item = None if settings is None else settings.find_job(job.job_id)
    if item is None:  # the scene or its queue entry is gone: stop following
        JOBS.pop(job.job_id, None)
        return
    newest, end = protocol.split_newest(events)  # the protocol's one newest-event policy
    progress = newest.get("progress")
    if progress is not None:
        _apply_progress(job, item, progress)
    preview = newest.get("preview")
    mesh = newest.get("mesh")
    obj = asset_object(item)
    try:
        if preview is not None and settings.active_job == job.job_id:
            image = settings.preview_image = live.set_image(settings.preview_image, "Dreamstill Preview", preview.rgba)
            image.preview_ensure().reload()  # the panel's thumbnail (draw() must not create it)
        if mesh is not None and obj is not None and item.texture_only:
            painting.apply_texture(obj, mesh)  # the artist's own object: a new material, its geometry untouched
        elif mesh is not None and obj is not None:
            live.apply_update(obj, mesh)
    except (ValueError, TypeError, RuntimeError) as err:  # a malformed update: stop this job, keep what is there
        finish(
            job, item, "FAILED", f"Failed: the add-on could not apply an update from the backend ({err})", error=True
        )
        return
    if end is not None:
        _apply_end(job, item, obj, end)


def fail_address(address: str, message: str) -> None:
    """Mark every followed job of ``address`` failed (the backend is gone) and drop its client."""
    for job in [j for j in JOBS.values() if j.address == address]:
        settings = settings_of(job.scene)
        item = None if settings is None else settings.find_job(job.job_id)
        if item is None:
            JOBS.pop(job.job_id, None)
        else:
            finish(job, item, "FAILED", message, error=True)
    clients.drop_client(address)


def pump(wait_s: float = 0.0) -> int:
    """Receive and apply what arrived for the followed jobs; wait up to ``wait_s`` for it. Jobs left."""
    died = backend_process.exit_message()
    if died is not None:
        fail_address(*died)
    api = client_api()
    addresses = {job.address for job in JOBS.values()}
    for address in sorted(addresses):
        try:
            client = clients.client_for(address)
            arrived = client.pump(wait_s) if wait_s > 0 else client.poll()
        except api.ServerUnavailable as err:
            fail_address(address, f"Backend stopped answering: {err}")
            continue
        wait_s = 0.0  # waited once already
        per_job: dict[str, list] = {}
        for job_id, event in arrived:
            per_job.setdefault(job_id, []).append(event)
        for job_id, events in per_job.items():
            job = JOBS.get(job_id)
            if job is not None:
                apply_events(job, events)
    if addresses:
        live.redraw()
    return len(JOBS)


def wait(job_ids=None, timeout_s: float | None = None, echo: bool = False) -> None:
    """Blocking pump (background mode and scripts) until the given jobs (default: all followed) have ended; with
    ``echo`` their progress is printed as it arrives."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    for job_id in JOBS if job_ids is None else job_ids:
        if echo and job_id in JOBS:
            JOBS[job_id].echo = True
    while True:
        pending = [j for j in (JOBS if job_ids is None else job_ids) if j in JOBS]
        if not pending:
            return
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(
                f"{len(pending)} Dreamstill job(s) still running after {timeout_s:g}s; they keep "
                "running on the backend (wait again or cancel them)"
            )
        pump(0.2)


def forget_all() -> None:
    """Stop following every job (the queue in the .blend keeps them)."""
    JOBS.clear()


# ---------------------------------------------------------------------------------------------- timer
def timer_tick():
    """The main-thread timer: pump without blocking; stops itself when nothing is followed."""
    try:
        left = pump(0.0)
    except Exception as err:  # a timer that raises is unregistered by Blender: report and keep going
        print(f"Dreamstill: {err!r}")
        left = len(JOBS)
    return TIMER_INTERVAL_S if left else None


def ensure_timer() -> None:
    if not bpy.app.background and not bpy.app.timers.is_registered(timer_tick):
        bpy.app.timers.register(timer_tick, first_interval=TIMER_INTERVAL_S, persistent=True)


def stop_timer() -> None:
    if bpy.app.timers.is_registered(timer_tick):
        bpy.app.timers.unregister(timer_tick)
