"""Operators under ``bpy.ops.dreamstill``: connect, start_backend, stop_backend, generate, batch, cancel, wait,
import_result, use_spec, resume.

Job operators take every JobSpec setting as an operator property (unset ones come from the scene's panel settings)
plus ``server``, so scripts drive the add-on without the panel::

    bpy.ops.dreamstill.generate(prompt="a red cube", steps=200, server="tcp://127.0.0.1:5555")

With a window they return at once and a main-thread timer streams the results in. In background mode (``blender -b``,
the bpy module) timers never fire, so by default they block in the client's pump until the jobs end
(``wait=False`` returns at once; then ``bpy.ops.dreamstill.wait()`` pumps).
"""

from __future__ import annotations

import time
from pathlib import Path

import bpy
from bpy.props import BoolProperty, FloatProperty, StringProperty
from bpy.types import Operator
from mathutils import Matrix

from . import backend_process, batch, clients, follow, job_queue, live, panel_props, preferences
from .properties import job_annotations, job_values, load_spec_into, spec_from
from .proto import JobSpec, JobSpecError, client_api, protocol


def _fail(op, settings, text: str):
    if settings is not None:
        settings.set_status(text, error=True)
    op.report({"ERROR"}, text)
    return {"CANCELLED"}


def _blocking(op) -> bool:
    return bpy.app.background and op.wait


def _wait(op, settings, job_ids):
    """Block until ``job_ids`` end, printing their progress (a script's only sign of life)."""
    try:
        follow.wait(job_ids, timeout_s=op.timeout if op.timeout > 0 else None, echo=True)
    except TimeoutError as err:
        return _fail(op, settings, str(err))
    items = [settings.find_job(j) for j in job_ids]
    bad = [i for i in items if i is not None and i.state != "DONE"]
    for item in bad:
        op.report({"WARNING"} if item.state == "CANCELLED" else {"ERROR"}, f"{item.prompt}: {item.message}")
    return {"FINISHED"}


_WAIT_PROPS = {
    "wait": BoolProperty(
        name="Wait",
        default=True,
        options={"SKIP_SAVE"},
        description="In background mode, block until the job(s) end (timers never fire there)",
    ),
    "timeout": FloatProperty(
        name="Timeout",
        default=0.0,
        min=0.0,
        options={"SKIP_SAVE"},
        description="Give up waiting after this many seconds (0 = no limit)",
    ),
}


class DREAMSTILL_OT_connect(Operator):
    """Check that the Dreamstill backend answers"""

    bl_idname = "dreamstill.connect"
    bl_label = "Connect"
    __annotations__ = {
        "server": StringProperty(
            name="Server", options={"SKIP_SAVE"}, description="Backend address (empty = the panel's / preferences')"
        )
    }

    def execute(self, context):
        settings = context.scene.dreamstill
        try:
            api = client_api()
            address = clients.address_for(self.server or settings.server)
            client = clients.client_for(address)
            saved, client.timeout_s = client.timeout_s, min(client.timeout_s, 3.0)  # a pong is immediate:
            try:  # do not freeze the UI for the whole timeout when nothing listens
                rtt = client.ping()
            finally:
                client.timeout_s = saved
        except ImportError as err:
            return _fail(self, settings, str(err))
        except api.ServerUnavailable as err:  # before OSError: it is a ConnectionError
            clients.drop_client(address)
            return _fail(self, settings, f"Backend not running: {err}")
        except (ValueError, OSError) as err:
            return _fail(self, settings, str(err))
        info = clients.POOL[address].server_info
        text = f"Connected to {address} ({rtt * 1000:.0f} ms, {info.get('queued', 0)} queued)"
        settings.set_status(text)
        self.report({"INFO"}, text)
        return {"FINISHED"}


class DREAMSTILL_OT_start_backend(Operator):
    """Start a local Dreamstill backend with the command from the preferences"""

    bl_idname = "dreamstill.start_backend"
    bl_label = "Start Local Backend"
    __annotations__ = {
        "server": StringProperty(name="Server", options={"SKIP_SAVE"}),
        "command": StringProperty(
            name="Command",
            options={"SKIP_SAVE"},
            description="Command line ({address} = the address); empty = preferences",
        ),
        "wait_s": FloatProperty(
            name="Wait",
            default=60.0,
            min=0.0,
            options={"SKIP_SAVE"},
            description="In background mode, wait this long for the backend to answer",
        ),
    }

    def execute(self, context):
        settings = context.scene.dreamstill
        try:
            address = clients.address_for(self.server or settings.server)
            backend = backend_process.start_backend(address, self.command or preferences.prefs().backend_command)
        except (ImportError, ValueError, OSError) as err:
            return _fail(self, settings, str(err))
        settings.set_status(
            f"Backend starting (pid {backend.process.pid}), log {backend.log_path}; press Connect in a few seconds"
        )
        if bpy.app.background and self.wait_s > 0:
            return self._wait_ready(settings, address, backend)
        return {"FINISHED"}

    def _wait_ready(self, settings, address, backend):
        api = client_api()
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            if backend.process.poll() is not None:
                backend_process.forget()
                return _fail(
                    self, settings, f"the backend exited with code {backend.process.returncode}: {backend.log_tail()}"
                )
            try:
                clients.client_for(address).ping()
                settings.set_status(f"Backend running at {address} (pid {backend.process.pid})")
                return {"FINISHED"}
            except api.ServerUnavailable:
                clients.drop_client(address)
        return _fail(self, settings, f"the backend did not answer within {self.wait_s:g}s; see {backend.log_path}")


