"""Flat faces made flat (mesh/planes.py): a bumpy box's six faces are found and flattened; a sphere's, a torus's and
a cylinder's curved sides are left curved, the cylinder's caps found; connectivity never changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamstill.backend.mesh import Mesh
from dreamstill.backend.mesh.cleanup import axis_aligned_area_share, mesh_sdf, smooth_vertex_normals, topology
from dreamstill.backend.mesh.planes import (
    PlanarRegion,
    PlaneSettings,
    flatten_planar_regions,
    max_curvature,
    planar_regions,
    snap_to_planes,
    taubin_smooth,
)

HALF = 0.4


def box_sdf(x: np.ndarray) -> np.ndarray:
    q = np.abs(x) - HALF
    return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)


def torch_sdf(fn):
    return lambda x: torch.from_numpy(fn(x.double().numpy())).float()


def bumpy(mesh: Mesh, amplitude: float) -> Mesh:
    """``mesh`` pushed along its vertex normals by smooth bumps about 0.1 wide."""
    v = mesh.vertices.astype(np.float64)
    bumps = np.sin(31.0 * v[:, 0] + 1.0) * np.sin(29.0 * v[:, 1] + 2.0) * np.sin(27.0 * v[:, 2] + 3.0)
    return mesh.copy(vertices=(v + amplitude * bumps[:, None] * smooth_vertex_normals(mesh)).astype(np.float32))


@pytest.fixture(scope="module")
def cube() -> Mesh:
    return mesh_sdf(torch_sdf(box_sdf), 1.0, resolution=64)


def test_a_bumpy_boxs_six_faces_are_found_and_flattened_its_topology_kept(cube):
    noisy = bumpy(cube, 0.02)
    regions = planar_regions(taubin_smooth(noisy, PlaneSettings().taubin_iterations))  # as flatten_planar_regions
    axes = {(int(np.abs(r.normal).argmax()), int(np.sign(r.normal[np.abs(r.normal).argmax()]))) for r in regions}
    assert len(regions) == 6 and axes == {(axis, sign) for axis in range(3) for sign in (-1, 1)}
    for r in regions:  # each plane where the box's face is
        assert r.offset == pytest.approx(HALF, abs=0.01)
        assert np.abs(r.normal).max() > np.cos(np.radians(2.0))
    flat = flatten_planar_regions(noisy)
    assert axis_aligned_area_share(noisy, 15.0) < 0.6
    assert axis_aligned_area_share(flat, 15.0) > 0.9
    assert np.abs(box_sdf(flat.vertices)).mean() < 0.3 * np.abs(box_sdf(noisy.vertices)).mean()
    assert topology(flat).as_dict() == topology(noisy).as_dict()
    np.testing.assert_array_equal(flat.faces, noisy.faces)


@pytest.mark.parametrize(
    "name, sdf",
    [
        ("sphere", lambda x: np.linalg.norm(x, axis=1) - 0.45),
        ("torus", lambda x: np.hypot(np.hypot(x[:, 0], x[:, 1]) - 0.4, x[:, 2]) - 0.15),
        ("wide torus", lambda x: np.hypot(np.hypot(x[:, 0], x[:, 1]) - 0.55, x[:, 2]) - 0.25),
    ],
)
def test_curved_surfaces_have_no_planar_region_and_keep_their_shape(name, sdf):
    mesh = bumpy(mesh_sdf(torch_sdf(sdf), 1.0, resolution=64), 0.01)
    assert planar_regions(mesh) == []
    # only the Taubin smoothing moves them: towards the true surface, never by more than the bumps
    smoothed = flatten_planar_regions(mesh)
    assert (
        np.abs(sdf(smoothed.vertices.astype(np.float64))).mean() < np.abs(sdf(mesh.vertices.astype(np.float64))).mean()
    )
    assert np.linalg.norm(smoothed.vertices - mesh.vertices, axis=1).max() < 0.02


def test_a_cylinders_caps_are_planes_and_its_side_is_not():
    def cylinder(x):  # radius 0.35, half-height 0.4
        d = np.stack([np.hypot(x[:, 0], x[:, 1]) - 0.35, np.abs(x[:, 2]) - 0.4], axis=1)
        return np.linalg.norm(np.maximum(d, 0.0), axis=1) + np.minimum(d.max(axis=1), 0.0)

    regions = planar_regions(bumpy(mesh_sdf(torch_sdf(cylinder), 1.0, resolution=64), 0.01))
    assert sorted(np.round(r.normal[2]) for r in regions) == [-1.0, 1.0]
    assert all(r.offset == pytest.approx(0.4, abs=0.01) for r in regions)


def test_quadric_curvature_of_a_sphere_cap_and_a_plane():
    rng = np.random.default_rng(0)
    uv = rng.uniform(-0.2, 0.2, size=(400, 2))
    radius = 0.8
    cap = np.column_stack([uv, np.sqrt(radius**2 - (uv**2).sum(axis=1))])
    assert max_curvature(cap, np.ones(400), np.array([0.0, 0.0, 1.0])) == pytest.approx(1 / radius, rel=0.05)
    tilted = np.column_stack([uv, 0.3 * uv[:, 0] + 0.001 * rng.standard_normal(400)])
    assert max_curvature(tilted, np.ones(400), np.array([0.0, 0.0, 1.0])) < 0.2


def test_snapping_moves_the_inside_fully_and_the_border_not():
    """A 9x9 grid of spacing 0.05 with z noise, all one region on z = 0: a vertex at least ``blend`` from the
    vertices outside lands on the plane, one at the border (next to an outside vertex) does not move, and x, y
    never change."""
    rng = np.random.default_rng(1)
    xs, ys = np.meshgrid(np.arange(9) * 0.05, np.arange(9) * 0.05, indexing="ij")
    vertices = np.stack([xs.ravel(), ys.ravel(), 0.01 * rng.standard_normal(81)], axis=1).astype(np.float32)
    idx = np.arange(81).reshape(9, 9)
    quads = np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], axis=-1).reshape(-1, 4)
    faces = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]]).astype(np.int32)
    outer_ring = np.concatenate([idx[[0, -1]].ravel(), idx[:, [0, -1]].ravel()])
    inner = np.flatnonzero(~np.isin(faces, outer_ring).any(axis=1))
    region = PlanarRegion(inner, np.array([0.0, 0.0, 1.0]), 0.0)  # the faces off the outer ring of vertices
    snapped = snap_to_planes(Mesh(vertices, faces), [region], blend=0.1)
    assert snapped.vertices[idx[4, 4], 2] == 0.0  # 0.2 from the outer ring
    assert snapped.vertices[idx[1, 4], 2] == pytest.approx(vertices[idx[1, 4], 2] * 0.5, rel=0.05)  # 0.05 away
    assert snapped.vertices[idx[0, 4], 2] == vertices[idx[0, 4], 2]  # outside the region
    np.testing.assert_array_equal(snapped.vertices[:, :2], vertices[:, :2])


def test_no_settings_or_a_coarse_mesh_are_left_as_they_are(cube):
    assert flatten_planar_regions(cube, None) is cube
    coarse = mesh_sdf(torch_sdf(box_sdf), 1.0, resolution=12)
    assert flatten_planar_regions(coarse, PlaneSettings()) is coarse
    assert flatten_planar_regions(cube, PlaneSettings(taubin_iterations=0)) is not cube
