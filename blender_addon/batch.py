"""Batch generation: a list of prompts into a grid of objects in one collection, queued in the .blend.

Prompts come from a text block or a file (one per line; blank lines and lines starting with ``#`` are skipped) or
from a string separated by ``;`` or new lines. Item ``i`` of ``n`` sits at column ``i mod c``, row ``i // c`` with
``c = ceil(sqrt(n))`` columns, ``spacing`` apart, starting at the 3D cursor and growing along +X and -Y.

Every item is a ``scene.dreamstill.queue`` entry holding its JobSpec as JSON, so the batch survives saving and
reopening the .blend: the ``load_post`` handler (:func:`on_load`) re-attaches to the jobs the backend still has and
sends the ones it never got.
"""

from __future__ import annotations

import math
from pathlib import Path

import bpy
from bpy.app.handlers import persistent

from . import session


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


def grid_offsets(count: int, spacing: float) -> list[tuple[float, float, float]]:
    """Offsets of ``count`` items on a near-square grid: column i mod c along +X, row i // c along -Y."""
    columns = max(1, math.ceil(math.sqrt(count)))
    return [((i % columns) * spacing, -(i // columns) * spacing, 0.0) for i in range(count)]


def batch_name(scene) -> str:
    """A new collection name "Dreamstill Batch N"."""
    taken = {c.name for c in bpy.data.collections}
    n = 1
    while f"Dreamstill Batch {n}" in taken:
        n += 1
    return f"Dreamstill Batch {n}"


@persistent
def on_load(_dummy=None) -> None:
    """load_post: resume the queues of the file just opened (failures stay queued, with a message)."""
    session.STATE.jobs.clear()  # jobs of the previous file belong to scenes that are gone
    try:
        problems = session.resume()
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