class DREAMSTILL_OT_stop_backend(Operator):
    """Stop the backend this add-on started (frees its GPU memory)"""

    bl_idname = "dreamstill.stop_backend"
    bl_label = "Stop Local Backend"

    def execute(self, context):
        stopped = backend_process.stop_backend()
        context.scene.dreamstill.set_status("Backend stopped" if stopped else "No backend was started here")
        return {"FINISHED"}


def _asset_size(op, settings) -> float:
    return op.size if op.properties.is_property_set("size") else settings.asset_size


def _submit(op, context, prompts: list[str], batch_name: str = "", locations=None):
    """Create the queue items and objects for ``prompts`` (at ``locations``, default the 3D cursor) and send them;
    (job ids, error text or None)."""
    settings = context.scene.dreamstill
    values = job_values(op, settings)
    address = clients.address_for(values.server)
    specs = [spec_from(values, prompt=p) for p in prompts]  # all checked before anything is sent
    if specs and specs[0].mode in protocol.MESH_MODES:
        raise ValueError(
            f"Mode {specs[0].mode.capitalize()} works on a mesh: select one and press Texture or Refine (or pick "
            "mode Optimize or Instant to generate from the prompt)"
        )
    locations = locations or [tuple(context.scene.cursor.location)] * len(prompts)
    size = _asset_size(op, settings)
    job_ids = []
    for spec, location in zip(specs, locations):
        item = settings.queue.add()
        item.prompt, item.address, item.batch = spec.prompt, address, batch_name
        item.spec_json = job_queue.spec_json(spec)
        item.location, item.size = location, size
        job_queue.ensure_object(context.scene, item)
    api = client_api()
    for item in list(settings.queue)[len(settings.queue) - len(specs) :]:
        try:
            job_ids.append(job_queue.submit_item(context.scene, item))
        except api.ServerUnavailable as err:
            item.message = "not sent: the backend did not answer"
            return job_ids, f"Backend not running: {err}"
        except (api.ServerError, JobSpecError) as err:
            item.state, item.message = "FAILED", str(err)
            return job_ids, f"The backend refused the job: {err}"
    return job_ids, None


class DREAMSTILL_OT_generate(Operator):
    """Generate a 3D asset from the prompt, standing on the ground at the 3D cursor, updating it live"""

    bl_idname = "dreamstill.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER", "UNDO"}
    __annotations__ = {**job_annotations(), **_WAIT_PROPS, **panel_props.operator_annotations()}

    def execute(self, context):
        settings = context.scene.dreamstill
        prompt = self.prompt if self.properties.is_property_set("prompt") else settings.prompt
        if not prompt.strip():
            return _fail(self, settings, 'Type a prompt first (e.g. "a red cube")')
        try:
            job_ids, error = _submit(self, context, [prompt])
        except (ImportError, ValueError, OSError) as err:  # JobSpecError is a ValueError
            return _fail(self, settings, str(err))
        if error:
            return _fail(self, settings, error)
        settings.active_job = job_ids[0]
        settings.set_status(f"Generating: {prompt}")
        if _blocking(self):
            return _wait(self, settings, job_ids)
        return {"FINISHED"}


