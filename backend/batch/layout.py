"""Where each asset of a scene goes: a near-square grid, every asset standing on the ground (z = 0).

With n assets, c = ceil(sqrt(n)) columns and r = ceil(n / c) rows, one square cell of side

    cell = max over assets of max(width_x, width_y) + gap

per asset. Asset i sits in column i mod c (along +X) and row i // c (along -Y, reading order seen from above), the
grid centred on the origin: the cell centre is ((col - (c - 1) / 2) * cell, -(row - (r - 1) / 2) * cell). Its
translation moves the centre of its bounding box's footprint onto that point and its lowest point onto z = 0.
"""

from __future__ import annotations

import math

import numpy as np


def grid_translations(bounds: list[tuple[np.ndarray, np.ndarray]], gap: float = 0.25) -> list[np.ndarray]:
    """(3,) translations for assets with axis-aligned ``bounds`` (low, high) in metres, Z up."""
    if gap < 0:
        raise ValueError(f"gap is {gap} m; give a gap of 0 or more metres between assets")
    if not bounds:
        return []
    lows = np.array([np.asarray(lo, np.float64) for lo, _ in bounds])
    highs = np.array([np.asarray(hi, np.float64) for _, hi in bounds])
    cell = float(np.max(highs[:, :2] - lows[:, :2])) + gap
    cell = cell if cell > 0 else 1.0
    columns = max(1, math.ceil(math.sqrt(len(bounds))))
    rows = math.ceil(len(bounds) / columns)
    out = []
    for i, (low, high) in enumerate(zip(lows, highs)):
        row, col = divmod(i, columns)
        centre = np.array([(col - (columns - 1) / 2) * cell, -(row - (rows - 1) / 2) * cell])
        footprint = (low[:2] + high[:2]) / 2
        out.append(np.array([*(centre - footprint), -low[2]]))
    return out


def mesh_bounds(path) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) corners of the mesh in a file ``export_mesh`` wrote, in the world frame (Z up)."""
    from ..mesh.export import load_mesh

    vertices = load_mesh(path).vertices
    return vertices.min(0).astype(np.float64), vertices.max(0).astype(np.float64)
