"""Scene settings (``Scene.dreamstill``), the saved job queue, and the JobSpec they describe.

The job settings are defined once (:func:`job_annotations`) and used twice: on the scene's property group (what the
panel edits) and on every operator that starts jobs, so scripts can pass them directly::

    bpy.ops.dreamstill.generate(prompt="a red cube", steps=200, server="tcp://127.0.0.1:5555")

An operator property that is not given falls back to the scene's value (:func:`job_values`).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    FloatVectorProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)
from bpy.types import PropertyGroup

from . import panel_props
from .proto import JobSpec, JobSpecError, protocol

METHOD_ITEMS = [
    ("sds", "SDS", "Score Distillation Sampling (DreamFusion)"),
    ("csd", "CSD", "Classifier Score Distillation"),
    ("vsd", "VSD", "Variational Score Distillation (ProlificDreamer)"),
    ("l2vsd", "L2-VSD", "VSD with a linearized lookahead"),
    ("ssd", "SSD", "Stable Score Distillation"),
    ("fsd", "FSD", "Flow Score Distillation"),
    ("asd", "ASD", "Asynchronous Score Distillation (ScaleDreamer)"),
]
assert [m[0] for m in METHOD_ITEMS] == list(protocol.METHODS), "method list out of step with the protocol"

MODE_ITEMS = [
    ("optimize", "Optimize", "Optimize one asset by score distillation (minutes)"),
    ("instant", "Instant", "Ask the backend's amortized generator (under a second, when the backend has one)"),
]

# name: (steps, resolution, mesh_resolution, texture_size)
PRESETS = {
    "DRAFT": (150, 0, 64, 256),
    "STANDARD": (400, 0, 0, 512),
    "HIGH": (5000, 128, 256, 1024),
}
PRESET_ITEMS = [
    ("DRAFT", "Draft", "150 steps, prior resolution, 64^3 mesh, 256 px texture"),
    ("STANDARD", "Standard", "400 steps (the default), prior resolution, 128^3 mesh (64^3 instant), 512 px texture"),
    ("HIGH", "High", "5000 steps, 128 px renders, 256^3 mesh, 1024 px texture"),
    ("CUSTOM", "Custom", "Set steps and resolutions by hand"),
]

JOB_FIELDS = (
    "prompt",
    "negative_prompt",
    "method",
    "mode",
    "steps",
    "resolution",
    "mesh_resolution",
    "texture_size",
    "max_faces",
    "seed",
    "guidance",
    "prior",
    "elevation_min",
    "elevation_max",
    "fov_min",
    "fov_max",
    "distance_min",
    "distance_max",
    "preview_every",
    "mesh_every",
    "options_json",
    "server",
)

STATE_ITEMS = [
    ("PENDING", "Pending", "Not sent to the backend yet"),
    ("SUBMITTED", "Running", "Queued or running on the backend"),
    ("DONE", "Done", "Finished"),
    ("FAILED", "Failed", "Stopped with an error"),
    ("CANCELLED", "Cancelled", "Cancelled"),
]
ACTIVE_STATES = {"PENDING", "SUBMITTED"}


def job_annotations() -> dict:
    """Fresh property definitions for every JobSpec setting (a property object can belong to one class only)."""
    return {
        "prompt": StringProperty(name="Prompt", description="Text to turn into a 3D asset"),
        "negative_prompt": StringProperty(name="Negative", description="What the asset should not look like"),
        "method": EnumProperty(
            name="Method", items=METHOD_ITEMS, default="sds", description="Score distillation method"
        ),
        "mode": EnumProperty(name="Mode", items=MODE_ITEMS, default="optimize"),
        "steps": IntProperty(
            name="Steps", default=400, min=1, max=100_000, soft_max=20_000, description="Optimization steps"
        ),
        "resolution": IntProperty(
            name="Resolution",
            default=0,
            min=0,
            max=1024,
            description="Rendered image size fed to the prior (0 = the prior's own)",
        ),
        "mesh_resolution": IntProperty(
            name="Mesh Resolution",
            default=0,
            min=0,
            max=512,
            description="Marching-cubes grid size (0 = the mode's: 128 optimize, 64 instant)",
        ),
        "texture_size": IntProperty(
            name="Texture Size",
            default=512,
            min=0,
            max=4096,
            description="Baked texture size in pixels (0 = vertex colours only)",
        ),
        "max_faces": IntProperty(
            name="Max Faces",
            default=0,
            min=0,
            max=10_000_000,
            soft_max=500_000,
            description="Decimate the mesh to this many faces (0 = the mode's: all for optimize, 10,000 for instant)",
        ),
        "seed": IntProperty(name="Seed", default=0, min=0, description="Same seed and settings = same asset"),
        "guidance": FloatProperty(
            name="Guidance",
            default=0.0,
            min=0.0,
            soft_max=200.0,
            description="Classifier-free guidance scale (0 = the method's paper default)",
        ),
        "prior": StringProperty(
            name="Prior",
            default="builtin",
            description="Diffusion prior: builtin, a local diffusers folder or a hub id",
        ),
        "elevation_min": FloatProperty(
            name="Elevation Min", default=-10.0, min=-90.0, max=90.0, description="Lowest camera elevation in degrees"
        ),
        "elevation_max": FloatProperty(
            name="Elevation Max", default=45.0, min=-90.0, max=90.0, description="Highest camera elevation in degrees"
        ),
        "fov_min": FloatProperty(name="FOV Min", default=40.0, min=1.0, max=179.0, description="Degrees"),
        "fov_max": FloatProperty(name="FOV Max", default=50.0, min=1.0, max=179.0, description="Degrees"),
        "distance_min": FloatProperty(
            name="Distance Min",
            default=2.5,
            min=0.01,
            soft_max=10.0,
            description="Camera distance from the origin in scene units",
        ),
        "distance_max": FloatProperty(name="Distance Max", default=3.0, min=0.01, soft_max=10.0),
        "preview_every": IntProperty(
            name="Preview Every", default=50, min=0, description="Send a preview image every N steps (0 = never)"
        ),
        "mesh_every": IntProperty(
            name="Mesh Every",
            default=100,
            min=0,
            description="Send an intermediate mesh every N steps (0 = only the final one)",
        ),
        "options_json": StringProperty(
            name="Options", default="", description='Method-specific settings as JSON, e.g. {"eta": 0.1}'
        ),
        "server": StringProperty(
            name="Server", default="", description="Backend address, e.g. tcp://127.0.0.1:5555 (empty = preferences)"
        ),
    }


def job_values(operator, settings) -> SimpleNamespace:
    """The job settings of ``operator``: each property the caller set, else the scene's value."""
    values = {}
    for name in JOB_FIELDS:
        if operator is not None and operator.properties.is_property_set(name):
            values[name] = getattr(operator, name)
        else:
            values[name] = getattr(settings, name)
    return SimpleNamespace(**values)


