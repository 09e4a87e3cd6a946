"""Metrics: R@1 / similarity on hand-made score matrices, the volumetric geometry score, diversity."""

import math

import pytest
import torch

from dreamstill.backend.eval.metrics import (
    Occupancy,
    evaluation_cameras,
    geometry_iou,
    occupancy_from_mesh,
    occupancy_from_sdf,
    pairwise_diversity,
    r_at_1,
    similarity,
)

trimesh = pytest.importorskip("trimesh")


def box_sdf(half=0.5):
    return lambda p: (p.abs() - half).max(dim=1).values


def sphere_sdf(r=0.6):
    return lambda p: p.norm(dim=1) - r


def transformed(mesh, angle_z=0.0, angle_x=0.0, scale=1.0, shift=(0.0, 0.0, 0.0)):
    m = mesh.copy()
    m.apply_transform(trimesh.transformations.rotation_matrix(angle_x, [1, 0, 0]))
    m.apply_transform(trimesh.transformations.rotation_matrix(angle_z, [0, 0, 1]))
    m.apply_scale(scale)
    m.apply_translation(shift)
    return m


# --- R@1 and similarity -------------------------------------------------------------------------------------------


def test_r_at_1_and_similarity_on_a_hand_made_matrix():
    s = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    # argmax per row: 0, 1, 0 (tie goes to the first column), 2
    assert r_at_1(s, 0) == pytest.approx(2 / 4)
    assert r_at_1(s, 1) == pytest.approx(1 / 4)
    assert r_at_1(s, 2) == pytest.approx(1 / 4)
    assert r_at_1(s, torch.tensor([0, 1, 0, 2])) == pytest.approx(1.0)
    assert similarity(s, 0) == pytest.approx((0.9 + 0.2 + 0.5 + 0.0) / 4)
    assert similarity(s, torch.tensor([0, 1, 2, 2])) == pytest.approx((0.9 + 0.7 + 0.0 + 1.0) / 4)


def test_r_at_1_rejects_bad_input():
    with pytest.raises(ValueError, match="views, prompts"):
        r_at_1(torch.zeros(3), 0)
    with pytest.raises(ValueError, match="outside"):
        r_at_1(torch.zeros(2, 3), 3)


def test_evaluation_cameras_surround_the_asset_and_look_down():
    cams = evaluation_cameras(n_azimuth=6, elevations=(0.0, 30.0, 80.0))
    assert len(cams) == 18
    assert cams.elevation.max() >= 80.0
    az = sorted(set(round(a, 3) for a in cams.azimuth.tolist()))
    assert len(az) == 6 and az[-1] - az[0] == pytest.approx(300.0)
    assert torch.isfinite(cams.c2w).all()
    with pytest.raises(ValueError, match="elevations"):
        evaluation_cameras(elevations=(90.0,))


# --- occupancy and geometry ---------------------------------------------------------------------------------------


def test_voxelised_mesh_volumes_match_closed_form():
    box = trimesh.creation.box(extents=(1.0, 0.6, 0.8))
    assert occupancy_from_mesh(box.vertices, box.faces, 48).volume == pytest.approx(0.48, rel=0.05)
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    assert occupancy_from_mesh(sphere.vertices, sphere.faces, 48).volume == pytest.approx(
        4 / 3 * math.pi * 0.125, rel=0.06
    )
    torus = trimesh.creation.torus(major_radius=0.5, minor_radius=0.2)
    occ = occupancy_from_mesh(torus.vertices, torus.faces, 48)
    assert occ.volume == pytest.approx(2 * math.pi**2 * 0.5 * 0.04, rel=0.08)
    assert occ.sample(torch.zeros(1, 3)).item() == 0.0  # the hole is empty