class DREAMSTILL_OT_batch(Operator):
    """Generate a list of prompts into a grid of objects, or along the selected curve (the queue is saved with the
    .blend)"""

    bl_idname = "dreamstill.batch"
    bl_label = "Generate Batch"
    bl_options = {"REGISTER", "UNDO"}
    __annotations__ = {
        **job_annotations(),
        **_WAIT_PROPS,
        **panel_props.operator_annotations(batch=True),
        "prompts": StringProperty(
            name="Prompts",
            options={"SKIP_SAVE"},
            description="Prompts separated by ';' or new lines (empty = the panel's source)",
        ),
        "text_name": StringProperty(name="Text", options={"SKIP_SAVE"}, description="Text block, one prompt a line"),
        "filepath": StringProperty(name="File", subtype="FILE_PATH", options={"SKIP_SAVE"}),
        "spacing": FloatProperty(
            name="Spacing", default=0.0, min=0.0, options={"SKIP_SAVE"}, description="Grid spacing (0 = the panel's)"
        ),
    }

    def _prompts(self, settings) -> list[str]:
        if self.prompts or self.text_name or self.filepath:
            block = bpy.data.texts.get(self.text_name) if self.text_name else None
            if self.text_name and block is None:
                raise ValueError(f"no text block named {self.text_name!r}")
            prompts = batch.prompts_from(self.prompts, block, self.filepath)
        else:
            prompts = batch.prompts_from(settings.batch_prompts, settings.batch_text, settings.batch_file)
        if not prompts:
            raise ValueError(
                "The batch has no prompts: type them separated by ';', or pick a text block or a file with one "
                "prompt per line"
            )
        return prompts

    def _curve(self, context, settings):
        """The curve to lay the batch along: the named one, else the selected one when the panel says so."""
        if not self.curve:
            return batch.selected_curve(context) if settings.batch_on_curve else None
        curve = bpy.data.objects.get(self.curve)
        if curve is None or curve.type != "CURVE":
            raise ValueError(f"no curve object named {self.curve!r}; give a curve's name or leave it empty")
        return curve

    def execute(self, context):
        settings = context.scene.dreamstill
        try:
            prompts = self._prompts(settings)
            curve = self._curve(context, settings)
            spacing = self.spacing or settings.batch_spacing
            locations = batch.batch_locations(context, len(prompts), spacing, curve)
            name = batch.batch_name(context.scene)
            job_ids, error = _submit(self, context, prompts, name, locations)
        except (ImportError, ValueError, OSError) as err:
            return _fail(self, settings, str(err))
        if error:
            return _fail(self, settings, error)
        if job_ids:
            settings.active_job = job_ids[0]
        where = f"along {curve.name}" if curve is not None else "in a grid"
        settings.set_status(f"Batch of {len(prompts)} sent to {name}, {where}")
        if _blocking(self):
            return _wait(self, settings, job_ids)
        return {"FINISHED"}


class DREAMSTILL_OT_cancel(Operator):
    """Cancel the running Dreamstill job(s)"""

    bl_idname = "dreamstill.cancel"
    bl_label = "Cancel"
    __annotations__ = {
        "job_id": StringProperty(
            name="Job", options={"SKIP_SAVE"}, description="Job to cancel (empty = every running job of the scene)"
        )
    }

    @classmethod
    def poll(cls, context):
        return any(i.state in {"PENDING", "SUBMITTED"} for i in context.scene.dreamstill.queue)

    def execute(self, context):
        settings = context.scene.dreamstill
        api = client_api()
        items = [
            i
            for i in settings.queue
            if i.state in {"PENDING", "SUBMITTED"} and (not self.job_id or i.job_id == self.job_id)
        ]
        for item in items:
            if item.state == "PENDING" or not item.job_id:
                item.state, item.message = "CANCELLED", "Cancelled before it was sent"
                continue
            try:
                clients.client_for(item.address).cancel(item.job_id)
            except api.ServerUnavailable as err:
                follow.fail_address(item.address, f"Backend stopped answering: {err}")
            except api.ServerError as err:
                item.state, item.message = "FAILED", str(err)
                follow.JOBS.pop(item.job_id, None)
        settings.set_status(f"Cancelling {len(items)} job(s)")
        return {"FINISHED"}


class DREAMSTILL_OT_wait(Operator):
    """Block until the followed Dreamstill jobs end (for scripts and background mode, where timers never fire)"""

    bl_idname = "dreamstill.wait"
    bl_label = "Wait for Jobs"
    __annotations__ = {
        "timeout": FloatProperty(name="Timeout", default=0.0, min=0.0, description="Seconds (0 = no limit)")
    }

    def execute(self, context):
        try:
            follow.wait(None, timeout_s=self.timeout if self.timeout > 0 else None, echo=bpy.app.background)
        except TimeoutError as err:
            return _fail(self, context.scene.dreamstill, str(err))
        return {"FINISHED"}


class DREAMSTILL_OT_resume(Operator):
    """Follow the unfinished jobs of the queue again (done automatically when a .blend is opened)"""

    bl_idname = "dreamstill.resume"
    bl_label = "Resume Queue"
    __annotations__ = dict(_WAIT_PROPS)

    def execute(self, context):
        settings = context.scene.dreamstill
        try:
            problems = job_queue.resume([context.scene])
        except ImportError as err:
            return _fail(self, settings, str(err))
        if problems:
            return _fail(self, settings, problems[0])
        if _blocking(self):
            return _wait(self, settings, [i.job_id for i in settings.queue if i.job_id in follow.JOBS])
        return {"FINISHED"}


