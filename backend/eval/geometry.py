"""An asset's mesh against the toy world's true surface: Chamfer distance, normal angle, topology, size.

The mesh is first laid onto the truth in the IoU's normalisation (``metrics.align_occupancy``: centroids and RMS
radii of the two solids matched, the best rotation about Z; the truth's centroid and radius from its exact solid,
and the translation then refined by a few Gauss-Newton steps, ``distance_scores``), so every figure here is in the
truth's world units and blind to where the asset sits, how large it is and which way it faces. Then, with A the
mesh's surface and S the true surface (the zero set of the scene's exact signed distance phi,
``priors.builtin.exact_sdf``):

* Chamfer distance, the mean of the two directions of the mean nearest-surface distance (not squared):

      CD = 1/2 ( E_{a ~ A} |phi(a)|  +  E_{s ~ S} min_{a in A} |s - a| ),

  both expectations over points sampled uniformly by area. |phi| is the exact distance to S; the distance from s to
  the mesh is exact too (``point_to_mesh_distance``).
* Normal angle: the mean over a ~ A of the angle, in degrees, between the mesh's outward face normal n_A(a) and
  grad phi(a) / |grad phi(a)|, which for an exact distance is the true outward normal at the point of S nearest a.
  A face wound inside out counts as up to 180 degrees.
* Topology: the mesh's Euler number chi = V - E + F (vertices merged by position) against the truth's. A closed
  genus-g surface has chi = 2 - 2g: 2 per sphere-like object, 0 for a torus. Objects of a composition that touch
  (a cube resting on a sphere) form one solid, whose boundary's chi is read from the union thickened by ``CONTACT``
  (a point or face contact becomes a neck); a mesh that leaves them apart is as true at a point contact, so both
  values are accepted: the union's, and the sum over the objects alone. Connected components likewise.
* Faces: the triangle count, as the mesh is.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import numpy as np
import torch

SURFACE_SAMPLES = 20000  # points drawn on each surface
TRUTH_RESOLUTION = 128  # grid of the marching cubes that finds the true surface and its topology
CONTACT = 0.01  # world units: objects nearer than 2 * CONTACT count as touching


@dataclass(frozen=True)
class TrueSurface:
    """The truth of one prompt: points on its surface (N, 3); the Euler numbers and component counts a faithful mesh
    may have (one value, or two when objects touch: joined or apart); the solid's centroid (3,) and RMS radius."""

    points: np.ndarray
    euler: tuple[int, ...]
    components: tuple[int, ...]
    centre: torch.Tensor
    radius: float


def mesh_topology(vertices: np.ndarray, faces: np.ndarray) -> tuple[int, int]:
    """(Euler number V - E + F, connected components) of a triangle mesh, vertices at equal positions merged and
    vertices no face uses ignored (mesh.cleanup.topology's counts of the merged mesh)."""
    from ..mesh.cleanup import topology
    from ..mesh.types import Mesh

    faces = np.asarray(faces, np.int64)
    if len(faces) == 0:
        return 0, 0
    positions, merged = np.unique(np.asarray(vertices, np.float64), axis=0, return_inverse=True)
    used, f = np.unique(merged.reshape(-1)[faces], return_inverse=True)
    counts = topology(Mesh(positions[used].astype(np.float32), f.reshape(-1, 3)))
    return counts.euler, counts.components


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0):
    """(points (count, 3), outward unit face normals (count, 3)) drawn uniformly by area (trimesh, seeded)."""
    import trimesh

    mesh = trimesh.Trimesh(np.asarray(vertices, np.float64), np.asarray(faces, np.int64), process=False)
    points, face_index = trimesh.sample.sample_surface(mesh, count, seed=seed)
    tri = mesh.vertices[mesh.faces[face_index]]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return points, normals / np.linalg.norm(normals, axis=1, keepdims=True).clip(1e-12)


