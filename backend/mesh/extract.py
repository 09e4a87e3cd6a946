"""Isosurface extraction from a density field: marching cubes, automatic threshold, coarse-to-fine box, floaters.

The field is two plain callables, so any representation works (NeRF, generator output, analytic test shapes):

    density_fn(points (N, 3) float32 torch, world frame) -> density (N,) volume density, >= 0
    albedo_fn(points (N, 3) float32 torch)               -> (N, 3)       albedo in [0, 1]

The surface is the level set S = {x : density(x) = level} of the density sampled on a regular grid, triangulated by
marching cubes (Lorensen & Cline 1987; skimage's Lewiner variant), with faces oriented so that normals point out of
the dense region (towards decreasing density).

Automatic threshold (``threshold=None``): match the rendered silhouette. Volume rendering makes a ray opaque
according to its optical depth D(r) = int density(r(s)) ds, with opacity 1 - exp(-D) (NeRF, Mildenhall et al. 2020,
Eq. 3). On the grid, every grid line along x, y and z is such a ray (D = h * sum of the density along it). Let

    n = #{rays with 1 - exp(-D) >= 1/2, i.e. D >= ln 2}          (the half-opaque silhouette, in rays)
    m(r) = max of the density along ray r.

The level is chosen so that the same number of rays meets the solid {density >= level}: the midpoint between the n-th and
(n+1)-th largest m(r). So the mesh's silhouettes along the three axes cover as many rays as the renders' half-opaque
silhouettes do. The rule has no units and no tuning constant: it gives a surface for a young, soft field (the initial
density blob, peak density ~ 10, renders as a solid ball and meshes as one), for a trained field with sharp walls (any
level inside the jump gives the same surface), it ignores faint fog that no ray sees as half opaque, and it does not
move with the grid resolution the way a per-sample rule (opacity = 1 - exp(-level delta) >= 1/2) would, nor with a
density spike the way a fraction-of-max rule would. (threestudio's default is a fixed level 25; its 'auto' is the
mean of the positive field.) The level is estimated on the coarse grid (on the fine grid when coarse-to-fine is off).
Hidden cavities are not seen by any ray and do not influence the level.

Coarse-to-fine: a ``coarse_resolution``^3 grid over the whole box [-bound, bound]^3 finds the occupied region
(density >= level); the fine grid covers only that region's bounding box padded by one coarse cell, with (nearly) cubic
cells whose edge is the box's longest side / (resolution - 1). A feature thinner than a coarse cell that falls
entirely between coarse samples outside that box can be missed; raise ``coarse_resolution`` or set it to 0 to use
the full box. If the coarse grid finds nothing, the fine grid covers the full box before giving up.

Floaters: connected components (through shared vertices) whose surface area is below ``min_component_fraction``
times the largest component's area are removed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .types import EmptyFieldError, ExtractedMesh

DensityFn = Callable[[torch.Tensor], torch.Tensor]
AlbedoFn = Callable[[torch.Tensor], torch.Tensor]

# Fewer faces than this is not a surface (an isolated occupied grid point alone yields 8 triangles).
MIN_FACES = 12


def silhouette_threshold(grid: np.ndarray, spacing) -> tuple[float | None, int, float]:
    """The automatic iso level of the module docstring, from a density grid with the given (3,) cell sizes.

    Returns (level or None when no axis ray is half opaque, n = number of half-opaque rays, largest optical depth).
    """
    depth = np.concatenate([grid.sum(axis=a, dtype=np.float64).ravel() * float(spacing[a]) for a in range(3)])
    peak = np.concatenate([grid.max(axis=a).ravel() for a in range(3)]).astype(np.float64)
    n = int(np.count_nonzero(depth >= math.log(2.0)))
    if n == 0:
        return None, 0, float(depth.max())
    peak = -np.sort(-peak)  # descending
    level = float(peak[n - 1]) if n == len(peak) else 0.5 * float(peak[n - 1] + peak[n])
    if not level > 0:  # a half-opaque ray has positive density somewhere, so only a degenerate tie gets here
        level = float(peak[n - 1])
    return level, n, float(depth.max())


def _infer_device(fn: Callable) -> torch.device:
    """The device of the module a bound method belongs to (``field.density``), else CPU."""
    owner = getattr(fn, "__self__", fn)
    params = getattr(owner, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


def _axes(lo: np.ndarray, hi: np.ndarray, counts: tuple[int, int, int]) -> list[np.ndarray]:
    return [np.linspace(lo[i], hi[i], counts[i], dtype=np.float64).astype(np.float32) for i in range(3)]


@torch.no_grad()
def evaluate_points(fn: Callable, points: np.ndarray, chunk: int, device: torch.device, what: str) -> np.ndarray:
    """Evaluate ``fn`` on (K, 3) float32 points in chunks; returns float32 numpy (K,) or (K, C)."""
    outs = []
    for start in range(0, len(points), chunk):
        x = torch.from_numpy(points[start : start + chunk]).to(device)
        y = fn(x)
        if not isinstance(y, torch.Tensor):
            y = torch.as_tensor(y)
        outs.append(y.detach().float().cpu().numpy())
    out = np.concatenate(outs, axis=0) if outs else np.zeros((0,), np.float32)
    if len(out) != len(points):
        raise ValueError(f"{what} returned {len(out)} values for {len(points)} points; it must map (N, 3) -> (N, ...)")
    return out


@torch.no_grad()
def sample_density_grid(density_fn: DensityFn, axes: list[np.ndarray], chunk: int, device: torch.device) -> np.ndarray:
    """The density on the grid axes[0] x axes[1] x axes[2] (ij indexing), float32, evaluated slab by slab along x.

    NaN densities count as empty (0) and +inf as the largest float32, so a diverged sample cannot poison marching
    cubes' interpolation.
    """
    xs, ys, zs = (torch.from_numpy(a).to(device) for a in axes)
    ny, nz = len(ys), len(zs)
    grid = np.empty((len(xs), ny, nz), np.float32)
    slab = max(1, chunk // (ny * nz))
    for i0 in range(0, len(xs), slab):
        sx = xs[i0 : i0 + slab]
        pts = torch.stack(torch.meshgrid(sx, ys, zs, indexing="ij"), dim=-1).reshape(-1, 3)
        density = density_fn(pts)
        if not isinstance(density, torch.Tensor):
            density = torch.as_tensor(density)
        if density.ndim == 2 and density.shape[1] == 1:
            density = density[:, 0]
        if density.shape != (len(pts),):
            raise ValueError(
                f"density_fn must map (N, 3) points to (N,) densities, got {tuple(density.shape)} for N={len(pts)}"
            )
        grid[i0 : i0 + len(sx)] = density.detach().float().cpu().numpy().reshape(len(sx), ny, nz)
    np.nan_to_num(grid, copy=False, nan=0.0, posinf=np.finfo(np.float32).max, neginf=0.0)
    return grid


def _fine_box(coarse: np.ndarray, axes: list[np.ndarray], level: float, bound: float):
    """Bounding box of the coarse samples with density >= level, padded by one coarse cell, clipped to the box."""
    occ = np.argwhere(coarse >= level)
    if len(occ) == 0:
        return None
    cell = np.array([a[1] - a[0] for a in axes], np.float32)
    lo = np.array([axes[i][occ[:, i].min()] for i in range(3)], np.float32) - cell
    hi = np.array([axes[i][occ[:, i].max()] for i in range(3)], np.float32) + cell
    return np.maximum(lo, -bound), np.minimum(hi, bound)


def _fine_counts(lo: np.ndarray, hi: np.ndarray, resolution: int) -> tuple[int, int, int]:
    """Samples per axis so that cells are (nearly) cubes of edge max(hi - lo) / (resolution - 1)."""
    ext = hi - lo
    h = float(ext.max()) / (resolution - 1)
    return tuple(int(max(2, round(float(e) / h) + 1)) for e in ext)


def marching_cubes_density(grid: np.ndarray, level: float, lo: np.ndarray, spacing: np.ndarray):
    """Triangulate {density = level} on a grid whose sample (0,0,0) sits at ``lo``; outward (down-gradient) faces.

    The grid is padded with one layer of zeros so that a shape touching the box is still closed.
    """
    from skimage.measure import marching_cubes

    padded = np.pad(grid, 1, mode="constant", constant_values=0.0)
    # gradient_direction="ascent": the object of interest has *larger* values inside, which orients faces outward.
    try:
        verts, faces, _, _ = marching_cubes(
            padded,
            level=float(level),
            spacing=tuple(float(s) for s in spacing),
            gradient_direction="ascent",
            allow_degenerate=False,
        )
    except RuntimeError as err:  # skimage's "No surface found at the given iso value" (seen on a near-empty field)
        raise EmptyFieldError(
            f"The surface at threshold {level:.4g} has no faces: marching cubes found none (largest density "
            f"{float(grid.max()):.4g}). Optimise for more steps, or pass a lower threshold."
        ) from err
    verts = verts - spacing[None, :] + lo[None, :]  # undo the pad's one-cell offset
    return verts.astype(np.float32), faces.astype(np.int32)


def remove_small_components(
    vertices: np.ndarray, faces: np.ndarray, min_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Drop connected parts whose area < ``min_fraction`` * the largest part's area.

    Returns (vertices, faces, kept_vertex_index (N',) into the input vertices, number of parts removed).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(vertices)
    if min_fraction <= 0 or len(faces) == 0:
        return vertices, faces, np.arange(n), 0
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n))
    n_comp, labels = connected_components(graph, directed=False)
    face_label = labels[faces[:, 0]]
    a, b, c = (vertices[faces[:, k]].astype(np.float64) for k in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    comp_area = np.bincount(face_label, weights=area, minlength=n_comp)
    has_faces = np.bincount(face_label, minlength=n_comp) > 0
    keep_comp = comp_area >= min_fraction * comp_area.max()
    removed = int(np.count_nonzero(has_faces & ~keep_comp))
    if removed == 0:
        used = np.unique(faces)
        if len(used) == n:
            return vertices, faces, np.arange(n), 0
    faces = faces[keep_comp[face_label]]
    used = np.unique(faces)
    remap = np.full(n, -1, np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[faces].astype(np.int32), used, removed


@dataclass
class _DensityGrid:
    """Density samples on a regular grid whose sample (0, 0, 0) sits at ``lo``, and what was learnt finding it."""

    values: np.ndarray  # (nx, ny, nz) float32
    lo: np.ndarray  # (3,) the first sample's corner of the box the grid covers
    hi: np.ndarray  # (3,)
    spacing: np.ndarray  # (3,) cell edges
    level: float | None  # the iso level: given, or automatic (None until found)
    max_seen: float  # the largest density seen on any grid
    max_depth: float  # the largest optical depth of an axis ray (automatic level only)


def _check_extract_arguments(bound, resolution, coarse_resolution, chunk, min_component_fraction, threshold):
    """The iso level asked for (None = automatic), after checking every argument of extract_mesh."""
    if not bound > 0:
        raise ValueError(f"bound must be > 0 (the half-size of the scene box), got {bound}")
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8 samples per side, got {resolution}")
    if coarse_resolution != 0 and coarse_resolution < 4:
        raise ValueError(f"coarse_resolution must be 0 (off) or >= 4, got {coarse_resolution}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if not 0 <= min_component_fraction <= 1:
        raise ValueError(f"min_component_fraction must be in [0, 1], got {min_component_fraction}")
    if isinstance(threshold, str):
        if threshold != "auto":
            raise ValueError(f"threshold must be a number, None or 'auto', got {threshold!r}")
        return None
    if threshold is None:
        return None
    if not float(threshold) > 0:
        raise ValueError(f"threshold must be a density > 0, got {float(threshold)}")
    return float(threshold)


def _sample_surface_grid(density_fn, bound, resolution, coarse_resolution, level, chunk, device) -> _DensityGrid:
    """The fine grid around the occupied region (coarse-to-fine, see the module docstring), with the automatic level
    estimated on the coarse grid when it sees a half-opaque ray, else on the fine grid (None when neither does)."""
    lo, hi = np.full(3, -bound, np.float32), np.full(3, bound, np.float32)
    max_seen, max_depth, auto = -np.inf, 0.0, level is None
    if coarse_resolution:
        coarse_axes = _axes(lo, hi, (coarse_resolution,) * 3)
        coarse = sample_density_grid(density_fn, coarse_axes, chunk, device)
        max_seen = float(coarse.max())
        if auto:
            level, _, max_depth = silhouette_threshold(coarse, [2.0 * bound / (coarse_resolution - 1)] * 3)
        box = _fine_box(coarse, coarse_axes, level, bound) if level is not None else None
        if box is not None:
            lo, hi = box
    counts = _fine_counts(lo, hi, resolution)
    spacing = np.array([(hi[i] - lo[i]) / (counts[i] - 1) for i in range(3)], np.float32)
    values = sample_density_grid(density_fn, _axes(lo, hi, counts), chunk, device)
    max_seen = max(max_seen, float(values.max()))
    if level is None:  # automatic, and the coarse grid saw no half-opaque ray (or coarse-to-fine is off)
        level, _, depth = silhouette_threshold(values, spacing)
        max_depth = max(max_depth, depth)
    return _DensityGrid(values, lo, hi, spacing, level, max_seen, max_depth)


def _check_surface_exists(grid: _DensityGrid, auto: bool) -> None:
    """EmptyFieldError, saying what was found and what to try, when nothing on the grid reaches the level."""
    if grid.level is None:
        raise EmptyFieldError(
            f"The field has no surface: no ray through the scene is even half opaque (largest optical depth "
            f"{grid.max_depth:.3g} < ln 2; largest density {grid.max_seen:.4g}). Optimise for more steps, or pass an "
            f"explicit threshold below the largest density (e.g. threshold={0.5 * max(grid.max_seen, 0):.4g})."
        )
    if not float(grid.values.max()) >= grid.level:
        how = "automatic (silhouette) threshold" if auto else "threshold"
        raise EmptyFieldError(
            f"The field has no surface: its largest density is {grid.max_seen:.4g}, below the {how} "
            f"{grid.level:.4g}, so nothing is solid. Optimise for more steps, or pass a lower threshold "
            f"(e.g. {0.5 * max(grid.max_seen, 0):.4g})."
        )


def extract_mesh(
    density_fn: DensityFn,
    bound: float,
    resolution: int = 128,
    threshold: float | None = None,
    albedo_fn: AlbedoFn | None = None,
    min_component_fraction: float = 0.05,
    chunk: int = 65536,
    coarse_resolution: int = 32,
    device: torch.device | str | None = None,
) -> ExtractedMesh:
    """Extract the surface {density = level} of a density field inside [-bound, bound]^3.

    Args:
        density_fn: (N, 3) float32 world points -> (N,) volume density.
        bound: half-size of the scene box.
        resolution: samples along the longest side of the fine grid (the fine box when coarse-to-fine is on).
        threshold: the iso level; None (or "auto") matches the rendered silhouette (see the module docstring).
        albedo_fn: optional (N, 3) -> (N, 3) albedo in [0, 1]; gives ``vertex_colors``.
        min_component_fraction: parts with area below this fraction of the largest part are removed (0 keeps all).
        chunk: points per call of the field.
        coarse_resolution: samples per side of the coarse grid (occupied box and automatic level); 0 = full box only.
        device: where to put the query points; default the device of the module ``density_fn`` is bound to, else CPU.

    Raises:
        EmptyFieldError: no ray is half opaque (automatic threshold) or nothing reaches the threshold, or fewer than
            MIN_FACES faces remain.
    """
    level = _check_extract_arguments(bound, resolution, coarse_resolution, chunk, min_component_fraction, threshold)
    device = torch.device(device) if device is not None else _infer_device(density_fn)
    grid = _sample_surface_grid(density_fn, bound, resolution, coarse_resolution, level, chunk, device)
    _check_surface_exists(grid, auto=level is None)
    verts, faces = marching_cubes_density(grid.values, grid.level, grid.lo, grid.spacing)
    verts = np.clip(verts, -bound, bound)
    verts, faces, _, removed = remove_small_components(verts, faces, min_component_fraction)
    if len(faces) < MIN_FACES:
        how = "threshold" if level is not None else "automatic (silhouette) threshold"
        raise EmptyFieldError(
            f"The surface at {how} {grid.level:.4g} has only {len(faces)} faces (fewer than {MIN_FACES}) at "
            f"resolution {resolution}: the field is almost empty (largest density {grid.max_seen:.4g}). Optimise for "
            f"more steps, pass a lower threshold, or raise the resolution."
        )
    return ExtractedMesh(
        vertices=verts,
        faces=faces,
        vertex_colors=None if albedo_fn is None else _vertex_colors(albedo_fn, verts, chunk, device),
        threshold=grid.level,
        box_min=grid.lo.copy(),
        box_max=grid.hi.copy(),
        removed_components=removed,
    )


def _vertex_colors(albedo_fn: AlbedoFn, verts: np.ndarray, chunk: int, device) -> np.ndarray:
    albedo = evaluate_points(albedo_fn, verts, chunk, device, "albedo_fn")
    if albedo.shape != (len(verts), 3):
        raise ValueError(f"albedo_fn must return (N, 3) colours in [0, 1], got shape {albedo.shape}")
    return albedo_to_uint8(albedo)


def albedo_to_uint8(albedo: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 by round(255 * clip(a, 0, 1)); NaN -> 0."""
    a = np.nan_to_num(np.asarray(albedo, np.float32), nan=0.0)
    return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
