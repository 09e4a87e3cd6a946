"""Operators on the artist's selected mesh: ``bpy.ops.dreamstill.texture`` and ``bpy.ops.dreamstill.refine``.

    bpy.ops.dreamstill.texture(prompt="a red brick wall", steps=300, server="tcp://127.0.0.1:5555")
    bpy.ops.dreamstill.refine(prompt="a blue sphere", keep_shape=0.8)

Both send the active object's evaluated mesh (``scene_mesh.read_mesh``: modifiers applied, its UVs when it has a UV
map) with the job. Texture keeps the geometry exactly: the result arrives as an image texture in a new material on
that object, in its own UV map (a new "Dreamstill UV" map when it has none), updating live (``painting``). Refine
starts the shape from the mesh and lets distillation move it (``keep_shape`` holds it); the result is a new object
standing beside the original, as large as it, updated like a generated asset. Like generate, they take every
JobSpec setting (the mode is theirs), block in background mode until the job ends (``wait``), and put any error
(nothing selected, a mesh too large to send, a refusal by the backend) in the panel.
"""

from __future__ import annotations

import bpy
from bpy.props import StringProperty
from bpy.types import Operator
from mathutils import Vector

from . import clients, job_queue, placement, scene_mesh
from .operators import _WAIT_PROPS, _blocking, _fail, _wait
from .properties import job_annotations, job_values, spec_from
from .proto import JobSpecError, client_api, protocol

_OBJECT_PROP = {
    "object_name": StringProperty(
        name="Object", options={"SKIP_SAVE"}, description="Mesh object to work on (empty = the active object)"
    )
}


def _source(op, context):
    """The mesh object the operator works on (ValueError naming what is selected when it is not a mesh)."""
    obj = bpy.data.objects.get(op.object_name) if op.object_name else context.active_object
    if op.object_name and obj is None:
        raise ValueError(f"no object named {op.object_name!r}")
    scene_mesh.read_mesh(obj)  # refuses anything but a mesh, and a mesh too large to send, with the panel's text
    return obj


def _world_box(obj) -> tuple[tuple, tuple]:
    corners = [obj.matrix_world @ Vector(c) for c in obj.bound_box]
    return tuple(min(c[i] for c in corners) for i in range(3)), tuple(max(c[i] for c in corners) for i in range(3))


def _send(op, context, obj, mode: str):
    """Queue and send one texture or refine job on ``obj``; (job id, error text or None)."""
    settings = context.scene.dreamstill
    values = job_values(op, settings)
    values.mode = mode
    prompt = op.prompt if op.properties.is_property_set("prompt") else settings.prompt
    if not prompt.strip():
        raise ValueError('Type a prompt first (e.g. "a red cube")')
    spec = spec_from(values, prompt=prompt)
    item = settings.queue.add()
    item.prompt, item.address, item.spec_json = (
        spec.prompt,
        clients.address_for(values.server),
        job_queue.spec_json(spec),
    )
    item.source, item.texture_only = obj.name, mode == "texture"
    if item.texture_only:
        item.object_name = obj.name
    else:
        item.location, item.size = placement.beside(*_world_box(obj))
    job_queue.ensure_object(context.scene, item)
    api = client_api()
    try:
        return job_queue.submit_item(context.scene, item), None
    except api.ServerUnavailable as err:
        item.message = "not sent: the backend did not answer"
        return None, f"Backend not running: {err}"
    except (api.ServerError, JobSpecError, protocol.ProtocolError) as err:
        item.state, item.message = "FAILED", str(err)
        return None, f"The backend refused the job: {err}"


def _run(op, context, mode: str, verb: str):
    settings = context.scene.dreamstill
    try:
        obj = _source(op, context)
        job_id, error = _send(op, context, obj, mode)
    except (ImportError, ValueError, OSError) as err:  # JobSpecError and MeshTooLarge are ValueErrors
        return _fail(op, settings, str(err))
    if error:
        return _fail(op, settings, error)
    settings.active_job = job_id
    settings.set_status(f"{verb} {obj.name}: {settings.find_job(job_id).prompt}")
    if _blocking(op):
        return _wait(op, settings, [job_id])
    return {"FINISHED"}


class DREAMSTILL_OT_texture(Operator):
    """Paint the selected mesh from the prompt: its geometry is kept, the result is an image texture in a new
    material (in its own UV map, or a new one), updating live"""

    bl_idname = "dreamstill.texture"
    bl_label = "Texture"
    bl_options = {"REGISTER", "UNDO"}
    __annotations__ = {**job_annotations(), **_WAIT_PROPS, **_OBJECT_PROP}

    def execute(self, context):
        return _run(self, context, "texture", "Texturing")


class DREAMSTILL_OT_refine(Operator):
    """Start from the selected mesh's shape and refine shape and appearance from the prompt (Keep Shape holds it);
    the result is a new object beside it"""

    bl_idname = "dreamstill.refine"
    bl_label = "Refine"
    bl_options = {"REGISTER", "UNDO"}
    __annotations__ = {**job_annotations(), **_WAIT_PROPS, **_OBJECT_PROP}

    def execute(self, context):
        return _run(self, context, "refine", "Refining")


classes = (DREAMSTILL_OT_texture, DREAMSTILL_OT_refine)
