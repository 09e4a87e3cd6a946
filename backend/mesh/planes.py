"""Flat faces made flat: a light low-pass of the whole mesh, then its planar regions found and snapped onto their
planes; every curved surface keeps its shape.

Score distillation leaves a flat face (a cube's side, a cylinder's cap, a pyramid's facet) bumpy: its normals
scatter 5-15 degrees about the face's direction, and its rounded edges ripple. First ``taubin_iterations`` of
Taubin's lambda|mu smoothing (trimesh: lambda 0.5, mu -0.53, no shrinkage) take the ripples off, then a region is
grown greedily, largest first, on the faces not yet taken:
  1. direction n: of up to ``seeds`` faces drawn by area, the one whose normal has the most face area within
     ``normal_tolerance_deg`` of it (estimated on 4096 faces drawn by area); n is then the area-weighted mean normal
     of the free faces within the tolerance of it;
  2. support: the largest edge-connected set of faces within the tolerance of n, grown by the faces edge-connected
     to it whose centroids lie within ``distance_tolerance`` of its plane (a bump's flanks, the start of an edge);
  3. test: the support covers at least ``min_area_fraction`` of the mesh; it holds a disc of radius
     ``min_inscribed_radius`` (a centroid that far from every centroid outside it: a thin cylinder's band within the
     tolerance is narrower); it fills at least ``min_fill`` of its convex hull in the plane (a torus's top is a
     ring, about 0.6); and the quadric height field fitted to it in the plane's frame, h(u, v) = a u^2 + b uv +
     c v^2 + d u + e v + f (area-weighted least squares), has principal curvatures (the eigenvalues of
     [[2a, b], [b, 2c]]) of magnitude at most ``max_curvature``: a sphere's cap or a cylinder's strip has 1 / radius,
     a bumpy flat face's bumps average out. An accepted support is taken; a rejected one's core is not tried again.
Each vertex of an accepted region moves towards its plane n . x = d (a vertex of several regions: the nearest of
their planes, so no face collapses), x <- x - w (n . x - d) n with w = min(1, b / ``blend``), b its distance to the
nearest vertex outside the region: the face is flat inside and meets the rounded edge without a step.
Connectivity is kept: the Euler number, the parts and watertightness are those of the input. A mesh coarser than
``max_mean_edge`` (a low face budget's) is left as it is: there the faces themselves are the shape's curvature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .types import Mesh


@dataclass(frozen=True)
class PlaneSettings:
    """The module's symbols; distances in world units (the toy world's objects are about 0.8 across)."""

    taubin_iterations: int = 20
    normal_tolerance_deg: float = 20.0
    distance_tolerance: float = 0.02
    min_area_fraction: float = 0.02
    max_curvature: float = 0.5  # a plane here is flatter than a sphere of radius 2
    min_inscribed_radius: float = 0.08
    min_fill: float = 0.8
    blend: float = 0.06
    max_mean_edge: float = 0.06
    max_planes: int = 24
    seeds: int = 256
    seed: int = 0


@dataclass(frozen=True)
class PlanarRegion:
    faces: np.ndarray  # indices of the region's faces
    normal: np.ndarray  # (3,) unit
    offset: float  # the plane n . x = offset


def max_curvature(points: np.ndarray, weights: np.ndarray, normal: np.ndarray) -> float:
    """The largest principal curvature magnitude of the quadric height field fitted to ``points`` over the plane
    through their weighted mean with ``normal`` (the module's step 3); inf when too few points to fit it."""
    if len(points) < 6:
        return float("inf")
    u_axis, v_axis = plane_frame(normal)
    rel = points - np.average(points, axis=0, weights=weights)
    u, v, h = rel @ u_axis, rel @ v_axis, rel @ normal
    design = np.stack([u * u, u * v, v * v, u, v, np.ones_like(u)], axis=1)
    sqrt_w = np.sqrt(weights / weights.sum())[:, None]
    (a, b, c, *_), *_ = np.linalg.lstsq(design * sqrt_w, h * sqrt_w[:, 0], rcond=None)
    return float(np.abs(np.linalg.eigvalsh(np.array([[2 * a, b], [b, 2 * c]]))).max())


def planar_regions(mesh: Mesh, settings: PlaneSettings = PlaneSettings()) -> list[PlanarRegion]:
    """The accepted planar regions of ``mesh``, largest first (the module's steps 1-3)."""
    import trimesh

    vertices, faces = mesh.vertices.astype(np.float64), mesh.faces.astype(np.int64)
    normals, area = mesh.face_normals_and_areas()
    centroids = vertices[faces].mean(axis=1)
    pairs = trimesh.Trimesh(vertices, faces, process=False).face_adjacency
    cos_tol = np.cos(np.radians(settings.normal_tolerance_deg))
    rng = np.random.default_rng(settings.seed)
    free = np.ones(len(faces), bool)  # not yet in a region, nor in a rejected support's core
    min_area = settings.min_area_fraction * area.sum()
    regions = []
    while len(regions) < settings.max_planes and area[free].sum() >= min_area:
        candidates = np.flatnonzero(free & (area > 0))
        p = area[candidates] / area[candidates].sum()
        picks = rng.choice(candidates, size=min(settings.seeds, len(candidates)), replace=False, p=p)
        sample = rng.choice(candidates, size=4096, p=p)  # area-weighted: a count of them estimates an area
        support = (normals[picks] @ normals[sample].T > cos_tol).sum(axis=1)
        near = free & (normals @ normals[picks[int(np.argmax(support))]] > cos_tol)
        normal = (normals[near] * area[near, None]).sum(axis=0)
        normal /= np.linalg.norm(normal)
        aligned = free & (normals @ normal > cos_tol)
        if not aligned.any():  # the mean of a wide spread: none near it
            free &= ~near
            continue
        labels = edge_components(aligned, pairs)
        core = labels == np.argmax(np.bincount(labels[labels >= 0], weights=area[labels >= 0]))
        offset = np.average(centroids[core] @ normal, weights=area[core])
        grown = edge_components(
            free & (core | (np.abs(centroids @ normal - offset) < settings.distance_tolerance)), pairs
        )
        region = grown == grown[np.flatnonzero(core)[0]]
        accepted = (
            area[region].sum() >= min_area
            and inscribed_radius(centroids, region) >= settings.min_inscribed_radius
            and hull_fill(centroids[region], area[region] * np.abs(normals[region] @ normal), normal)
            >= settings.min_fill
            and max_curvature(centroids[region], area[region], normal) <= settings.max_curvature
        )
        free &= ~(region if accepted else core)  # a rejected support gives back the faces it grew by
        if accepted:
            offset = float(np.average(centroids[region] @ normal, weights=area[region]))
            regions.append(PlanarRegion(np.flatnonzero(region), normal, offset))
    return regions


def plane_frame(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors spanning the plane with unit ``normal``."""
    u = np.cross(normal, [1.0, 0.0, 0.0] if abs(normal[0]) < 0.9 else [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    return u, np.cross(normal, u)


def hull_fill(points: np.ndarray, projected_area: np.ndarray, normal: np.ndarray) -> float:
    """The faces' area projected on the plane over the area of their centroids' convex hull in it."""
    from scipy.spatial import ConvexHull, QhullError

    u, v = plane_frame(normal)
    try:
        hull = ConvexHull(np.stack([points @ u, points @ v], axis=1))
    except QhullError:  # all on a line
        return 0.0
    return float(projected_area.sum() / max(hull.volume, 1e-30))  # a 2-D hull's volume is its area


def inscribed_radius(centroids: np.ndarray, region: np.ndarray) -> float:
    """The largest distance from a centroid of ``region`` to the nearest centroid outside it (inf: none outside)."""
    from scipy.spatial import cKDTree

    if region.all():
        return float("inf")
    return float(cKDTree(centroids[~region]).query(centroids[region])[0].max())


def edge_components(mask: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Per face, the label of its edge-connected component among the faces in ``mask`` (-1 outside ``mask``);
    ``pairs`` (P, 2) are the faces sharing an edge."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    keep = mask[pairs[:, 0]] & mask[pairs[:, 1]]
    graph = sp.coo_matrix((np.ones(keep.sum()), (pairs[keep, 0], pairs[keep, 1])), shape=(len(mask), len(mask)))
    _, labels = connected_components(graph, directed=False)
    return np.where(mask, labels, -1)


def snap_to_planes(mesh: Mesh, regions: list[PlanarRegion], blend: float = 0.0) -> Mesh:
    """``mesh`` with the vertices of each region moved onto its plane, fully from ``blend`` inside the region's
    border and in proportion to their distance from it nearer the border (a vertex of several regions goes with
    the nearest of their planes)."""
    if not regions:
        return mesh
    from scipy.spatial import cKDTree

    x = mesh.vertices.astype(np.float64)
    gap = np.full(len(x), np.inf)  # signed distance to the nearest plane of the vertex's regions
    move = np.zeros_like(x)
    for r in regions:
        inside = np.zeros(len(x), bool)
        inside[mesh.faces[r.faces]] = True
        idx = np.flatnonzero(inside)
        d = x[idx] @ r.normal - r.offset
        nearer = np.abs(d) < np.abs(gap[idx])
        idx, d = idx[nearer], d[nearer]
        border = cKDTree(x[~inside]).query(x[idx])[0] if (~inside).any() else np.full(len(idx), np.inf)
        weight = np.clip(border / blend, 0.0, 1.0) if blend > 0 else np.ones(len(idx))
        gap[idx], move[idx] = d, -(weight * d)[:, None] * r.normal
    return mesh.copy(vertices=(x + move).astype(np.float32))  # copy drops the old vertex normals


def mean_edge(mesh: Mesh) -> float:
    """Mean length of the faces' edges (an edge of two faces counts twice)."""
    corners = mesh.vertices[mesh.faces].astype(np.float64)
    return float(np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=-1).mean())


def taubin_smooth(mesh: Mesh, iterations: int) -> Mesh:
    """``iterations`` steps of Taubin's lambda|mu smoothing (trimesh's filter_taubin)."""
    if iterations <= 0:
        return mesh
    import trimesh

    smoothed = trimesh.Trimesh(mesh.vertices.astype(np.float64), mesh.faces, process=False)
    trimesh.smoothing.filter_taubin(smoothed, iterations=iterations)
    return mesh.copy(vertices=np.asarray(smoothed.vertices, np.float32))


def flatten_planar_regions(mesh: Mesh, settings: PlaneSettings | None = PlaneSettings()) -> Mesh:
    """``mesh`` smoothed, then with its planar regions snapped flat (the module's steps); None: unchanged."""
    if settings is None or len(mesh.faces) == 0 or mean_edge(mesh) > settings.max_mean_edge:
        return mesh
    smoothed = taubin_smooth(mesh, settings.taubin_iterations)
    return snap_to_planes(smoothed, planar_regions(smoothed, settings), settings.blend)
