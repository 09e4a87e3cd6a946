"""Meshing a signed distance field and cleaning the mesh for export: the surface stage's last steps.

SDF meshing. Marching cubes (skimage's Lewiner variant) of d at level 0 on a regular grid over the box
[-bound, bound]^3, padded by one layer of +1 (outside), so every surface inside the box is closed: the result is
watertight and consistently oriented (outward) by construction.

Clean-up, in order (``clean_mesh``):
  - weld duplicate vertices and drop degenerate and duplicate faces (trimesh);
  - keep the ``keep_components`` largest connected parts by area (1 for a single object; the caller passes the
    number of objects in a composition such as "a red cube next to a blue sphere"; None keeps all);
  - fill holes whose boundary loop has at most ``max_hole_edges`` edges, with a fan around the loop's centroid;
  - orient faces consistently outward (trimesh.repair.fix_normals).

``topology`` reports what an artist checks: vertices, faces, connected components, the Euler number
chi = V - E + F (2 for one closed sphere-like part, 0 for a torus), the genus of a closed part g = (2 - chi) / 2
summed over parts, watertightness, and the boundary edges left. ``smooth_vertex_normals`` gives area-weighted
vertex normals (compute them on the welded mesh, before a UV unwrap splits vertices along seams).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .types import EmptyFieldError, Mesh

SDFFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Topology:
    vertices: int
    faces: int
    components: int
    euler: int  # V - E + F of the whole mesh
    genus: int | None  # sum over closed parts of (2 - chi_part) / 2; None when the mesh has boundary edges
    watertight: bool
    boundary_edges: int

    def as_dict(self) -> dict:
        return asdict(self)


def _trimesh(mesh: Mesh):
    import trimesh

    return trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)


def topology(mesh: Mesh) -> Topology:
    """Counts of ``mesh`` (see the module docstring), from its edges as integer keys a * V + b (a < b): an edge of
    one face is a boundary edge, a mesh is watertight when every edge has two faces (trimesh's rule), and the parts
    are the connected components of the edge graph, each with its own chi = V - E + F for the genus."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    faces = np.asarray(mesh.faces, np.int64)
    v_count = mesh.num_vertices
    if len(faces) == 0:
        return Topology(v_count, 0, 0, v_count, None, False, 0)
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    keys, first, counts = np.unique(edges[:, 0] * v_count + edges[:, 1], return_index=True, return_counts=True)
    unique_edges = edges[first]
    boundary = int((counts == 1).sum())
    graph = coo_matrix((np.ones(len(keys), np.int8), (unique_edges[:, 0], unique_edges[:, 1])), (v_count, v_count))
    _, label = connected_components(graph, directed=False)
    used = np.unique(faces)
    part_ids, part_of_vertex = np.unique(label[used], return_inverse=True)  # parts with faces only
    part = np.zeros(v_count, np.int64)
    part[used] = part_of_vertex
    n_parts = len(part_ids)
    chi = (
        np.bincount(part[used], minlength=n_parts)
        - np.bincount(part[unique_edges[:, 0]], minlength=n_parts)
        + np.bincount(part[faces[:, 0]], minlength=n_parts)
    )
    return Topology(
        vertices=v_count,
        faces=len(faces),
        components=n_parts,
        euler=int(v_count - len(keys) + len(faces)),
        genus=int(((2 - chi) // 2).sum()) if boundary == 0 else None,
        watertight=bool((counts == 2).all()),
        boundary_edges=boundary,
    )


NARROW_BAND_MIN_RESOLUTION = 32  # finer grids are sampled coarse first, then exactly only near the surface
NARROW_BAND_CELLS = 3.0  # half-width of the exactly sampled band, in coarse cells (sdf_grid's docstring)


@torch.no_grad()
def sdf_grid(sdf_fn: SDFFn, bound: float, resolution: int, chunk: int = 65536, device=None) -> np.ndarray:
    """d on the resolution^3 grid over [-bound, bound]^3 (ij indexing), float32; NaN counts as outside.

    Narrow band: from NARROW_BAND_MIN_RESOLUTION up, d is sampled on a coarse grid of ceil(n / 2) per side, spacing
    h_c, and upsampled trilinearly to the n^3 grid (d_up); sdf_fn is evaluated again only at the nodes with
    |d_up| < NARROW_BAND_CELLS h_c, the rest keep d_up. For a distance (|grad d| = 1, which the eikonal term
    keeps) d_up is a mean of coarse corners within sqrt(3) h_c of the node, so |d_up - d| <= sqrt(3) h_c: every node
    outside the band has d's sign, and every node of a cell that d crosses (|d| <= sqrt(3) h_c / 2) is in it, so
    marching cubes sees the same surface. It costs the coarse grid (1/8) plus the band (a few % of the box)."""
    from .extract import _infer_device, evaluate_points, sample_density_grid

    device = torch.device(device) if device is not None else _infer_device(sdf_fn)
    axis = np.linspace(-bound, bound, resolution, dtype=np.float64).astype(np.float32)

    def finite(x):  # a diverged sample reads as far outside, never as a surface
        return torch.nan_to_num(sdf_fn(x).float(), nan=1.0, posinf=1.0, neginf=-1.0)

    if resolution < NARROW_BAND_MIN_RESOLUTION:
        return sample_density_grid(finite, [axis] * 3, chunk, device)
    coarse_n = (resolution + 1) // 2
    coarse_axis = np.linspace(-bound, bound, coarse_n, dtype=np.float64).astype(np.float32)
    coarse = torch.from_numpy(sample_density_grid(finite, [coarse_axis] * 3, chunk, device))
    up = torch.nn.functional.interpolate(
        coarse[None, None], size=(resolution,) * 3, mode="trilinear", align_corners=True
    )
    values = up[0, 0].numpy()
    band = np.argwhere(np.abs(values) < NARROW_BAND_CELLS * 2 * bound / (coarse_n - 1))
    if len(band):
        values[tuple(band.T)] = evaluate_points(finite, axis[band], chunk, device, "sdf")
    return values


def marching_cubes_sdf(values: np.ndarray, bound: float) -> Mesh:
    """Triangulate {d = 0} of a grid over [-bound, bound]^3; outward faces, closed inside the box."""
    from skimage.measure import marching_cubes

    n = values.shape[0]
    if values.shape != (n, n, n):
        raise ValueError(f"the SDF grid must be a cube (n, n, n), got {values.shape}")
    h = 2.0 * bound / (n - 1)
    if not (values < 0).any():
        raise EmptyFieldError(f"The SDF has no inside on the {n}^3 grid (smallest d {float(values.min()):.4g} >= 0).")
    padded = np.pad(np.nan_to_num(values, nan=1.0), 1, mode="constant", constant_values=1.0)
    verts, faces, _, _ = marching_cubes(
        padded, level=0.0, spacing=(h, h, h), gradient_direction="descent", allow_degenerate=False
    )
    verts = verts - h - bound  # undo the pad and move sample 0 to -bound
    return Mesh(vertices=verts.astype(np.float32), faces=faces.astype(np.int32))


def mesh_sdf(sdf_fn: SDFFn, bound: float, resolution: int = 128, chunk: int = 65536, device=None) -> Mesh:
    """Marching cubes of d = sdf_fn(x) at level 0 over the box (watertight inside it). Raises EmptyFieldError."""
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8 samples per side, got {resolution}")
    return marching_cubes_sdf(sdf_grid(sdf_fn, bound, resolution, chunk, device), bound)


def keep_largest_parts(mesh: Mesh, n: int | None, min_fraction: float = 0.0) -> tuple[Mesh, int]:
    """The ``n`` largest connected parts by area (all when n is None), less any part whose area is under
    ``min_fraction`` of the largest's; returns (mesh, parts removed)."""
    if n is not None and n < 1:
        raise ValueError(f"keep_components is {n}; use None (keep all) or the number of objects (>= 1)")
    if (n is None and min_fraction <= 0) or mesh.num_faces == 0:
        return mesh, 0
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    f = mesh.faces
    rows, cols = np.concatenate([f[:, 0], f[:, 1]]), np.concatenate([f[:, 1], f[:, 2]])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(mesh.num_vertices,) * 2)
    count, labels = connected_components(graph, directed=False)
    face_label = labels[f[:, 0]]
    area = np.bincount(face_label, weights=mesh.face_areas(), minlength=count)
    present = np.unique(face_label)
    order = present[np.argsort(-area[present], kind="stable")][: len(present) if n is None else n]
    keep = order[area[order] >= min_fraction * area[order[0]]]
    if len(keep) == len(present):
        return mesh, 0
    return _subset_faces(mesh, np.isin(face_label, keep)), len(present) - len(keep)


def _subset_faces(mesh: Mesh, face_mask: np.ndarray) -> Mesh:
    faces = mesh.faces[face_mask]
    used = np.unique(faces)
    remap = np.full(mesh.num_vertices, -1, np.int64)
    remap[used] = np.arange(len(used))
    colors = None if mesh.vertex_colors is None else mesh.vertex_colors[used]
    return Mesh(vertices=mesh.vertices[used], faces=remap[faces], vertex_colors=colors)


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """Closed loops of boundary edges (edges used by one face), each as an ordered vertex array following the
    faces' winding. Vertices where several loops touch are walked in an arbitrary but valid order."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    key = np.sort(edges, axis=1)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    directed = edges[counts[inverse.ravel()] == 1]
    nxt: dict[int, list[int]] = {}
    for a, b in directed:
        nxt.setdefault(int(a), []).append(int(b))
    loops = []
    while nxt:
        start = next(iter(nxt))
        loop, v = [start], start
        while True:
            w = nxt[v].pop()
            if not nxt[v]:
                del nxt[v]
            if w == start:
                break
            loop.append(w)
            v = w
            if v not in nxt:  # an open chain (non-manifold input): give up on this one
                loop = []
                break
        if loop:
            loops.append(np.array(loop, np.int64))
    return loops


def fill_small_holes(mesh: Mesh, max_hole_edges: int = 64) -> tuple[Mesh, int]:
    """Close every boundary loop of at most ``max_hole_edges`` edges with a fan around its centroid (one new vertex
    per hole, faces wound to match the surrounding surface). Returns (mesh, holes filled)."""
    if mesh.num_faces == 0:
        return mesh, 0
    loops = [lp for lp in boundary_loops(mesh.faces) if 3 <= len(lp) <= max_hole_edges]
    if not loops:
        return mesh, 0
    verts, faces = [mesh.vertices], [mesh.faces]
    colors = None if mesh.vertex_colors is None else [mesh.vertex_colors]
    n = mesh.num_vertices
    for i, loop in enumerate(loops):
        centre = n + i
        verts.append(mesh.vertices[loop].mean(0, keepdims=True))
        if colors is not None:
            colors.append(mesh.vertex_colors[loop].mean(0, keepdims=True).round().astype(np.uint8))
        # the loop follows the existing faces' winding (a -> b on a face), so the patch must run b -> a
        faces.append(np.stack([np.roll(loop, -1), loop, np.full(len(loop), centre)], axis=1))
    return (
        Mesh(
            vertices=np.concatenate(verts),
            faces=np.concatenate(faces),
            vertex_colors=None if colors is None else np.concatenate(colors),
        ),
        len(loops),
    )


def weld(mesh: Mesh) -> Mesh:
    """Merge coincident vertices; drop degenerate and duplicate faces (trimesh)."""
    tm = _trimesh(mesh)
    tm.merge_vertices()
    tm.update_faces(tm.nondegenerate_faces())
    tm.update_faces(tm.unique_faces())
    tm.remove_unreferenced_vertices()
    return Mesh(vertices=np.asarray(tm.vertices, np.float32), faces=np.asarray(tm.faces, np.int32))


def orient_outward(mesh: Mesh) -> Mesh:
    """Consistent winding with outward normals per closed part (trimesh.repair.fix_normals)."""
    import trimesh

    tm = _trimesh(mesh)
    trimesh.repair.fix_normals(tm, multibody=True)
    return mesh.copy(faces=np.asarray(tm.faces, np.int32))


def clean_mesh(
    mesh: Mesh, keep_components: int | None = 1, max_hole_edges: int = 64, min_fraction: float = 0.0
) -> tuple[Mesh, dict]:
    """Weld, keep the largest parts (``keep_largest_parts``), fill small holes, orient outward. Returns (mesh, a
    report of what changed and the final ``topology``). Vertex colours are dropped (evaluate the field again at the
    new vertices)."""
    welded = weld(mesh.copy(vertex_colors=None))
    kept, removed = keep_largest_parts(welded, keep_components, min_fraction)
    filled, holes = fill_small_holes(kept, max_hole_edges)
    result = orient_outward(filled)
    report = {"removed_components": removed, "filled_holes": holes, **topology(result).as_dict()}
    return result, report


def smooth_vertex_normals(mesh: Mesh) -> np.ndarray:
    """(N, 3) unit vertex normals, the area-weighted mean of the adjacent faces' normals (trimesh)."""
    return np.asarray(_trimesh(mesh).vertex_normals, np.float32)


def with_smooth_normals(mesh: Mesh) -> Mesh:
    """``mesh`` carrying its smooth vertex normals (compute them on a welded mesh: a seam would crease them)."""
    return mesh.copy(normals=smooth_vertex_normals(mesh))


def follow_split(before: Mesh, after: Mesh) -> Mesh:
    """``after`` (``before`` with vertices duplicated, e.g. along UV seams, none moved) with ``before``'s normals:
    each vertex of ``after`` takes the normals of the vertex of ``before`` at the same position. ``after`` itself
    when ``before`` has no normals or some vertex of ``after`` is not a vertex of ``before``."""
    if before.normals is None or after.normals is not None:
        return after
    rows = np.concatenate([before.vertices, after.vertices])
    _, inverse = np.unique(rows, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    source = np.full(inverse.max() + 1, -1, np.int64)
    source[inverse[: before.num_vertices]] = np.arange(before.num_vertices)
    index = source[inverse[before.num_vertices :]]
    if (index < 0).any():
        return after
    return after.copy(normals=before.normals[index])


def axis_aligned_area_share(mesh: Mesh, degrees: float = 15.0, rotation_z_deg: float = 0.0) -> float:
    """Share of the surface area whose face normal lies within ``degrees`` of one of the six axis directions of a
    frame rotated by ``rotation_z_deg`` about Z (a cube's face directions)."""
    normal, area = mesh.face_normals_and_areas()
    th = np.deg2rad(rotation_z_deg)
    rot = np.array([[np.cos(th), np.sin(th), 0.0], [-np.sin(th), np.cos(th), 0.0], [0.0, 0.0, 1.0]])
    local = normal @ rot.T  # components in the rotated frame
    aligned = np.abs(local).max(axis=1) >= np.cos(np.deg2rad(degrees))
    total = area.sum()
    return float(area[aligned].sum() / total) if total > 0 else 0.0
