"""Scene settings (``Scene.dreamstill``), the saved job queue, and the JobSpec they describe.

The job settings are generated from the JobSpec's field Settings (protocol/jobspec.py): each field becomes a
property of its kind (text -> String, choice -> Enum, integer -> Int, number -> Float, pair -> FloatVector of 2,
flag -> Bool, json -> a String of JSON named ``<field>_json``) with the Setting's label, help, range and default.
They sit on the scene's property group (what the panel edits) and on every operator that starts jobs, so scripts
can pass them directly::

    bpy.ops.dreamstill.generate(prompt="a red cube", steps=200, server="tcp://127.0.0.1:5555")

An operator property that is not given falls back to the scene's value (:func:`job_values`). The copy to a JobSpec
(:func:`spec_from`) and back (:func:`load_spec_into`) walk the same fields, so a new JobSpec field reaches the panel,
the operators and both copies with no edit here.
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

_DEFAULTS = protocol.field_defaults(JobSpec)

# name: (steps, resolution, mesh_resolution, texture_size)
PRESETS = {
    "DRAFT": (150, 0, 64, 256),
    "STANDARD": tuple(_DEFAULTS[k] for k in ("steps", "resolution", "mesh_resolution", "texture_size")),
    "HIGH": (5000, 128, 256, 1024),
}
PRESET_ITEMS = [
    ("DRAFT", "Draft", "150 steps, prior resolution, 64^3 mesh, 256 px texture"),
    ("STANDARD", "Standard", "The JobSpec defaults: 400 steps, prior resolution, 128^3 mesh (64^3 instant), 512 px"),
    ("HIGH", "High", "5000 steps, 128 px renders, 256^3 mesh, 1024 px texture"),
    ("CUSTOM", "Custom", "Set steps and resolutions by hand"),
]
SERVER_PROPERTY = "server"  # not a JobSpec field: where the job is sent

STATE_ITEMS = [
    ("PENDING", "Pending", "Not sent to the backend yet"),
    ("SUBMITTED", "Running", "Queued or running on the backend"),
    ("DONE", "Done", "Finished"),
    ("FAILED", "Failed", "Stopped with an error"),
    ("CANCELLED", "Cancelled", "Cancelled"),
]
ACTIVE_STATES = {"PENDING", "SUBMITTED"}


def property_name(field) -> str:
    """The Blender property that holds a JobSpec field (a json field is edited as text: ``<name>_json``)."""
    return f"{field.name}_json" if field.kind == "json" else field.name


def job_fields(spec_class: type = JobSpec) -> list:
    """The JobSpec fields that have a property, in declaration order."""
    return protocol.spec_fields(spec_class)


def _limits(field, integer: bool) -> dict:
    """min / max / soft_max keywords from the Setting (0 stays reachable when it has a meaning)."""
    s, cast = field.setting, (int if integer else float)
    out = {}
    if s.minimum is not None:
        out["min"] = cast(min(s.minimum, 0) if s.zero_means else s.minimum)
    if s.maximum is not None:
        out["max"] = cast(s.maximum)
    if s.soft_maximum is not None:
        out["soft_max"] = cast(s.soft_maximum)
    return out


def _description(field) -> str:
    s = field.setting
    text = s.help[:1].upper() + s.help[1:]
    return text + (f" (0 = {s.zero_means})" if s.zero_means else "")


def _property(field):
    """A fresh bpy property for one JobSpec field (a property object can belong to one class only)."""
    s, kind = field.setting, field.kind
    common = {"name": s.label, "description": _description(field)}
    default = field.default if field.has_default else None
    if kind == "text":
        return StringProperty(default=default or "", **common)
    if kind == "choice":
        return EnumProperty(items=list(s.choices), default=default or s.choices[0][0], **common)
    if kind == "integer":
        return IntProperty(default=default or 0, **_limits(field, True), **common)
    if kind == "number":
        return FloatProperty(default=default or 0.0, **_limits(field, False), **common)
    if kind == "pair":
        return FloatVectorProperty(size=2, default=default or (0.0, 0.0), **_limits(field, False), **common)
    if kind == "flag":
        return BoolProperty(default=bool(default), **common)
    if kind == "json":
        common["description"] += " as JSON" + (f", e.g. {s.example}" if s.example else "")
        return StringProperty(default=json.dumps(default) if default else "", **common)
    raise TypeError(f"no Blender property for a {kind!r} setting ({field.name})")


def job_annotations(spec_class: type = JobSpec) -> dict:
    """Fresh property definitions for every JobSpec setting, plus ``server``."""
    props = {property_name(f): _property(f) for f in job_fields(spec_class)}
    props[SERVER_PROPERTY] = StringProperty(
        name="Server",
        default="",
        description=f"Backend address, e.g. {protocol.DEFAULT_ADDRESS} (empty = preferences)",
    )
    return props


def job_property_names(spec_class: type = JobSpec) -> tuple[str, ...]:
    return (*(property_name(f) for f in job_fields(spec_class)), SERVER_PROPERTY)


JOB_FIELDS = job_property_names()


def job_values(operator, settings, spec_class: type = JobSpec) -> SimpleNamespace:
    """The job settings of ``operator``: each property the caller set, else the scene's value."""
    values = {}
    for name in job_property_names(spec_class):
        if operator is not None and operator.properties.is_property_set(name):
            values[name] = getattr(operator, name)
        else:
            values[name] = getattr(settings, name)
    return SimpleNamespace(**values)


def _from_property(field, raw):
    """A property's value as the JobSpec field wants it (the JobSpec checks it)."""
    kind = field.kind
    if kind in ("text", "choice"):
        text = str(raw).strip()
        return text or (field.default if field.has_default else "")  # a cleared prior means the default
    if kind == "integer":
        return int(raw)
    if kind == "number":
        return float(raw)
    if kind == "pair":
        return tuple(float(x) for x in raw)
    if kind == "flag":
        return bool(raw)
    if kind == "json":
        return _parse_json(field, raw)
    raise TypeError(f"no Blender property for a {kind!r} setting ({field.name})")


def _parse_json(field, raw) -> dict:
    s = field.setting
    example = s.example or "{}"
    text = (raw or "").strip()
    try:
        value = json.loads(text) if text else {}
    except (json.JSONDecodeError, RecursionError) as err:
        where = f" ({err.msg} at character {err.pos})" if isinstance(err, json.JSONDecodeError) else ""
        raise JobSpecError(f"{s.label}: not valid JSON{where}; write e.g. {example} or leave it empty") from None
    if not isinstance(value, dict):
        raise JobSpecError(f"{s.label}: must be a JSON object such as {example}")
    return value


def spec_from(values, prompt: str | None = None, spec_class: type = JobSpec) -> JobSpec:
    """The JobSpec for these settings (JobSpecError naming the field when one is out of range)."""
    kwargs = {f.name: _from_property(f, getattr(values, property_name(f))) for f in job_fields(spec_class)}
    if prompt is not None:
        kwargs["prompt"] = prompt.strip()
    return spec_class(**kwargs)


def _to_property(field, value):
    if field.kind == "json":
        return json.dumps(value) if value else ""
    return value


def load_spec_into(settings, spec: JobSpec) -> None:
    """Copy a stored JobSpec back into the panel's settings (to regenerate or vary an asset)."""
    settings.preset = "CUSTOM"
    for field in job_fields(type(spec)):
        setattr(settings, property_name(field), _to_property(field, getattr(spec, field.name)))


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