def spec_from(values, prompt: str | None = None) -> JobSpec:
    """The JobSpec for these settings (JobSpecError naming the field when one is out of range)."""
    text = (values.options_json or "").strip()
    try:
        options = json.loads(text) if text else {}
    except json.JSONDecodeError as err:
        raise JobSpecError(
            f'Options: not valid JSON ({err.msg} at character {err.pos}); write e.g. {{"eta": 0.1}} or leave it empty'
        ) from None
    if not isinstance(options, dict):
        raise JobSpecError('Options: must be a JSON object such as {"eta": 0.1}')
    spec = JobSpec(
        prompt=(values.prompt if prompt is None else prompt).strip(),
        negative_prompt=values.negative_prompt,
        method=values.method,
        mode=values.mode,
        steps=int(values.steps),
        resolution=int(values.resolution),
        seed=int(values.seed),
        guidance=float(values.guidance),
        prior=values.prior.strip() or "builtin",
        elevation_range=(float(values.elevation_min), float(values.elevation_max)),
        fov_range=(float(values.fov_min), float(values.fov_max)),
        distance_range=(float(values.distance_min), float(values.distance_max)),
        mesh_resolution=int(values.mesh_resolution),
        texture_size=int(values.texture_size),
        max_faces=int(values.max_faces),
        preview_every=int(values.preview_every),
        mesh_every=int(values.mesh_every),
        options=options,
    )
    return spec.validate()


