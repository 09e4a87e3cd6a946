"""Voxel operations on solids (boolean occupancy grids) and signed distance grids, with scipy.ndimage.

- ``keep_largest_components``: the n largest 26-connected parts, none under a fraction of the largest (floaters
  dropped);
- ``close_small_features``: morphological closing O <- erode(dilate(O, B_r), B_r) with a ball B_r of radius r:
  pits, cracks and tunnels narrower than about 2 r are filled, features wider than that are left alone (a torus's
  hole stays open when its radius is well above r);
- ``fill_cavities``: enclosed voids (no path to the grid's border) become solid;
- ``fill_unseen``: empty space that no camera of a set sees (behind the solid's first surface from every one of
  them) and that the solid surrounds in its horizontal slice, e.g. the inside of a shell open at the bottom when no
  camera looks from below, becomes solid;
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


def keep_largest_components(occ: np.ndarray, n: int | None, min_fraction: float = 0.0) -> np.ndarray:
    """The ``n`` largest 26-connected parts of ``occ`` by voxel count (all of them when n is None), less any part
    smaller than ``min_fraction`` of the largest (floaters)."""
    from scipy import ndimage

    if (n is None and min_fraction <= 0) or not occ.any():
        return occ
    labels, count = ndimage.label(occ, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(-sizes, kind="stable")[: count if n is None else n]
    keep = order[sizes[order] >= min_fraction * sizes[order[0]]] + 1
    if len(keep) == count:
        return occ
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


def viewpoint_depth_test(
    occ: np.ndarray, lo: float, spacing: float, viewpoint: np.ndarray, margin_voxels: float = 0.5
) -> np.ndarray:
    """(n^3,) bool: the voxels of ``occ`` (a grid with sample 0 at ``lo`` on every axis) that a pinhole camera at
    ``viewpoint`` looking at the origin sees as empty space, i.e. that lie in front of the solid's first surface.

    Each voxel centre p is projected to (x, y) = (q . r, q . u) / z with q = p - c, z = q . f (f the unit direction
    from the camera to the origin, r and u the image axes); the image is cut into square bins of sqrt(2) voxels'
    size at the nearest depth a voxel can have, sqrt(2) h / (|c| - R) with R the grid's corner radius, so the
    centres of a solid's near side leave no bin empty. Per bin the depth of the first surface is the least z of the
    solid voxels in it; a voxel is seen empty when its z is less than that by more than ``margin_voxels`` h."""
    import torch

    n = occ.shape[0]
    axis = torch.arange(n, dtype=torch.float32) * spacing + lo
    pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    solid = torch.from_numpy(np.ascontiguousarray(occ).reshape(-1))
    c = torch.as_tensor(viewpoint, dtype=torch.float32)
    f = -c / c.norm()
    side = torch.tensor([0.0, 0.0, 1.0]) if abs(float(f[2])) < 0.99 else torch.tensor([1.0, 0.0, 0.0])
    r = torch.nn.functional.normalize(torch.linalg.cross(f, side), dim=0)
    u = torch.linalg.cross(r, f)
    q = pts - c
    z = q @ f
    corner = float(pts.norm(dim=-1).max())
    bin_size = math.sqrt(2.0) * spacing / max(float(c.norm()) - corner, spacing)
    ix = torch.floor((q @ r) / z / bin_size).long()
    iy = torch.floor((q @ u) / z / bin_size).long()
    ix, iy = ix - ix.min(), iy - iy.min()
    key = ix * (int(iy.max()) + 1) + iy
    first = torch.full((int(key.max()) + 1,), float("inf")).scatter_reduce(0, key[solid], z[solid], "amin")
    return ((~solid) & (z < first[key] - margin_voxels * spacing)).numpy()


def fill_unseen(occ: np.ndarray, lo: float, spacing: float, viewpoints: np.ndarray) -> np.ndarray:
    """``occ`` with the hollows no camera sees made solid: every empty voxel that no camera at ``viewpoints`` (K, 3)
    sees (``viewpoint_depth_test``) and that the solid surrounds within its horizontal slice (z = const), such as
    the inside of a shell whose opening faces below cameras that orbit above it. Unseen space that the solid does
    not surround sideways (the thin wedge under a flat bottom that the lowest camera just misses) stays empty."""
    from scipy import ndimage

    if not occ.any():
        return occ
    seen = np.zeros(occ.size, bool)
    for viewpoint in np.asarray(viewpoints, np.float32):
        seen |= viewpoint_depth_test(occ, lo, spacing, viewpoint)
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[:, :, 1] = ndimage.generate_binary_structure(2, 1)  # connectivity within z slices only
    surrounded = ndimage.binary_fill_holes(occ, in_plane)
    return occ | (surrounded & ~seen.reshape(occ.shape))


def orbit_viewpoints(
    elevation_range: tuple[float, float],
    distance: float,
    azimuth_range: tuple[float, float] = (-180.0, 180.0),
    elevations: int = 4,
    azimuths: int = 24,
) -> np.ndarray:
    """(elevations * azimuths, 3) camera positions on a sphere of radius ``distance`` (Z up, the frame of
    render.cameras): elevations evenly over ``elevation_range``, azimuths evenly over ``azimuth_range`` (degrees;
    a full turn is sampled without repeating its end)."""
    e = np.radians(np.linspace(elevation_range[0], elevation_range[1], elevations))[:, None]
    lo, hi = azimuth_range
    a = np.radians(np.linspace(lo, hi, azimuths, endpoint=hi - lo < 360.0))[None, :]
    e, a = np.broadcast_arrays(e, a)
    pos = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], -1).reshape(-1, 3)
    return (distance * pos).astype(np.float32)


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
    min_fraction: float = 0.0,
) -> tuple[np.ndarray, int]:
    """The SDF grid with its solid {d < 0} cleaned (largest parts, none under ``min_fraction`` of the largest,
    closing of radius ``close_radius`` in world units, cavities filled). Returns (values, number of voxels whose side
    changed); the input is returned unchanged when nothing changed. Within ``blend_voxels`` of a changed voxel d is
    the repaired solid's distance transform, blurred by a Gaussian of ``smooth_voxels`` voxels (0: none) so the patch
    is not a voxel staircase."""
    from scipy import ndimage

    occ = values < 0
    clean = keep_largest_components(occ, keep_components, min_fraction)
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
