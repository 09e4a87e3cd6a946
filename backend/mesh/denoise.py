"""Feature-preserving mesh denoising: bilateral normal filtering (Zheng, Fu, Au and Tai 2011, "Bilateral Normal
Filtering for Mesh Denoising", the local iterative scheme), the vertices refitted to the filtered normals (Sun et al.
2007), then a few Taubin steps (trimesh) against the hairline ridges where filtered patches meet.

Face i has centroid c_i, unit normal n_i and area A_i. One filtering step replaces every normal by

    n_i <- normalize( sum_j A_j W_s(|c_i - c_j|) W_r(|n_i - n_j|) n_j ),   W_s(d) = exp(-d^2 / 2 sigma_s^2),
                                                                          W_r(d) = exp(-d^2 / 2 sigma_r^2),

over the faces j whose centroids lie within 2 sigma_s of c_i (i itself included). W_r keeps faces across a crease
(|n_i - n_j| = sqrt(2) at a right angle) out of each other's average, so a face's bumps are averaged away while its
edges stay. Each vertex x then moves towards the planes of its faces, keeping their filtered normals:

    x <- x + 1/|F(x)| sum_{f in F(x)} n_f (n_f . (c_f - x)),   repeated with c_f recomputed.

Connectivity is unchanged: the Euler number, the parts and watertightness are those of the input. A mesh too coarse
for sigma_s (mean edge longer than sigma_s: a low face budget) is left as it is, since there neighbouring faces
differ by the curvature itself and the filter would facet it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .types import Mesh


@dataclass(frozen=True)
class DenoiseSettings:
    """sigma_s in world units (the bumps it removes are up to about this wide), sigma_r on |n_i - n_j|; meshes with a
    mean edge longer than sigma_s are not filtered."""

    sigma_s: float = 0.06
    sigma_r: float = 0.3
    normal_iterations: int = 10
    vertex_iterations: int = 20
    taubin_iterations: int = 10


def face_frames(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centroids (F, 3), unit normals (F, 3), areas (F,))."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    cross = np.cross(b - a, c - a)
    area = 0.5 * np.linalg.norm(cross, axis=1)
    return (a + b + c) / 3.0, cross / np.maximum(2.0 * area, 1e-30)[:, None], area


def filtered_normals(vertices: np.ndarray, faces: np.ndarray, settings: DenoiseSettings) -> np.ndarray:
    """The face normals after ``settings.normal_iterations`` bilateral filtering steps (the module's first formula)."""
    import scipy.sparse as sp
    from scipy.spatial import cKDTree

    centroids, normals, area = face_frames(vertices, faces)
    tree = cKDTree(centroids)
    near = tree.sparse_distance_matrix(tree, 2.0 * settings.sigma_s, output_type="coo_matrix")
    n = len(faces)
    i = np.concatenate([near.row, np.arange(n)])  # the matrix leaves out the zero distances: each face to itself
    j = np.concatenate([near.col, np.arange(n)])
    d = np.concatenate([near.data, np.zeros(n)])
    spatial = area[j] * np.exp(-(d**2) / (2.0 * settings.sigma_s**2))
    for _ in range(settings.normal_iterations):
        normal_gap2 = np.maximum(2.0 - 2.0 * np.einsum("ij,ij->i", normals[i], normals[j]), 0.0)  # |n_i - n_j|^2
        weights = sp.csr_matrix((spatial * np.exp(-normal_gap2 / (2.0 * settings.sigma_r**2)), (i, j)), shape=(n, n))
        normals = weights @ normals
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-30)
    return normals


def fit_vertices(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, iterations: int) -> np.ndarray:
    """The vertices moved ``iterations`` times towards their faces' planes (the module's second formula)."""
    import scipy.sparse as sp

    incidence = sp.csr_matrix(
        (np.ones(faces.size), (faces.ravel(), np.repeat(np.arange(len(faces)), 3))), shape=(len(vertices), len(faces))
    )
    valence = np.maximum(np.asarray(incidence.sum(axis=1)).ravel(), 1.0)[:, None]
    # sum_f n_f n_f^T per vertex is fixed while the normals are: sum_f n_f (n_f . c_f) - (sum_f n_f n_f^T) x
    outer = (incidence @ (normals[:, :, None] * normals[:, None, :]).reshape(-1, 9)).reshape(-1, 3, 3)
    x = vertices.copy()
    for _ in range(iterations):
        centroids = x[faces].mean(axis=1)
        towards = incidence @ (normals * np.einsum("ij,ij->i", normals, centroids)[:, None])
        x += (towards - np.einsum("vij,vj->vi", outer, x)) / valence
    return x


def mean_edge(mesh: Mesh) -> float:
    """Mean length of the faces' edges (an edge shared by two faces counts twice)."""
    corners = mesh.vertices[mesh.faces].astype(np.float64)
    return float(np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=-1).mean())


def denoise_mesh(mesh: Mesh, settings: DenoiseSettings | None = DenoiseSettings()) -> Mesh:
    """``mesh`` with its vertices moved by feature-preserving denoising (connectivity and appearance kept; colours,
    UVs and normals are per vertex and stay with their vertices, normals should be recomputed). Unchanged when
    ``settings`` is None or the mesh is too coarse for them."""
    if settings is None or len(mesh.faces) == 0 or mean_edge(mesh) > settings.sigma_s:
        return mesh
    import trimesh

    vertices = mesh.vertices.astype(np.float64)
    faces = mesh.faces.astype(np.int64)
    normals = filtered_normals(vertices, faces, settings)
    vertices = fit_vertices(vertices, faces, normals, settings.vertex_iterations)
    if settings.taubin_iterations:
        smoothed = trimesh.Trimesh(vertices, faces, process=False)
        trimesh.smoothing.filter_taubin(smoothed, iterations=settings.taubin_iterations)
        vertices = np.asarray(smoothed.vertices)
    return Mesh(
        vertices=vertices.astype(np.float32),
        faces=mesh.faces,
        vertex_colors=mesh.vertex_colors,
        uvs=mesh.uvs,
        texture=mesh.texture,
        normals=None,
    )
