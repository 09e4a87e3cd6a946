"""Voxel operations on solids (boolean occupancy grids) and signed distance grids, with scipy.ndimage.

- ``keep_largest_components``: the n largest 26-connected parts (floaters dropped);
- ``close_small_features``: morphological closing O <- erode(dilate(O, B_r), B_r) with a ball B_r of radius r:
  pits, cracks and tunnels narrower than about 2 r are filled, features wider than that are left alone (a torus's
  hole stays open when its radius is well above r);
- ``fill_cavities``: enclosed voids (no path to the grid's border) become solid;
- ``signed_distance``: the Euclidean distance transform of both sides, with the surface half a voxel between an
  inside and an outside sample: d = edt(outside) - h/2 outside, d = -(edt(inside) - h/2) inside (h = voxel size);
- ``repair_sdf_grid``: all of the above applied to {d < 0} of a sampled SDF, with d replaced by the repaired solid's
  distance only around the voxels that changed, so the untouched surface keeps its sub-voxel position.
"""

from __future__ import annotations

import math

import numpy as np


def ball_structure(radius_voxels: float) -> np.ndarray:
    """Boolean ball of the given radius in voxels, (2k + 1)^3 with k = floor(radius)."""
    k = int(math.floor(radius_voxels))
    i = np.arange(-k, k + 1)
    x, y, z = np.meshgrid(i, i, i, indexing="ij")
    return x * x + y * y + z * z <= radius_voxels * radius_voxels + 1e-9


def keep_largest_components(occ: np.ndarray, n: int | None) -> np.ndarray:
    """The ``n`` largest 26-connected parts of ``occ`` by voxel count (all of them when n is None)."""
    from scipy import ndimage

    if n is None or not occ.any():
        return occ
    labels, count = ndimage.label(occ, structure=np.ones((3, 3, 3), bool))
    if count <= n:
        return occ
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.argsort(-sizes, kind="stable")[:n] + 1
    return np.isin(labels, keep)


def close_small_features(occ: np.ndarray, radius_voxels: float) -> np.ndarray:
    """Morphological closing with a ball (pits, cracks and tunnels narrower than ~2 radius are filled).

    The grid is padded by the ball's reach first, so the closing does not stick to the box's faces.
    """
    from scipy import ndimage

    if radius_voxels < 1 or not occ.any():
        return occ
    ball = ball_structure(radius_voxels)
    pad = ball.shape[0]
    padded = np.pad(occ, pad)
    closed = ndimage.binary_erosion(ndimage.binary_dilation(padded, ball), ball)
    return closed[pad:-pad, pad:-pad, pad:-pad] | occ


def fill_cavities(occ: np.ndarray) -> np.ndarray:
    """Fill enclosed voids (empty voxels not connected to the grid's border)."""
    from scipy import ndimage

    return ndimage.binary_fill_holes(occ)


def signed_distance(occ: np.ndarray, spacing: float) -> np.ndarray:
    """d per voxel, negative inside, the surface half a voxel between inside and outside samples (float32)."""
    from scipy import ndimage

    if occ.all() or not occ.any():
        raise ValueError("the occupancy grid is all inside or all outside; there is no surface to measure from")
    outside = ndimage.distance_transform_edt(~occ, sampling=spacing)
    inside = ndimage.distance_transform_edt(occ, sampling=spacing)
    d = np.where(occ, -(inside - 0.5 * spacing), outside - 0.5 * spacing)
    return d.astype(np.float32)


def repair_sdf_grid(
    values: np.ndarray,
    spacing: float,
    keep_components: int | None = 1,
    close_radius: float = 0.0,
    fill: bool = True,
    blend_voxels: int = 2,
    smooth_voxels: float = 1.0,
) -> tuple[np.ndarray, int]:
    """The SDF grid with its solid {d < 0} cleaned (largest parts, closing of radius ``close_radius`` in world units,
    cavities filled). Returns (values, number of voxels whose side changed); the input is returned unchanged when
    nothing changed. Within ``blend_voxels`` of a changed voxel d is the repaired solid's distance transform, blurred
    by a Gaussian of ``smooth_voxels`` voxels (0: none) so the patch is not a voxel staircase."""
    from scipy import ndimage

    occ = values < 0
    clean = keep_largest_components(occ, keep_components)
    clean = close_small_features(clean, close_radius / spacing)
    if fill:
        clean = fill_cavities(clean)
    changed = clean != occ
    n_changed = int(changed.sum())
    if n_changed == 0:
        return values, 0
    region = ndimage.binary_dilation(changed, iterations=max(1, blend_voxels))
    patch = signed_distance(clean, spacing)
    if smooth_voxels > 0:
        patch = ndimage.gaussian_filter(patch, smooth_voxels)
    return np.where(region, patch, values).astype(np.float32), n_changed
