"""The signed distance grid of an artist's mesh: exact near the surface of a cube, the same solid for closed, flipped,
holed and overlapping meshes, thin slabs for open sheets, and the frame that puts any mesh in the field's ball."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from dreamstill.backend.fields.mesh_sdf import MeshSDFConfig, mesh_sdf_grid, normalising_frame, ray_votes

N = 40  # grid samples per side: h = 2 / 39


def grid_points(grid) -> np.ndarray:
    n = grid.values.shape[0]
    axis = grid.lo + grid.spacing * np.arange(n)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1)


def box_sdf(points: np.ndarray, half: float = 0.5, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Exact distance to the box |x - centre| <= half: |max(q, 0)| + min(max_i q_i, 0), q = |x - centre| - half."""
    q = np.abs(points - np.asarray(centre)) - half
    return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(axis=-1), 0)


def sdf_of(mesh: trimesh.Trimesh, faces=None):
    faces = mesh.faces if faces is None else faces
    return mesh_sdf_grid(np.asarray(mesh.vertices), np.asarray(faces), 1.0, MeshSDFConfig(resolution=N))


CUBE = trimesh.creation.box((1.0, 1.0, 1.0))


def test_a_cube_is_exact_near_its_surface_and_its_sign_is_right_everywhere():
    result = sdf_of(CUBE)
    exact = box_sdf(grid_points(result.grid))
    h = result.grid.spacing
    near = np.abs(exact) < 2 * h
    np.testing.assert_allclose(result.grid.values[near], exact[near], atol=1e-5)
    assert np.array_equal(result.grid.values < 0, exact < 0)
    assert np.abs(result.grid.values - exact).max() < 1.5 * h  # the far field is within about a voxel
    assert result.open_faces == 0 and result.faces == 12
    assert result.inside_fraction == pytest.approx((exact < 0).mean())


@pytest.mark.parametrize(
    "faces",
    [
        CUBE.faces[:, ::-1],  # every normal flipped: the winding count is -1 inside
        np.concatenate([CUBE.faces[:2, ::-1], CUBE.faces[2:]]),  # one side flipped: its lines are outvoted
        CUBE.faces[CUBE.face_normals[:, 2] < 0.5],  # the top missing (an open box): its lines are outvoted
    ],
    ids=["flipped", "one-side-flipped", "open-top"],
)
def test_flipped_and_holed_cubes_keep_the_cubes_solid(faces):
    result = sdf_of(CUBE, faces)
    exact = box_sdf(grid_points(result.grid))
    assert np.array_equal(result.grid.values < 0, exact < 0)


def test_overlapping_parts_with_coplanar_faces_make_their_union():
    """Two boxes of half-size 0.4 overlapping along x share their y and z faces' planes; parity would leave their
    overlap empty, winding counts of 2 keep it solid."""
    a = trimesh.creation.box((0.8, 0.8, 0.8))
    b = trimesh.creation.box((0.8, 0.8, 0.8))
    b.apply_translation([0.3, 0.0, 0.0])
    both = trimesh.util.concatenate([a, b])
    result = sdf_of(both)
    points = grid_points(result.grid)
    union = np.minimum(box_sdf(points, 0.4), box_sdf(points, 0.4, (0.3, 0.0, 0.0)))
    assert np.array_equal(result.grid.values < 0, union < 0)


def test_an_open_sheet_becomes_a_slab_one_voxel_either_side():
    """A square in z = 0 encloses nothing: its two faces are open and the solid is |z| < h over the square."""
    square = trimesh.Trimesh([[-0.5, -0.5, 0], [0.5, -0.5, 0], [0.5, 0.5, 0], [-0.5, 0.5, 0]], [[0, 1, 2], [0, 2, 3]])
    result = sdf_of(square)
    points, h = grid_points(result.grid), result.grid.spacing
    assert result.open_faces == 2 and result.inside_fraction == 0.0
    over = (np.abs(points[..., 0]) < 0.45) & (np.abs(points[..., 1]) < 0.45) & (np.abs(points[..., 2]) < 2 * h)
    np.testing.assert_allclose(result.grid.values[over], np.abs(points[..., 2][over]) - h, atol=1e-5)
    assert (result.grid.values[~over & (np.abs(points[..., 0]) > 0.55)] > 0).all()


def test_votes_count_six_directions():
    """Every sample of a closed cube gets 6 votes inside or 0; a sample's votes never exceed 6."""
    votes = ray_votes(np.asarray(CUBE.vertices), np.asarray(CUBE.faces), -1.0, 2.0 / (N - 1), N)
    assert set(np.unique(votes)) == {0, 6}


def test_the_frame_centres_the_box_makes_the_longest_side_one_and_inverts():
    rng = np.random.default_rng(0)
    vertices = rng.uniform([10, -3, 5], [14, 1, 6], (50, 3))
    frame = normalising_frame(vertices)
    x = frame.to_field(vertices)
    np.testing.assert_allclose((x.max(0) + x.min(0)) / 2, 0, atol=1e-6)
    assert (x.max(0) - x.min(0)).max() == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(frame.to_mesh(x), vertices, rtol=1e-5)
    with pytest.raises(ValueError, match="no extent"):
        normalising_frame(np.ones((3, 3)))
    with pytest.raises(ValueError, match="inside the ball of radius 1.0; normalise it first"):
        mesh_sdf_grid(vertices, [[0, 1, 2]], 1.0)