def test_a_mesh_with_an_inner_shell_voxelises_as_the_solid_it_encloses():
    """Marching cubes of a distilled field can give an inner surface inside the outer one; parity alone would count
    the inside of the inner shell as empty (ball minus ball). The solid is what the outer surface encloses."""
    outer = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    inner = trimesh.creation.icosphere(subdivisions=4, radius=0.3)
    both = trimesh.util.concatenate([outer, inner])
    occ = occupancy_from_mesh(both.vertices, both.faces, 48)
    assert occ.volume == pytest.approx(4 / 3 * math.pi * 0.5**3, rel=0.06)
    assert occ.sample(torch.zeros(1, 3)).item() == 1.0


def test_sdf_occupancy_volume_and_sampling():
    occ = occupancy_from_sdf(box_sdf(0.5), -1.0, 1.0, 40)
    assert occ.volume == pytest.approx(1.0, rel=0.01)
    vals = occ.sample(torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.0, 0.0], [3.0, 0.0, 0.0]]))
    assert vals.tolist() == [1.0, 0.0, 0.0]


def test_geometry_iou_of_a_shape_with_itself_is_near_one():
    box = trimesh.creation.box(extents=(1, 1, 1))
    truth = occupancy_from_sdf(box_sdf(0.5))
    assert geometry_iou(occupancy_from_mesh(box.vertices, box.faces, 48), truth) > 0.92


def test_geometry_iou_is_invariant_to_rotation_about_z_scale_and_shift():
    box = trimesh.creation.box(extents=(1, 1, 1))
    truth = occupancy_from_sdf(box_sdf(0.5))
    base = geometry_iou(occupancy_from_mesh(box.vertices, box.faces, 48), truth)
    moved = transformed(box, angle_z=math.radians(33.0), scale=1.7, shift=(0.3, -0.2, 0.4))
    other = geometry_iou(occupancy_from_mesh(moved.vertices, moved.faces, 48), truth)
    assert other > 0.9
    assert abs(other - base) < 0.05


def test_geometry_iou_separates_different_shapes():
    box_truth = occupancy_from_sdf(box_sdf(0.5))
    box = trimesh.creation.box(extents=(1, 1, 1))
    same = geometry_iou(occupancy_from_mesh(box.vertices, box.faces, 48), box_truth)
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.6)
    cylinder = trimesh.creation.cylinder(radius=0.5, height=1.0, sections=48)
    for other in (sphere, cylinder):
        assert geometry_iou(occupancy_from_mesh(other.vertices, other.faces, 48), box_truth) < same - 0.1


def test_geometry_iou_is_not_invariant_to_turning_upside_down():
    cone = trimesh.creation.cone(radius=0.55, height=1.1, sections=48)
    cone.apply_translation((0, 0, -0.55))
    truth = occupancy_from_mesh(cone.vertices, cone.faces, 64)
    upright = geometry_iou(occupancy_from_mesh(cone.vertices, cone.faces, 48), truth)
    flipped = transformed(cone, angle_x=math.pi)
    down = geometry_iou(occupancy_from_mesh(flipped.vertices, flipped.faces, 48), truth)
    assert upright > 0.9 and down < upright - 0.2


def test_geometry_iou_of_an_empty_prediction_is_zero():
    empty = Occupancy(torch.zeros(8, 8, 8), -1.0, 1.0)
    assert geometry_iou(empty, occupancy_from_sdf(sphere_sdf())) == 0.0
    with pytest.raises(ValueError, match="no faces"):
        occupancy_from_mesh(torch.zeros(3, 3), torch.zeros(0, 3, dtype=torch.long))


# --- diversity ----------------------------------------------------------------------------------------------------


def test_pairwise_diversity_closed_form():
    x = torch.stack([torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 2.0), torch.full((2, 3, 4, 4), 3.0)])
    # pairs: |0-2| = 2, |0-3| = 3, |2-3| = 1 -> mean 2
    assert pairwise_diversity(x) == pytest.approx(2.0)
    assert pairwise_diversity(x[:1]) != pairwise_diversity(x[:1])  # NaN for a single seed