def point_to_mesh_distance(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, k: int = 16) -> np.ndarray:
    """Exact distance from each point (N, 3) to a triangle mesh: (N,).

    A k-d tree over the triangles' centroids proposes the k nearest; a triangle whose centroid is farther than
    ``d + reach`` (d the best distance found, reach the largest centroid-to-corner distance) cannot be nearer, so
    the points for which the k-th centroid is not that far are searched again over every such triangle."""
    from scipy.spatial import cKDTree
    from trimesh.triangles import closest_point

    tri = np.asarray(vertices, np.float64)[np.asarray(faces, np.int64)]
    points = np.asarray(points, np.float64)
    centroids = tri.mean(axis=1)
    reach = float(np.linalg.norm(tri - centroids[:, None], axis=-1).max())
    tree = cKDTree(centroids)
    k = min(k, len(tri))
    centroid_dist, idx = tree.query(points, k=k)
    centroid_dist, idx = centroid_dist.reshape(len(points), k), idx.reshape(len(points), k)
    rows = np.repeat(np.arange(len(points)), k)
    best = _pair_distances(points[rows], tri[idx.reshape(-1)], closest_point).reshape(-1, k).min(axis=1)
    unsure = np.flatnonzero(centroid_dist[:, -1] - reach < best) if k < len(tri) else np.empty(0, np.int64)
    if len(unsure):
        for chunk in np.array_split(unsure, max(1, len(unsure) // 512)):
            lists = tree.query_ball_point(points[chunk], best[chunk] + reach)
            counts = np.array([len(c) for c in lists])
            cand = np.concatenate([np.asarray(c, np.int64) for c in lists])
            rows = np.repeat(chunk, counts)
            d = _pair_distances(points[rows], tri[cand], closest_point)
            np.minimum.at(best, rows, d)
    return best


def _pair_distances(points: np.ndarray, triangles: np.ndarray, closest_point) -> np.ndarray:
    return np.linalg.norm(points - closest_point(triangles, points), axis=1)


def _marching_cubes(values: np.ndarray, level: float, lo: float, step: float):
    from skimage.measure import marching_cubes

    verts, faces, _, _ = marching_cubes(values, level=level, spacing=(step, step, step))
    return verts + lo, faces


def _truth_grid(scene, resolution: int) -> tuple[np.ndarray, float, float]:
    """Each object's exact signed distance on a grid over the world's bounding cube: (R, R, R, K), lo, step."""
    from ..priors.builtin import world
    from ..priors.builtin.exact_sdf import object_sdfs

    lo = -world.BOUND_RADIUS
    step = 2 * world.BOUND_RADIUS / (resolution - 1)
    ax = torch.linspace(lo, -lo, resolution)
    pts = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).view(-1, 3)
    band = 2 * step + 2 * CONTACT  # marching cubes reads values within a cell of its levels 0 and CONTACT
    values = torch.cat([object_sdfs(scene, chunk, band) for chunk in pts.split(131072)])
    return values.view(resolution, resolution, resolution, -1).numpy(), lo, step


@functools.lru_cache(maxsize=64)
def true_surface(prompt: str, count: int = SURFACE_SAMPLES, resolution: int = TRUTH_RESOLUTION) -> TrueSurface:
    """Points on the prompt's true surface and its topology (cached per prompt).

    The points are drawn on a marching-cubes mesh of phi and projected onto S by x <- x - phi(x) grad phi(x)
    (twice); points on a face where two objects touch (inside the union, not on its boundary) are dropped."""
    from ..priors.builtin import world
    from ..priors.builtin.exact_sdf import object_sdfs, scene_sdf_and_normal

    scene = world.parse_prompt(prompt)
    grid, lo, step = _truth_grid(scene, resolution)
    verts, faces = _marching_cubes(grid.min(-1), 0.0, lo, step)
    points, _ = sample_surface(verts, faces, count, seed=0)
    x = torch.from_numpy(points).double()
    for _ in range(2):
        phi, normal = scene_sdf_and_normal(scene, x)
        x = x - phi[:, None] * normal
    per_object = object_sdfs(scene, x)
    if per_object.shape[1] > 1:
        x = x[per_object.sort(-1).values[:, 1] > 1e-3]
    joined = mesh_topology(*_marching_cubes(grid.min(-1), CONTACT, lo, step))
    apart = [mesh_topology(*_marching_cubes(grid[..., k], 0.0, lo, step)) for k in range(grid.shape[-1])]
    euler = tuple(dict.fromkeys((joined[0], sum(e for e, _ in apart))))
    components = tuple(dict.fromkeys((joined[1], sum(c for _, c in apart))))
    centre, radius = _solid_moments(grid.min(-1), lo, step)
    return TrueSurface(x.numpy().astype(np.float64), euler, components, centre, radius)


def _solid_moments(phi: np.ndarray, lo: float, step: float) -> tuple[torch.Tensor, float]:
    """Centroid and RMS radius of the solid {phi < 0} from its signed distance on a grid, each sample weighted by the
    share of its cell inside, clamp(1/2 - phi / step, 0, 1): accurate to a small fraction of a cell, where a binary
    voxel count is off by up to half a cell (the IoU's 64^3 truth makes the cube's radius 2 % too large)."""
    w = torch.from_numpy(np.clip(0.5 - phi / step, 0.0, 1.0)).double()
    ax = lo + step * torch.arange(phi.shape[0], dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1)
    mass = w.sum()
    centre = (pts * w[..., None]).sum((0, 1, 2)) / mass
    radius = (((pts - centre) ** 2).sum(-1) * w).sum() / mass
    return centre.float(), float(radius.sqrt())


def topology_scores(vertices: np.ndarray, faces: np.ndarray, prompt: str) -> dict:
    """The mesh's faces, components and Euler number, the truth's Euler numbers, and whether the mesh's is one of
    them (topology_ok 1.0 or 0.0; 0.0 for a mesh without faces)."""
    truth = true_surface(prompt)
    euler, components = mesh_topology(vertices, faces)
    ok = len(faces) > 0 and euler in truth.euler
    return {
        "faces": int(len(faces)),
        "components": components,
        "euler": euler,
        "euler_expected": list(truth.euler),
        "topology_ok": float(ok),
    }


def refine_translation(scene, points: torch.Tensor, steps: int = 4, max_step: float = 0.05) -> torch.Tensor:
    """The shift delta (3,) that minimises sum_i phi(x_i + delta)^2 near delta = 0, by Gauss-Newton on the exact
    distance: phi(x + delta) ~ phi(x) + n(x) . delta, so delta <- delta - (N^T N + lambda I)^-1 N^T phi, each step at
    most ``max_step`` long (a local correction, not a search)."""
    from ..priors.builtin.exact_sdf import scene_sdf_and_normal

    delta = torch.zeros(3, dtype=torch.float64)
    for _ in range(steps):
        phi, n = scene_sdf_and_normal(scene, points + delta)
        a = n.T @ n
        a = a + 1e-6 * a.trace().clamp_min(1e-12) * torch.eye(3, dtype=a.dtype)
        step = -torch.linalg.solve(a, n.T @ phi)
        delta = delta + step * min(1.0, max_step / max(step.norm().item(), 1e-12))
    return delta


def distance_scores(vertices: np.ndarray, faces: np.ndarray, prompt: str, alignment=None, seed: int = 0) -> dict:
    """Chamfer distance and mean normal angle (degrees) of a mesh (with faces) made for ``prompt``.

    ``alignment`` (the IoU's metrics.Alignment) lays it onto the truth, with the truth's centroid and radius taken
    from the exact solid (``TrueSurface``) and then the translation refined (``refine_translation``): the IoU's voxel
    moments put a mesh of the true shape up to a fifth of a cell off, which would read as a Chamfer distance of
    0.005. Scale and rotation stay the IoU's. ``alignment`` None: the mesh is scored where it is."""
    from ..priors.builtin import world
    from ..priors.builtin.exact_sdf import scene_sdf_and_normal

    truth = true_surface(prompt)
    scene = world.parse_prompt(prompt)
    faces = np.asarray(faces, np.int64)
    if len(faces) == 0:
        raise ValueError("distance_scores: the mesh has no faces")
    verts = torch.as_tensor(np.asarray(vertices), dtype=torch.float64)
    points, normals = sample_surface(verts.numpy(), faces, len(truth.points), seed=seed)
    points = torch.from_numpy(points)
    if alignment is not None:
        moved = replace(alignment, truth_centre=truth.centre.double(), truth_radius=truth.radius)
        verts, points = moved.to_truth(verts), moved.to_truth(points)
        normals = normals @ _rotation_z(alignment.theta)  # rows: R_z(theta)^T n
        delta = refine_translation(scene, points)
        verts, points = verts + delta, points + delta
    phi, true_normal = scene_sdf_and_normal(scene, points)
    cos = (torch.from_numpy(normals) * true_normal).sum(-1).clamp(-1.0, 1.0)
    to_truth = phi.abs().mean().item()
    from_truth = float(point_to_mesh_distance(truth.points, verts.numpy(), faces).mean())
    return {"chamfer": 0.5 * (to_truth + from_truth), "normal_angle_deg": math.degrees(torch.arccos(cos).mean().item())}


def _rotation_z(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