def load_spec_into(settings, spec: JobSpec) -> None:
    """Copy a stored JobSpec back into the panel's settings (to regenerate or vary an asset)."""
    settings.preset = "CUSTOM"
    for name in (
        "prompt",
        "negative_prompt",
        "method",
        "mode",
        "steps",
        "resolution",
        "mesh_resolution",
        "texture_size",
        "max_faces",
        "seed",
        "guidance",
        "prior",
        "preview_every",
        "mesh_every",
    ):
        setattr(settings, name, getattr(spec, name))
    settings.elevation_min, settings.elevation_max = spec.elevation_range
    settings.fov_min, settings.fov_max = spec.fov_range
    settings.distance_min, settings.distance_max = spec.distance_range
    settings.options_json = json.dumps(spec.options) if spec.options else ""


def _apply_preset(self, _context):
    if self.preset in PRESETS:
        self.steps, self.resolution, self.mesh_resolution, self.texture_size = PRESETS[self.preset]


class DREAMSTILL_PG_job(PropertyGroup):
    """One job in the scene's queue (saved with the .blend, resumed on load)."""

    __annotations__ = {
        "prompt": StringProperty(name="Prompt"),
        "state": EnumProperty(name="State", items=STATE_ITEMS, default="PENDING"),
        "job_id": StringProperty(name="Job", description="The backend's id for this job"),
        "address": StringProperty(name="Server"),
        "spec_json": StringProperty(name="JobSpec", description="The job's JobSpec as JSON"),
        "object_name": StringProperty(name="Object"),
        "location": FloatVectorProperty(name="Location", size=3, subtype="TRANSLATION"),
        "batch": StringProperty(name="Batch", description="Collection of the batch this job belongs to"),
        "message": StringProperty(name="Message"),
        "step": IntProperty(name="Step", default=0),
        "total": IntProperty(name="Total", default=0),
        "loss": FloatProperty(name="Loss", default=0.0),
        "eta_s": FloatProperty(name="ETA", default=0.0),
        "elapsed_s": FloatProperty(name="Elapsed", default=0.0),
        **panel_props.item_annotations(),
    }

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total else 0.0


class DREAMSTILL_PG_settings(PropertyGroup):
    """Everything the Dreamstill panel shows; ``bpy.context.scene.dreamstill``."""

    __annotations__ = {
        **job_annotations(),
        "preset": EnumProperty(
            name="Quality",
            items=PRESET_ITEMS,
            default="STANDARD",
            update=_apply_preset,
            description="Steps and resolutions in one choice",
        ),
        "status": StringProperty(name="Status", default=""),
        "status_error": BoolProperty(name="Status Is Error", default=False),
        "active_job": StringProperty(name="Active Job", description="The job the panel follows"),
        "preview_image": PointerProperty(name="Preview", type=bpy.types.Image),
        "queue": CollectionProperty(type=DREAMSTILL_PG_job),
        "queue_index": IntProperty(name="Queue Index", default=0),
        "batch_prompts": StringProperty(
            name="Prompts", default="", description="Prompts separated by ';' (or use a text block or a file)"
        ),
        "batch_text": PointerProperty(
            name="Text", type=bpy.types.Text, description="Text block with one prompt per line"
        ),
        "batch_file": StringProperty(name="File", subtype="FILE_PATH", description="Text file, one prompt per line"),
        "batch_spacing": FloatProperty(name="Spacing", default=2.5, min=0.1, description="Grid spacing"),
        "show_camera": BoolProperty(name="Camera", default=False),
        "show_advanced": BoolProperty(name="Advanced", default=False),
        **panel_props.settings_annotations(),
    }

    def find_job(self, job_id: str):
        for item in self.queue:
            if item.job_id == job_id:
                return item
        return None

    def set_status(self, text: str, error: bool = False) -> None:
        self.status = text
        self.status_error = error


classes = (DREAMSTILL_PG_job, DREAMSTILL_PG_settings)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.dreamstill = PointerProperty(type=DREAMSTILL_PG_settings)


def unregister() -> None:
    del bpy.types.Scene.dreamstill
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
