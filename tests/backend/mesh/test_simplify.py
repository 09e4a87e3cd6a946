"""Quadric decimation to a face budget: geometry kept, colours re-evaluated, the JobSpec budget per mode, and jobs
that keep their asset when the decimation package is missing."""

import numpy as np
import pytest
import torch
import trimesh

from dreamstill.backend.mesh import Mesh, decimate, decimation_available, extract_mesh, simplify
from dreamstill.protocol import JobSpec, JobSpecError

pytestmark = pytest.mark.skipif(not decimation_available(), reason="fast-simplification is not installed")

RADIUS = 0.5


def ball_density(x):
    return 100.0 * torch.clamp(1.0 - x.norm(dim=-1), min=0.0)  # {density = 50} is the sphere of radius 0.5


def colour_of_position(x):
    return (x + 1.0) / 2.0  # albedo = position mapped to [0, 1]: a known colour at every point


@pytest.fixture(scope="module")
def ball():
    return extract_mesh(ball_density, bound=1.0, resolution=64, threshold=50.0, albedo_fn=colour_of_position)


def test_decimated_ball_keeps_its_surface_and_volume(ball):
    assert ball.num_faces > 4000
    small = decimate(ball, 800)
    assert 600 <= small.num_faces <= 800
    radii = np.linalg.norm(small.vertices, axis=1)
    assert np.abs(radii - RADIUS).max() < 0.02  # vertices stay on the sphere (edge collapses to quadric minima)
    before = trimesh.Trimesh(ball.vertices, ball.faces, process=False)
    after = trimesh.Trimesh(small.vertices, small.faces, process=False)
    assert after.volume == pytest.approx(before.volume, rel=0.03)
    assert before.volume == pytest.approx(4 / 3 * np.pi * RADIUS**3, rel=0.03)


def test_colours_are_evaluated_at_the_new_vertices(ball):
    small = decimate(ball, 800, colour_of_position)
    expected = np.round(np.clip((small.vertices + 1) / 2, 0, 1) * 255)
    assert np.abs(small.vertex_colors.astype(int) - expected).max() <= 1
    nearest = decimate(ball, 800)  # no albedo: the nearest input vertex's colour, a few grid cells away at most
    assert np.abs(nearest.vertex_colors.astype(int) - expected).max() <= 0.05 * 255 / 2 + 1


def test_a_mesh_within_budget_is_returned_as_is_and_bad_input_is_named(ball):
    assert decimate(ball, ball.num_faces) is ball
    with pytest.raises(ValueError, match="max_faces"):
        decimate(ball, 3)
    textured = Mesh(ball.vertices, ball.faces, uvs=np.zeros((ball.num_vertices, 2)), texture=np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="before baking"):
        decimate(textured, 100)


def test_missing_package_keeps_every_face_and_warns(ball, monkeypatch):
    from dreamstill.backend.engine.meshing import field_to_mesh

    class BallField:  # what field_to_mesh asks of a field: a bound, density(x) and field(x) -> (density, albedo)
        bound = 1.0

        def density(self, x):
            return ball_density(x)

        def __call__(self, x):
            return ball_density(x), colour_of_position(x)

    monkeypatch.setattr(simplify, "decimation_available", lambda: False)
    with pytest.raises(ImportError, match="fast-simplification"):
        decimate(ball, 100)
    warnings = []
    mesh = field_to_mesh(BallField(), torch.device("cpu"), 32, 0, warnings, max_faces=100)
    assert mesh.num_faces > 1000 and any("fast-simplification" in w for w in warnings)
    monkeypatch.undo()
    assert field_to_mesh(BallField(), torch.device("cpu"), 32, 0, [], max_faces=100).num_faces <= 100


def test_face_budget_per_mode_and_its_range():
    assert JobSpec(prompt="a", mode="optimize").face_budget == 20_000
    assert JobSpec(prompt="a", mode="instant").face_budget == 5_000
    assert JobSpec(prompt="a", mode="optimize", max_faces=5000).face_budget == 5000
    with pytest.raises(JobSpecError, match="max_faces"):
        JobSpec(prompt="a", max_faces=50).validate()
