"""Where a generated asset lands, how big it is and what it is called; without bpy (tests import it on its own).

An asset stands on the ground at its target point p (the 3D cursor, a grid cell or a point on a curve): its lowest
point at p's height, the centre of its footprint over p, and its largest extent equal to the size set in the panel
(metres). For a streamed mesh with vertices v_i (the backend's frame, Z up) and bounding box [lo, hi]:

    anchor a = ((lo_x + hi_x) / 2, (lo_y + hi_y) / 2, lo_z)       the point that lands on p
    factor k = size / max(hi - lo)                                 (1 when size is 0: the backend's own scale)
    v_i' = k (v_i - a)                                             vertex positions relative to the object's origin

The object's origin is p, so the origin sits at the asset's base, where an artist rotates and scales it. Every
update recomputes (a, k), so the asset keeps its place and size while its shape evolves. A result file imported
later goes to the same place through :meth:`Placement.matrix`.

Batches: a near-square grid (:func:`grid_offsets`) or points spread evenly by arc length along a curve
(:func:`points_along`). An asset refined from an artist's object stands beside it, as large as it (:func:`beside`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ARTICLES = ("a", "an", "the")
MAX_NAME_CHARS = 60  # Blender 4.x names hold 63 bytes


@dataclass(frozen=True)
class Placement:
    """v' = factor * (v - anchor): backend coordinates to the object's (origin at the asset's base)."""

    anchor: tuple[float, float, float] = (0.0, 0.0, 0.0)
    factor: float = 1.0

    def apply(self, vertices) -> np.ndarray:
        """(N, 3) float32 vertex positions relative to the object's origin."""
        v = np.asarray(vertices, dtype=np.float32).reshape(-1, 3)
        return ((v - np.asarray(self.anchor, dtype=np.float32)) * np.float32(self.factor)).astype(np.float32)

    def matrix(self, location=(0.0, 0.0, 0.0)) -> np.ndarray:
        """4x4 world matrix taking backend coordinates to the scene for an object whose origin is ``location``:
        x -> location + factor (x - anchor). For a downloaded result file, so it lands where the live asset is."""
        m = np.eye(4)
        m[:3, :3] *= self.factor
        m[:3, 3] = np.asarray(location, dtype=np.float64) - self.factor * np.asarray(self.anchor, dtype=np.float64)
        return m


def placement_for(vertices, size: float) -> Placement:
    """The placement that stands ``vertices`` on its base with its largest extent ``size`` (0 = keep its size)."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    if not len(v):
        return Placement()
    lo, hi = v.min(axis=0), v.max(axis=0)
    anchor = (float(lo[0] + hi[0]) / 2, float(lo[1] + hi[1]) / 2, float(lo[2]))
    extent = float((hi - lo).max())
    factor = float(size) / extent if size > 0 and extent > 0 else 1.0
    return Placement(anchor, factor)


def beside(lo, hi, gap: float = 0.25) -> tuple[tuple[float, float, float], float]:
    """Where an asset made from an object with the world bounding box [lo, hi] stands, and its size: on the object's
    ground, centred on its depth, ``gap`` of its width to its +X side; as large as the object (its largest extent).

        location = (hi_x + gap w + w / 2, (lo_y + hi_y) / 2, lo_z),   w = hi_x - lo_x,   size = max(hi - lo)

    (a refined copy of equal size then spans hi_x + gap w .. hi_x + (1 + gap) w)."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    width = float(hi[0] - lo[0])
    location = (float(hi[0] + gap * width + width / 2), float((lo[1] + hi[1]) / 2), float(lo[2]))
    return location, float((hi - lo).max())


def grid_offsets(count: int, spacing: float) -> list[tuple[float, float, float]]:
    """Offsets of ``count`` items on a near-square grid: c = ceil(sqrt(count)) columns, item i at column i mod c
    along +X and row i // c along -Y, ``spacing`` apart."""
    columns = max(1, math.ceil(math.sqrt(count)))
    return [((i % columns) * spacing, -(i // columns) * spacing, 0.0) for i in range(count)]


def points_along(points, count: int, cyclic: bool = False) -> np.ndarray:
    """``count`` points spread evenly by arc length along the polyline ``points`` (K, 3): at s_i = i L / (count - 1)
    on an open curve of length L (both ends used; one item sits at the start), s_i = i L / count on a closed one."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if not len(pts):
        raise ValueError("the curve has no points; draw a curve or lay the batch out in a grid")
    if count <= 0:
        return np.zeros((0, 3))
    if cyclic and len(pts) > 1:
        pts = np.vstack([pts, pts[:1]])
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    keep = np.concatenate([[True], seg > 0])  # drop repeated points: arc length must increase strictly
    pts, cum = pts[keep], np.concatenate([[0.0], np.cumsum(seg[seg > 0])])
    length = cum[-1]
    if length == 0:
        return np.repeat(pts[:1], count, axis=0)
    if cyclic:
        s = length * np.arange(count) / count
    else:
        s = length * np.arange(count) / (count - 1) if count > 1 else np.zeros(1)
    return np.stack([np.interp(s, cum, pts[:, k]) for k in range(3)], axis=1)


def asset_name(prompt: str) -> str:
    """The object name for a prompt: its words without a leading article, cut at a word under 60 characters."""
    words = prompt.split()
    if len(words) > 1 and words[0].lower() in ARTICLES:
        words = words[1:]
    name = ""
    for word in words:
        if len(name) + 1 + len(word) > MAX_NAME_CHARS:
            break
        name = f"{name} {word}".strip()
    return name or (words[0][:MAX_NAME_CHARS] if words else "Dreamstill asset")
