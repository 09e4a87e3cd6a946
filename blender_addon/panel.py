"""The "Dreamstill" tab in the 3D viewport's sidebar: drawing only (operators do the work)."""

from __future__ import annotations

from bpy.types import Panel, UIList

from . import reporting
from .batch import selected_curve
from .properties import ACTIVE_STATES, job_fields, property_name
from .proto import DEFAULT_ADDRESS

# Job settings the main panel lays out by hand; any other setting of the "job" group is drawn below them.
_MAIN_LAYOUT = {"prompt", "negative_prompt", "method", "mode", "steps", "resolution", "seed", "guidance"}


class DreamstillPanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Dreamstill"


def _status(layout, settings) -> None:
    if settings.status:
        box = layout.box()
        box.alert = settings.status_error
        for i, line in enumerate(_wrap(settings.status, 48)[:6]):
            box.label(text=line, icon=("ERROR" if settings.status_error else "INFO") if i == 0 else "BLANK1")


def _warnings(layout, text: str) -> None:
    """The finished job's warnings (one per line in ``text``), each wrapped."""
    box = layout.box()
    for warning in text.splitlines():
        for i, line in enumerate(_wrap(warning, 48)[:4]):
            box.label(text=line, icon="ERROR" if i == 0 else "BLANK1")


def _group_props(groups: tuple[str, ...], skip=frozenset()) -> list[str]:
    """Property names of the JobSpec settings in ``groups``, in declaration order."""
    return [property_name(f) for f in job_fields() if f.setting.group in groups and f.name not in skip]


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])


class VIEW3D_PT_dreamstill(DreamstillPanel, Panel):
    bl_label = "Dreamstill"

    def draw(self, context):
        layout = self.layout
        s = context.scene.dreamstill
        row = layout.row(align=True)
        row.prop(s, "server", text="", placeholder=f"{DEFAULT_ADDRESS} (preferences)")
        row.operator("dreamstill.connect", text="", icon="LINKED")
        row.operator("dreamstill.start_backend", text="", icon="PLAY")
        layout.prop(s, "prompt", text="")
        layout.prop(s, "negative_prompt")
        layout.prop(s, "asset_size")
        col = layout.column(align=True)
        col.prop(s, "method")
        col.prop(s, "mode")
        col.prop(s, "preset")
        sub = layout.column(align=True)
        sub.enabled = s.preset == "CUSTOM"
        sub.prop(s, "steps")
        sub.prop(s, "resolution")
        row = layout.row(align=True)
        row.prop(s, "seed")
        row.prop(s, "guidance")
        for name in _group_props(("job",), skip=_MAIN_LAYOUT):
            layout.prop(s, name)
        row = layout.row(align=True)
        row.scale_y = 1.4
        row.operator("dreamstill.generate", icon="SHADERFX")
        row.operator("dreamstill.cancel", icon="CANCEL")
        row = layout.row(align=True)  # on the selected mesh: paint it, or start a new asset from its shape
        row.operator("dreamstill.texture", icon="TEXTURE")
        row.operator("dreamstill.refine", icon="MOD_REMESH")
        item = s.find_job(s.active_job) if s.active_job else None
        if item is not None:
            if item.state == "SUBMITTED":
                text = reporting.bar_text(item.step, item.total, item.loss, item.eta_s, item.phase)
                layout.progress(factor=item.fraction, type="BAR", text=text)
            else:
                layout.label(text=f"{item.prompt}: {item.state.lower()}")
        _status(layout, s)
        if item is not None and item.warnings:
            _warnings(layout, item.warnings)
        if s.preview_image is not None and s.preview_image.preview is not None:
            layout.template_icon(icon_value=s.preview_image.preview.icon_id, scale=8.0)


class VIEW3D_PT_dreamstill_camera(DreamstillPanel, Panel):
    bl_label = "Camera"
    bl_parent_id = "VIEW3D_PT_dreamstill"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        s = context.scene.dreamstill
        col = self.layout.column(align=True)
        for name in _group_props(("camera",)):
            col.prop(s, name)


class VIEW3D_PT_dreamstill_advanced(DreamstillPanel, Panel):
    bl_label = "Advanced"
    bl_parent_id = "VIEW3D_PT_dreamstill"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        s = context.scene.dreamstill
        col = self.layout.column()
        for name in _group_props(("output", "advanced")):
            col.prop(s, name)
        row = col.row(align=True)
        row.operator("dreamstill.use_spec")
        row.operator("dreamstill.use_spec", text="Vary Seed").new_seed = True
        col.operator("dreamstill.import_result", icon="IMPORT")
        col.operator("dreamstill.stop_backend", icon="X")


class DREAMSTILL_UL_queue(UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        icons = {
            "PENDING": "TIME",
            "SUBMITTED": "SORTTIME",
            "DONE": "CHECKMARK",
            "FAILED": "ERROR",
            "CANCELLED": "CANCEL",
        }
        row = layout.row()
        row.label(text=item.prompt, icon=icons.get(item.state, "DOT"))
        if item.state in ACTIVE_STATES and item.total:
            row.label(text=f"{100 * item.fraction:.0f}%")


class VIEW3D_PT_dreamstill_batch(DreamstillPanel, Panel):
    bl_label = "Batch"
    bl_parent_id = "VIEW3D_PT_dreamstill"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        s = context.scene.dreamstill
        layout = self.layout
        layout.prop(s, "batch_prompts")
        layout.prop(s, "batch_text")
        layout.prop(s, "batch_file")
        layout.prop(s, "batch_on_curve")
        curve = selected_curve(context) if s.batch_on_curve else None
        if curve is not None:
            layout.label(text=f"Along {curve.name}", icon="CURVE_DATA")
        else:
            layout.prop(s, "batch_spacing")
        row = layout.row(align=True)
        row.operator("dreamstill.batch", icon="MESH_GRID")
        row.operator("dreamstill.resume", icon="FILE_REFRESH")
        if len(s.queue):
            layout.template_list("DREAMSTILL_UL_queue", "", s, "queue", s, "queue_index", rows=4)


classes = (
    DREAMSTILL_UL_queue,
    VIEW3D_PT_dreamstill,
    VIEW3D_PT_dreamstill_camera,
    VIEW3D_PT_dreamstill_advanced,
    VIEW3D_PT_dreamstill_batch,
)
