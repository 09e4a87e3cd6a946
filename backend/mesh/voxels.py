"""Voxel operations on solids (boolean occupancy grids) and signed distance grids, with scipy.ndimage.

- ``keep_largest_components``: the n largest 26-connected parts, none under a fraction of the largest (floaters
  dropped);
- ``close_small_features``: morphological closing O <- erode(dilate(O, B_r), B_r) with a ball B_r of radius r:
  pits, cracks and tunnels narrower than about 2 r are filled, features wider than that are left alone (a torus's
  hole stays open when its radius is well above r); parts that must stay apart are closed one by one;
- ``fill_cavities``: enclosed voids (no path to the grid's border) become solid;
- ``clean_solid``: the above in order, the clean-up before a distance transform;
- ``carve_seen_space``: the solid a set of cameras sees in a density grid: all but the voxels enough cameras see in
  front of the depth where their rendered opacity reaches a level (space carving with rendered depth, by vote);
- ``signed_distance``: the Euclidean distance transform of both sides, with the surface half a voxel between an
  inside and an outside sample: d = edt(outside) - h/2 outside, d = -(edt(inside) - h/2) inside (h = voxel size);
- ``repair_sdf_grid``: all of the above applied to {d < 0} of a sampled SDF, with d replaced by the repaired solid's
  distance only around the voxels that changed, so the untouched surface keeps its sub-voxel position.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


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


def close_small_features(occ: np.ndarray, radius_voxels: float, keep_apart: int = 1) -> np.ndarray:
    """Morphological closing with a ball (pits, cracks and tunnels narrower than ~2 radius are filled).

    The grid is padded by the ball's reach first, so the closing does not stick to the box's faces. When the solid
    has 2 to ``keep_apart`` parts (26-connected), each part is closed on its own, so the closing never joins objects
    that stand apart ("a cube next to a sphere" with a gap narrower than 2 radius); with more parts than that, or
    ``keep_apart`` 1, the solid is closed as a whole (a crack through one object is bridged).
    """
    from scipy import ndimage

    if radius_voxels < 1 or not occ.any():
        return occ
    ball = ball_structure(radius_voxels)
    pad = ball.shape[0]

    def closed(solid):
        padded = np.pad(solid, pad)
        return ndimage.binary_erosion(ndimage.binary_dilation(padded, ball), ball)[pad:-pad, pad:-pad, pad:-pad]

    if keep_apart > 1:
        labels, count = ndimage.label(occ, structure=np.ones((3, 3, 3), bool))
        if 1 < count <= keep_apart:
            return np.logical_or.reduce([closed(labels == i) for i in range(1, count + 1)]) | occ
    return closed(occ) | occ


def clean_solid(
    occ: np.ndarray,
    spacing: float,
    keep_components: int | None,
    close_radius: float,
    min_fraction: float = 0.0,
    keep_apart: int = 1,
    fill: bool = True,
) -> np.ndarray:
    """The clean-up of a solid before its distance transform (``close_radius`` in world units, ``spacing`` the voxel
    size): the ``keep_components`` largest parts (none under ``min_fraction`` of the largest); pits and tunnels
    narrower than 2 ``close_radius`` closed without joining up to ``keep_apart`` parts; enclosed cavities filled."""
    occ = keep_largest_components(occ, keep_components, min_fraction)
    occ = close_small_features(occ, close_radius / spacing, keep_apart)
    return fill_cavities(occ) if fill else occ


def fill_cavities(occ: np.ndarray) -> np.ndarray:
    """Fill enclosed voids (empty voxels not connected to the grid's border)."""
    from scipy import ndimage

    return ndimage.binary_fill_holes(occ)


def _camera_frame(viewpoint) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(position c, forward f towards the origin, right r, up u) of a camera at ``viewpoint`` looking at the origin."""
    import torch

    c = torch.as_tensor(viewpoint, dtype=torch.float32)
    f = -c / c.norm()
    side = torch.tensor([0.0, 0.0, 1.0]) if abs(float(f[2])) < 0.99 else torch.tensor([1.0, 0.0, 0.0])
    r = torch.nn.functional.normalize(torch.linalg.cross(f, side), dim=0)
    return c, f, r, torch.linalg.cross(r, f)


def rendered_depth(
    density: np.ndarray, lo: float, spacing: float, viewpoint, pixels: int, opacity: float = 0.5
) -> tuple[torch.Tensor, float]:
    """(depth image (P, P), half-width T of its tangent plane) of a density grid seen from ``viewpoint``: per pixel
    ray o + s v, the distance s at which the accumulated opacity 1 - exp(-int_0^s density) first reaches
    ``opacity`` (inf where it never does), with density interpolated trilinearly between the grid samples (sample
    0 at ``lo`` on every axis; zero outside the grid) and s stepped by h / 2. Pixel (i, j) looks along
    normalize(f + x r + y u) with x, y the pixel centres on [-T, T], T = tan of the angle the grid's corner sphere
    subtends."""
    import torch

    n = density.shape[0]
    c, f, r, u = _camera_frame(viewpoint)
    corner = math.sqrt(3.0) * max(abs(lo), abs(lo + spacing * (n - 1)))
    half = math.tan(math.asin(min(corner / float(c.norm()), 0.999)))
    t = (torch.arange(pixels, dtype=torch.float32) + 0.5) / pixels * 2 * half - half
    y, x = torch.meshgrid(-t, t, indexing="ij")
    dirs = torch.nn.functional.normalize(f + x[..., None] * r + y[..., None] * u, dim=-1).reshape(-1, 3)
    step = 0.5 * spacing
    s = float(c.norm()) - corner + step * torch.arange(int(math.ceil(2 * corner / step)) + 1, dtype=torch.float32)
    grid = torch.from_numpy(np.ascontiguousarray(density, np.float32))[None, None]
    depth = torch.full((len(dirs),), float("inf"))
    for rows in torch.arange(len(dirs)).split(max(1, 2_000_000 // len(s))):
        pts = c + s[None, :, None] * dirs[rows, None, :]  # (R, S, 3)
        g = ((pts - lo) / (spacing * (n - 1)) * 2 - 1).flip(-1)  # grid_sample reads (z, y, x) for (X, Y, Z)
        sigma = torch.nn.functional.grid_sample(grid, g[None, :, :, None, :], align_corners=True)[0, 0, :, :, 0]
        reached = (1 - torch.exp(-torch.cumsum(sigma.clamp_min(0) * step, -1))) >= opacity
        first = torch.where(reached.any(-1), reached.float().argmax(-1), -1)
        depth[rows] = torch.where(first >= 0, s[first.clamp_min(0)], torch.tensor(float("inf")))
    return depth.view(pixels, pixels), half


def carve_seen_space(
    density: np.ndarray,
    lo: float,
    spacing: float,
    viewpoints: np.ndarray,
    opacity: float = 0.2,
    margin_voxels: float = 0.5,
    min_views: int = 1,
    keep_apart: int = 1,
) -> np.ndarray:
    """The solid the cameras at ``viewpoints`` (K, 3) see in a density grid: every voxel is inside except those that
    at least ``min_views`` cameras see as empty space, i.e. nearer than the ``rendered_depth`` of the pixel it
    projects to (less ``margin_voxels`` h; the least depth of the 2 x 2 pixel centres around it, so a silhouette's
    edge is not carved away).

    ``min_views`` > 1 is a voting visual hull: a pinhole in a shell (a patch of fog below ``opacity``) lets the few
    cameras aligned with it see through, and with one vote they carve a tunnel each, hollowing the object out;
    space truly outside, or a hole the object really has, is seen empty from a whole range of directions. A narrow
    gap between two objects is seen through by only a few cameras, though, so with ``keep_apart`` > 1 the votes
    never join the ``keep_apart`` largest parts of the one-vote solid (``without_joins``).

    A fog whose density never passes a threshold point by point but that renders opaque (what score distillation
    often leaves of thin parts) still becomes a solid where it looks opaque; a hollow that no camera sees into, such
    as the inside of a shell open underneath when the cameras orbit above it, becomes solid too; a hole the cameras
    see through (a torus's) stays open."""
    if min_views < 1:
        raise ValueError(f"min_views is {min_views}; a voxel is carved when at least 1 camera (or more) sees it empty")
    return solid_of_votes(
        seen_empty_views(density, lo, spacing, viewpoints, opacity, margin_voxels), min_views, keep_apart
    )


def solid_of_votes(empty_views: np.ndarray, min_views: int, keep_apart: int = 1) -> np.ndarray:
    """``carve_seen_space``'s solid from ``seen_empty_views``' counts: the voxels fewer than ``min_views`` cameras
    see empty, never joining the ``keep_apart`` largest parts of the one-vote solid."""
    solid = empty_views < min_views
    if min_views > 1 and keep_apart > 1:
        solid = without_joins(solid, empty_views < 1, keep_apart)
    return solid


def seen_empty_views(
    density: np.ndarray, lo: float, spacing: float, viewpoints: np.ndarray, opacity: float, margin_voxels: float = 0.5
) -> np.ndarray:
    """Per voxel, how many of the cameras at ``viewpoints`` see it as empty space (``carve_seen_space``), int32."""
    import torch

    n = density.shape[0]
    axis = torch.arange(n, dtype=torch.float32) * spacing + lo
    pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    pixels = n
    empty_views = torch.zeros(len(pts), dtype=torch.int32)
    for viewpoint in np.asarray(viewpoints, np.float32):
        depth, half = rendered_depth(density, lo, spacing, viewpoint, pixels, opacity)
        c, f, r, u = _camera_frame(viewpoint)
        q = pts - c
        z = q @ f
        col = ((q @ r) / z + half) / (2 * half) * pixels - 0.5  # pixel centres at whole numbers
        row = (half - (q @ u) / z) / (2 * half) * pixels - 0.5
        nearest = torch.full((len(pts),), float("inf"))
        for dc in (0, 1):  # the least depth of the 2 x 2 pixel centres around the voxel's projection
            for dr in (0, 1):
                ci = (col.floor().long() + dc).clamp(0, pixels - 1)
                ri = (row.floor().long() + dr).clamp(0, pixels - 1)
                nearest = torch.minimum(nearest, depth[ri, ci])
        empty_views += q.norm(dim=-1) < nearest - margin_voxels * spacing
    return empty_views.view(density.shape).numpy()


def without_joins(solid: np.ndarray, core: np.ndarray, parts: int) -> np.ndarray:
    """``solid`` (a superset of ``core``) less the voxels by which it would join the ``parts`` largest 26-connected
    parts of ``core``: every voxel of ``solid`` belongs to the part nearest it (Euclidean distance transform), and a
    voxel not in ``core`` that touches a voxel of another part is dropped, so no two parts touch."""
    from scipy import ndimage

    labels, count = ndimage.label(core, structure=np.ones((3, 3, 3), bool))
    if count < 2 or parts < 2:
        return solid
    sizes = np.bincount(labels.ravel())[1:]
    kept = np.argsort(-sizes, kind="stable")[:parts] + 1
    seeds = np.isin(labels, kept)
    nearest = ndimage.distance_transform_edt(~seeds, return_distances=False, return_indices=True)
    owner = np.where(solid, labels[tuple(nearest)], 0)
    touches_another = np.zeros_like(solid)
    cube = np.ones((3, 3, 3), bool)
    for label in kept:
        mine = owner == label
        touches_another |= mine & ndimage.binary_dilation((owner > 0) & ~mine, cube)
    return solid & ~(touches_another & ~core)


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
    keep_apart: int = 1,
) -> tuple[np.ndarray, int]:
    """The SDF grid with its solid {d < 0} cleaned (``clean_solid``: largest parts, none under ``min_fraction`` of the
    largest, closing of radius ``close_radius`` in world units that joins none of up to ``keep_apart`` parts,
    cavities filled). Returns (values, number of voxels whose side
    changed); the input is returned unchanged when nothing changed. Within ``blend_voxels`` of a changed voxel d is
    the repaired solid's distance transform, blurred by a Gaussian of ``smooth_voxels`` voxels (0: none) so the patch
    is not a voxel staircase."""
    from scipy import ndimage

    occ = values < 0
    clean = clean_solid(occ, spacing, keep_components, close_radius, min_fraction, keep_apart, fill)
    changed = clean != occ
    n_changed = int(changed.sum())
    if n_changed == 0:
        return values, 0
    region = ndimage.binary_dilation(changed, iterations=max(1, blend_voxels))
    patch = signed_distance(clean, spacing)
    if smooth_voxels > 0:
        patch = ndimage.gaussian_filter(patch, smooth_voxels)
    return np.where(region, patch, values).astype(np.float32), n_changed
