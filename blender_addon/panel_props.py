"""Scene, queue-item and operator properties for where assets land and what a job says, kept apart from the job
settings that properties.py generates from the JobSpec. properties.py merges these into its property groups."""

from __future__ import annotations

from bpy.props import BoolProperty, FloatProperty, StringProperty

SIZE_DESCRIPTION = (
    "Largest extent of a generated asset in metres; it stands on the ground at the 3D cursor "
    "(0 = the size the backend made it)"
)


def _size(default: float, options=None) -> FloatProperty:
    extra = {} if options is None else {"options": options}
    return FloatProperty(
        name="Size", default=default, min=0.0, soft_max=100.0, unit="LENGTH", description=SIZE_DESCRIPTION, **extra
    )


def settings_annotations() -> dict:
    """On ``scene.dreamstill`` (the panel)."""
    return {
        "asset_size": _size(1.0),
        "batch_on_curve": BoolProperty(
            name="Along Selected Curve",
            default=True,
            description="Lay a batch out along the selected curve, evenly spaced by length (else in a grid)",
        ),
    }


def item_annotations() -> dict:
    """On each queue item (saved with the .blend)."""
    return {
        "size": _size(0.0),
        "phase": StringProperty(name="Phase", description="What the backend is doing: optimize, mesh, bake ..."),
        "warnings": StringProperty(name="Warnings", description="The finished job's warnings, one per line"),
        "source": StringProperty(
            name="Source", description="The artist's object a texture or refine job works on (its mesh is sent)"
        ),
        "texture_only": BoolProperty(
            name="Texture Only",
            default=False,
            description="The job paints its source object (a new material and image); no object is made",
        ),
    }


def operator_annotations(batch: bool = False) -> dict:
    """On the generate / batch operators: unset ones fall back to the panel's."""
    props = {"size": _size(1.0, {"SKIP_SAVE"})}
    if batch:
        props["curve"] = StringProperty(
            name="Curve",
            options={"SKIP_SAVE"},
            description="Curve object to lay the batch along (empty = the selected curve, else a grid)",
        )
    return props
