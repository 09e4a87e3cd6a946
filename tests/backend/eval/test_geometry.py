"""An asset's mesh against the true surface: Chamfer distance, normal angle, topology (closed forms)."""

import math

import numpy as np
import pytest
import torch
import trimesh

from dreamstill.backend.eval import geometry as G
from dreamstill.backend.eval.assets import GroundTruthAsset
from dreamstill.backend.eval.config import BenchmarkConfig
from dreamstill.backend.eval.scoring import geometry_scores
from dreamstill.backend.mesh import Mesh
from dreamstill.backend.priors.builtin import world as W

CELL_64 = 2 * W.BOUND_RADIUS / 63  # the ground-truth mesh's marching-cubes cell at resolution 64


def _truth_mesh(prompt: str, resolution: int = 64) -> Mesh:
    return GroundTruthAsset(prompt).to_mesh(resolution)


# --- topology ---------------------------------------------------------------------------------------------------


def test_euler_number_and_components_of_closed_forms():
    box = trimesh.creation.box()
    torus = trimesh.creation.torus(major_radius=1.0, minor_radius=0.3)
    two = trimesh.util.concatenate([box, box.copy().apply_translation([3, 0, 0])])
    assert G.mesh_topology(box.vertices, box.faces) == (2, 1)
    assert G.mesh_topology(torus.vertices, torus.faces) == (0, 1)
    assert G.mesh_topology(two.vertices, two.faces) == (4, 2)
    assert G.mesh_topology(box.vertices, box.faces[2:]) == (1, 1)  # one side open: a disk
    loose = box.vertices[box.faces].reshape(-1, 3)  # every triangle its own corners: welded by position
    assert G.mesh_topology(loose, np.arange(len(loose)).reshape(-1, 3)) == (2, 1)
    assert G.mesh_topology(box.vertices, np.zeros((0, 3), np.int64)) == (0, 0)


@pytest.mark.parametrize(
    "prompt,euler,components",
    [
        ("a red cube", (2,), (1,)),
        ("a purple torus", (0,), (1,)),
        ("a cyan cube next to a red pyramid", (4,), (2,)),
        ("a green cone next to a yellow torus", (2,), (2,)),
        ("a red cube on top of a blue sphere", (2, 4), (1, 2)),  # touching: joined or apart
        ("a pink cone on top of a green cylinder", (2, 4), (1, 2)),
        ("an orange torus on top of a cyan capsule", (2,), (2,)),  # the ring floats over the capsule's top
    ],
)
def test_true_topology(prompt, euler, components):
    truth = G.true_surface(prompt)
    assert truth.euler == euler and truth.components == components


def test_topology_scores_against_the_truth():
    box = trimesh.creation.box()
    torus = trimesh.creation.torus(major_radius=1.0, minor_radius=0.3)
    two = trimesh.util.concatenate([box, box.copy().apply_translation([3, 0, 0])])
    cube = G.topology_scores(box.vertices, box.faces, "a red cube")
    assert cube == {"faces": 12, "components": 1, "euler": 2, "euler_expected": [2], "topology_ok": 1.0}
    assert G.topology_scores(torus.vertices, torus.faces, "a red cube")["topology_ok"] == 0.0
    assert G.topology_scores(torus.vertices, torus.faces, "a purple torus")["topology_ok"] == 1.0
    for mesh in (box, two):  # a cube on a sphere: one solid, or the two apart
        assert G.topology_scores(mesh.vertices, mesh.faces, "a red cube on top of a blue sphere")["topology_ok"] == 1
    assert G.topology_scores(box.vertices, box.faces[:0], "a red cube")["topology_ok"] == 0.0


# --- the true surface -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["a yellow cone", "a pink octahedron", "a red cube on top of a blue sphere"])
def test_true_surface_points_lie_on_the_surface(prompt):
    from dreamstill.backend.priors.builtin.exact_sdf import exact_scene_sdf

    truth = G.true_surface(prompt)
    phi = exact_scene_sdf(W.parse_prompt(prompt), torch.from_numpy(truth.points))
    assert len(truth.points) > 0.95 * G.SURFACE_SAMPLES
    assert phi.abs().max().item() < 1e-6


def test_true_solid_moments_closed_form():
    ball = G.true_surface("a blue sphere")
    assert ball.radius == pytest.approx(math.sqrt(3 / 5) * W.SPHERE_R, rel=2e-3)  # RMS radius of a solid ball
    assert G.true_surface("a red cube").radius == pytest.approx(W.CUBE_HALF, rel=2e-3)  # sqrt(3 a^2 / 3)
    cone = G.true_surface("a yellow cone")
    assert cone.centre[2].item() == pytest.approx(-W.CONE_H / 2, abs=2e-3)  # a quarter of the height up


# --- distances ----------------------------------------------------------------------------------------------------


