"""Batch generation: a list of prompts laid out in a grid or along a curve, queued in the .blend.

Prompts come from a text block or a file (one per line; blank lines and lines starting with ``#`` are skipped) or
from a string separated by ``;`` or new lines. Where each asset stands (``placement``): on a near-square grid starting
at the 3D cursor, or, when a curve is selected (or named), at points spread evenly by arc length along its first
spline as Blender evaluates it (Bezier segments at the spline's resolution, poly and NURBS splines through their
points), in world space.

Every item is a ``scene.dreamstill.queue`` entry holding its JobSpec as JSON, so the batch survives saving and
reopening the .blend: the ``load_post`` handler (:func:`on_load`) re-attaches to the jobs the backend still has and
sends the ones it never got.
"""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np
from bpy.app.handlers import persistent
from mathutils.geometry import interpolate_bezier

from . import follow, job_queue, placement

BEZIER_SAMPLES_PER_SEGMENT = 4  # times the spline's resolution: finer sampling, truer arc lengths


def parse_prompts(text: str) -> list[str]:
    """Prompts from text: one per line or separated by ';'; empty entries and '#' comments dropped."""
    prompts = []
    for line in text.replace(";", "\n").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            prompts.append(line)
    return prompts


def prompts_from(text: str = "", text_block=None, filepath: str = "") -> list[str]:
    """The batch's prompts from a string, a Blender text block, or a file (the first one given)."""
    if text.strip():
        return parse_prompts(text)
    if text_block is not None:
        return parse_prompts(text_block.as_string())
    if filepath.strip():
        path = Path(bpy.path.abspath(filepath.strip()))
        try:
            return parse_prompts(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ValueError(f"cannot read the prompt file {path}: {err}") from None
    return []


def batch_name(scene) -> str:
    """A new collection name "Dreamstill Batch N"."""
    taken = {c.name for c in bpy.data.collections}
    n = 1
    while f"Dreamstill Batch {n}" in taken:
        n += 1
    return f"Dreamstill Batch {n}"


def selected_curve(context):
    """The active object when it is a selected curve, else the first selected curve, else None."""
    active = context.active_object
    if active is not None and active.type == "CURVE" and active.select_get():
        return active
    return next((o for o in context.selected_objects if o.type == "CURVE"), None)


def curve_polyline(obj) -> tuple[np.ndarray, bool]:
    """World-space points along the first spline of the curve object ``obj``, and whether it is closed."""
    splines = obj.data.splines
    if not len(splines):
        raise ValueError(f"the curve {obj.name!r} has no splines; draw one or lay the batch out in a grid")
    spline = splines[0]
    if spline.type == "BEZIER":
        knots = spline.bezier_points
        samples = max(2, spline.resolution_u * BEZIER_SAMPLES_PER_SEGMENT + 1)
        pairs = [(i, i + 1) for i in range(len(knots) - 1)]
        if spline.use_cyclic_u and len(knots) > 1:
            pairs.append((len(knots) - 1, 0))
        points = [knots[0].co.copy()] if len(knots) else []
        for i, j in pairs:
            a, b = knots[i], knots[j]
            points.extend(interpolate_bezier(a.co, a.handle_right, b.handle_left, b.co, samples)[1:])
    else:
        points = [p.co.xyz for p in spline.points]
    matrix = obj.matrix_world
    return np.array([tuple(matrix @ p) for p in points], dtype=np.float64).reshape(-1, 3), spline.use_cyclic_u


def batch_locations(context, count: int, spacing: float, curve=None) -> list[tuple[float, float, float]]:
    """Where the ``count`` assets of a batch stand: along ``curve`` when given, else on a grid from the cursor."""
    if curve is not None:
        context.view_layer.update()  # the curve's matrix_world, when it was made or moved since the last evaluation
        points, cyclic = curve_polyline(curve)
        return [tuple(p) for p in placement.points_along(points, count, cyclic)]
    cursor = context.scene.cursor.location
    return [(cursor.x + dx, cursor.y + dy, cursor.z + dz) for dx, dy, dz in placement.grid_offsets(count, spacing)]


@persistent
def on_load(_dummy=None) -> None:
    """load_post: resume the queues of the file just opened (failures stay queued, with a message)."""
    follow.forget_all()  # jobs of the previous file belong to scenes that are gone
    try:
        problems = job_queue.resume()
    except ImportError as err:
        print(f"Dreamstill: {err}")
        return
    for text in problems:
        print(f"Dreamstill: {text}")


def register() -> None:
    if on_load not in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.append(on_load)


def unregister() -> None:
    while on_load in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(on_load)
