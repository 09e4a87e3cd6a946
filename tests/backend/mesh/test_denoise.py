"""Feature-preserving denoising (mesh/denoise.py): bumps go, creases and connectivity stay."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamstill.backend.mesh import Mesh
from dreamstill.backend.mesh.cleanup import axis_aligned_area_share, mesh_sdf, smooth_vertex_normals, topology
from dreamstill.backend.mesh.denoise import DenoiseSettings, denoise_mesh, fit_vertices, mean_edge

HALF = 0.4


def box_sdf(x: np.ndarray) -> np.ndarray:
    q = np.abs(x) - HALF
    return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)


def bumpy(mesh: Mesh, amplitude: float, seed: int = 0) -> Mesh:
    """``mesh`` with its vertices pushed along their normals by smooth bumps about 0.1 wide and a little noise."""
    rng = np.random.default_rng(seed)
    v = mesh.vertices.astype(np.float64)
    bumps = np.sin(31.0 * v[:, 0] + 1.0) * np.sin(29.0 * v[:, 1] + 2.0) * np.sin(27.0 * v[:, 2] + 3.0)
    offset = amplitude * (bumps + 0.3 * rng.standard_normal(len(v)))
    return mesh.copy(vertices=(v + offset[:, None] * smooth_vertex_normals(mesh)).astype(np.float32))


@pytest.fixture(scope="module")
def cube() -> Mesh:
    return mesh_sdf(lambda x: torch.from_numpy(box_sdf(x.double().numpy())).float(), 1.0, resolution=40)


def test_a_bumpy_cube_gets_its_flat_faces_back_and_keeps_its_edges_and_topology(cube):
    noisy = bumpy(cube, 0.02)
    clean = denoise_mesh(noisy)
    assert axis_aligned_area_share(cube, 15.0) > 0.9
    assert axis_aligned_area_share(noisy, 15.0) < 0.5
    assert axis_aligned_area_share(clean, 15.0) > 0.9
    # nearer the true surface than the noisy mesh, and not shrunk: the edges are not rounded off
    assert np.abs(box_sdf(clean.vertices)).mean() < 0.3 * np.abs(box_sdf(noisy.vertices)).mean()
    assert abs(np.abs(clean.vertices).max(axis=0) - HALF).max() < 0.02
    assert topology(clean).as_dict() == topology(noisy).as_dict()
    np.testing.assert_array_equal(clean.faces, noisy.faces)


def test_a_smooth_sphere_stays_round_and_a_bumpy_one_comes_nearer_its_radius():
    radius = 0.45
    ball = mesh_sdf(lambda x: x.norm(dim=-1) - radius, 1.0, resolution=40)
    off_sphere = lambda m: np.abs(np.linalg.norm(m.vertices, axis=1) - radius).mean()  # noqa: E731
    smooth = denoise_mesh(ball)
    assert off_sphere(smooth) < off_sphere(ball) + 0.002
    assert np.linalg.norm(smooth.vertices, axis=1).mean() == pytest.approx(radius, abs=0.005)
    noisy = bumpy(ball, 0.01)
    assert off_sphere(denoise_mesh(noisy)) < 0.6 * off_sphere(noisy)


def test_vertices_fitted_to_a_plane_normal_return_to_the_plane():
    """A flat 5x5 grid, its middle vertex lifted by 0.1: with every face normal (0, 0, 1) the vertex update moves
    it to its faces' mean centroid height, 0.1 / 3 (it is a third of each of them), and repeated steps flatten the
    grid into one plane near z = 0, moving vertices along the normal only."""
    xs, ys = np.meshgrid(np.arange(5.0), np.arange(5.0), indexing="ij")
    vertices = np.stack([xs.ravel(), ys.ravel(), np.zeros(25)], axis=1)
    idx = np.arange(25).reshape(5, 5)
    quads = np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], axis=-1).reshape(-1, 4)
    faces = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    vertices[12, 2] = 0.1
    normals = np.tile([0.0, 0.0, 1.0], (len(faces), 1))
    fitted = fit_vertices(vertices, faces, normals, iterations=1)
    assert fitted[12, 2] == pytest.approx(0.1 / 3.0)
    # its neighbours rise by its share of their faces' centroids, never past it; the far corner stays
    assert np.all(fitted[:, 2] >= -1e-12) and np.all(fitted[:, 2] <= 0.1 / 3.0 + 1e-12)
    assert fitted[0, 2] == 0.0
    flat = fit_vertices(vertices, faces, normals, iterations=300)[:, 2]
    assert flat.max() - flat.min() < 1e-4 and 0.0 < flat.mean() < 0.01
    np.testing.assert_allclose(fitted[:, :2], vertices[:, :2])  # along the normal only


def test_no_settings_or_a_coarse_mesh_leave_the_mesh_as_it_is(cube):
    assert denoise_mesh(cube, None) is cube
    assert mean_edge(cube) < DenoiseSettings().sigma_s
    coarse = DenoiseSettings(sigma_s=0.8 * mean_edge(cube))
    assert denoise_mesh(cube, coarse) is cube
    assert DenoiseSettings().sigma_r < 2**0.5 / 3  # a right-angle crease (|n_i - n_j| = sqrt 2) is > 3 sigma_r