def test_point_to_mesh_distance_closed_form_and_exact_beyond_the_nearest_centroids():
    box = trimesh.creation.box()  # the unit cube about the origin, 12 triangles
    pts = np.array([[1.5, 0, 0], [0, 0, 0], [1, 1, 1], [0.2, -0.1, 0.5]])
    expected = [1.0, 0.5, 0.5 * math.sqrt(3), 0.0]
    for k in (2, 16):  # k = 2 needs the search beyond the k nearest centroids
        assert G.point_to_mesh_distance(pts, box.vertices, box.faces, k=k) == pytest.approx(expected, abs=1e-9)
    sphere = trimesh.creation.icosphere(3)
    rng = np.random.default_rng(0)
    q = rng.normal(size=(300, 3)) * 0.8
    brute = np.array(
        [
            np.linalg.norm(
                p - trimesh.triangles.closest_point(sphere.triangles, np.tile(p, (len(sphere.faces), 1))), axis=1
            ).min()
            for p in q
        ]
    )
    assert G.point_to_mesh_distance(q, sphere.vertices, sphere.faces) == pytest.approx(brute, abs=1e-9)


@pytest.mark.parametrize("prompt", ["a red cube", "a yellow cone", "a purple torus", "a pink octahedron"])
def test_the_true_shapes_marching_cubes_mesh_scores_near_zero(prompt):
    mesh = _truth_mesh(prompt)
    s = G.distance_scores(mesh.vertices, mesh.faces, prompt)
    assert s["chamfer"] < 0.05 * CELL_64
    assert s["normal_angle_deg"] < 8.0  # marching cubes bevels the edges a cell wide
    assert G.topology_scores(mesh.vertices, mesh.faces, prompt)["topology_ok"] == 1.0


def test_a_translated_sphere_scores_its_closed_form():
    """Moved by d, each direction of the Chamfer distance is E_c | sqrt(R^2 + d^2 + 2 R d c) - R | over c ~ U[-1, 1],
    and the normal angle E_c arccos((R + d c) / sqrt(R^2 + d^2 + 2 R d c))."""
    r, d = W.SPHERE_R, 0.1
    mesh = _truth_mesh("a blue sphere", 96)
    moved = mesh.vertices + np.array([d, 0.0, 0.0], np.float32)
    s = G.distance_scores(moved, mesh.faces, "a blue sphere")
    c = (np.arange(200000) + 0.5) / 100000 - 1
    dist = np.sqrt(r * r + d * d + 2 * r * d * c)
    assert s["chamfer"] == pytest.approx(np.abs(dist - r).mean(), abs=1.5e-3)
    assert s["normal_angle_deg"] == pytest.approx(np.degrees(np.arccos((r + d * c) / dist)).mean(), abs=0.5)


def test_a_mesh_wound_inside_out_points_its_normals_away():
    mesh = _truth_mesh("a red cube", 96)
    assert G.distance_scores(mesh.vertices, mesh.faces[:, ::-1], "a red cube")["normal_angle_deg"] > 175.0


# --- through the IoU's alignment ----------------------------------------------------------------------------------


def test_alignment_forgives_position_size_and_turn_about_z_but_not_shape():
    cfg = BenchmarkConfig()
    prompt = "a cyan cube next to a red pyramid"
    mesh = _truth_mesh(prompt)
    base = geometry_scores(mesh, prompt, cfg)
    assert base["geometry"] > 0.85 and base["topology_ok"] == 1.0
    assert base["chamfer"] < 0.1 * CELL_64 and base["normal_angle_deg"] < 8.0
    turn = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 degrees about z
    moved = mesh.copy(vertices=(1.7 * mesh.vertices @ turn.T + np.array([0.3, -2.0, 0.5])).astype(np.float32))
    again = geometry_scores(moved, prompt, cfg)
    assert again["chamfer"] == pytest.approx(base["chamfer"], abs=0.1 * CELL_64)
    assert again["normal_angle_deg"] == pytest.approx(base["normal_angle_deg"], abs=1.0)
    sphere = _truth_mesh("a blue sphere")
    wrong = geometry_scores(sphere, "a red cube", cfg)
    assert wrong["chamfer"] > 10 * geometry_scores(_truth_mesh("a red cube"), "a red cube", cfg)["chamfer"]
    assert wrong["normal_angle_deg"] > 15.0


def test_no_mesh_scores_zero_and_nan():
    s = geometry_scores(None, "a red cube", BenchmarkConfig())
    assert s["geometry"] == 0.0 and s["topology_ok"] == 0.0 and s["faces"] == 0
    assert math.isnan(s["chamfer"]) and math.isnan(s["normal_angle_deg"])
    with pytest.raises(ValueError, match="no faces"):
        G.distance_scores(np.zeros((3, 3)), np.zeros((0, 3), np.int64), "a red cube")