def _job_of(context, job_id: str):
    settings = context.scene.dreamstill
    if job_id:
        return settings.find_job(job_id)
    obj = context.active_object
    if obj is not None and obj.get("dreamstill_job_id"):
        return settings.find_job(obj["dreamstill_job_id"])
    return settings.find_job(settings.active_job)


class DREAMSTILL_OT_import_result(Operator):
    """Download a finished job's result file to the output folder and import it"""

    bl_idname = "dreamstill.import_result"
    bl_label = "Import Result File"
    bl_options = {"REGISTER", "UNDO"}
    __annotations__ = {
        "job_id": StringProperty(
            name="Job", options={"SKIP_SAVE"}, description="Job id (empty = the active object's job)"
        )
    }

    def execute(self, context):
        settings = context.scene.dreamstill
        item = _job_of(context, self.job_id)
        if item is None or item.state != "DONE":
            return _fail(self, settings, "Select a finished Dreamstill object (or give job_id) to import its file")
        api = client_api()
        try:
            folder = preferences.output_dir() / item.job_id
            files = clients.client_for(item.address).fetch_result(item.job_id, folder)
        except (api.ServerUnavailable, api.ServerError, OSError) as err:
            return _fail(self, settings, f"Could not download the result: {err}")
        meshes = [f for f in files if f.suffix.lower() in (".glb", ".gltf", ".obj", ".ply")]
        if not meshes:
            return _fail(self, settings, f"The job has no mesh file to import (got {[f.name for f in files]})")
        try:
            imported = _import_file(context, meshes[0])
        except RuntimeError as err:
            return _fail(self, settings, f"Blender could not import {meshes[0]}: {err}")
        for obj in imported:
            obj["dreamstill_job_id"] = item.job_id
            obj["dreamstill_spec"] = item.spec_json
        _place_like_live_asset(imported, follow.asset_object(item), item)
        settings.set_status(f"Imported {meshes[0].name} ({len(imported)} object(s))")
        return {"FINISHED"}


def _import_file(context, path: Path) -> list:
    before = set(bpy.data.objects)
    suffix = path.suffix.lower()
    if suffix in (".glb", ".gltf"):
        bpy.ops.import_scene.gltf(filepath=str(path))
    elif suffix == ".obj":
        bpy.ops.wm.obj_import(filepath=str(path), up_axis="Z", forward_axis="Y")
    else:
        bpy.ops.wm.ply_import(filepath=str(path), up_axis="Z", forward_axis="Y")
    imported = [o for o in bpy.data.objects if o not in before]
    coll = live.root_collection(context.scene)
    for obj in imported:
        for c in list(obj.users_collection):
            c.objects.unlink(obj)
        coll.objects.link(obj)
    return imported


def _place_like_live_asset(imported: list, live_obj, item) -> None:
    """Put the imported file where the streamed asset is (its placement, then the object's transform, so a moved
    or rotated asset is matched too), or at the item's location when the streamed object is gone."""
    if live_obj is not None:
        matrix = live_obj.matrix_world @ Matrix(live.placement_of(live_obj).matrix().tolist())
    else:
        matrix = Matrix.Translation(item.location)
    for obj in imported:
        if obj.parent is None:
            obj.matrix_world = matrix @ obj.matrix_world


class DREAMSTILL_OT_use_spec(Operator):
    """Load the active asset's JobSpec into the panel, to regenerate it or vary it (e.g. a new seed)"""

    bl_idname = "dreamstill.use_spec"
    bl_label = "Use Settings of Selected"
    __annotations__ = {
        "new_seed": BoolProperty(
            name="New Seed", default=False, options={"SKIP_SAVE"}, description="Add one to the seed for a variation"
        )
    }

    @classmethod
    def poll(cls, context):
        return context.active_object is not None and "dreamstill_spec" in context.active_object

    def execute(self, context):
        settings = context.scene.dreamstill
        try:
            spec = JobSpec.from_json(context.active_object["dreamstill_spec"])
        except (ValueError, KeyError) as err:
            return _fail(self, settings, f"The object's stored JobSpec is unreadable: {err}")
        load_spec_into(settings, spec)
        if self.new_seed:
            settings.seed = spec.seed + 1
        settings.set_status(f"Loaded the settings of {context.active_object.name}")
        return {"FINISHED"}


classes = (
    DREAMSTILL_OT_connect,
    DREAMSTILL_OT_start_backend,
    DREAMSTILL_OT_stop_backend,
    DREAMSTILL_OT_generate,
    DREAMSTILL_OT_batch,
    DREAMSTILL_OT_cancel,
    DREAMSTILL_OT_wait,
    DREAMSTILL_OT_resume,
    DREAMSTILL_OT_import_result,
    DREAMSTILL_OT_use_spec,
)
