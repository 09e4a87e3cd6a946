"""Exact signed distances of the toy world's primitives and scenes (for geometry metrics)."""

import math

import pytest
import torch

from dreamstill.backend.priors.builtin import exact_sdf as E
from dreamstill.backend.priors.builtin import world as W

R, H = W.CONE_R, W.CONE_H
A, PH = W.PYRAMID_HALF, W.PYRAMID_H
O = W.OCTA_R
D = 0.2  # an offset from the surface
KNOWN = [  # (shape, point, exact signed distance)
    ("sphere", (0, 0, 0), -W.SPHERE_R),
    ("sphere", (0, 1, 0), 1 - W.SPHERE_R),
    ("cube", (1, 1, 1), math.sqrt(3) * (1 - W.CUBE_HALF)),
    ("cube", (0, 0, -0.1), -(W.CUBE_HALF - 0.1)),
    ("cylinder", (1, 0, 1), math.hypot(1 - W.CYL_R, 1 - W.CYL_H)),
    ("cylinder", (0, 0, 0.3), -(W.CYL_H - 0.3)),
    # the cone inside, on its axis: the nearer of the base and the slanted side (R H / sqrt(R^2 + 4 H^2)), not 0
    ("cone", (0, 0, 0), -min(H, R * H / math.hypot(R, 2 * H))),
    ("cone", (0, 0, H + D), D),
    ("cone", (0, 0, -H - D), D),
    ("cone", (R + D, 0, -H), D),
    ("torus", (0, 0, 1), math.hypot(W.TORUS_R, 1) - W.TORUS_r),
    ("capsule", (0, 0, 0), -W.CAPSULE_R),
    ("capsule", (0, 0, -1), 1 - W.CAPSULE_H - W.CAPSULE_R),
    # the pyramid: beyond a base corner, above the apex, below the base, and inside
    ("pyramid", (A + D, A + D, -PH), math.sqrt(2) * D),
    ("pyramid", (0, 0, PH + D), D),
    ("pyramid", (0, 0, -PH - D), D),
    ("pyramid", (0, 0, -PH + 0.05), -0.05),
    # the octahedron: beyond a vertex, beyond an edge's midpoint, beyond a face's centre, and its centre
    ("octahedron", (O + D, 0, 0), D),
    ("octahedron", (O / 2 + D / math.sqrt(2), O / 2 + D / math.sqrt(2), 0), D),
    ("octahedron", tuple(O / 3 + D / math.sqrt(3) for _ in range(3)), D),
    ("octahedron", (0, 0, 0), -O / math.sqrt(3)),
]


@pytest.mark.parametrize("shape,point,expected", KNOWN)
def test_exact_primitive_sdf_at_known_points(shape, point, expected):
    d = E.exact_primitive_sdf(shape, torch.tensor([point], dtype=torch.float64))
    assert d.item() == pytest.approx(expected, abs=1e-6)


def test_polyhedra_are_exact_where_the_renderers_bound_is_short():
    """Beyond an edge of the octahedron the planes' bound gives D * sqrt(2/3); the exact distance is D."""
    p = torch.tensor([[O / 2 + D / math.sqrt(2), O / 2 + D / math.sqrt(2), 0.0]])
    assert W.primitive_sdf("octahedron", p).item() == pytest.approx(D * math.sqrt(2 / 3), abs=1e-5)
    assert E.exact_primitive_sdf("octahedron", p).item() == pytest.approx(D, abs=1e-5)


@pytest.mark.parametrize("shape", W.SHAPES)
def test_exact_sdf_agrees_with_the_worlds_in_sign_and_never_falls_below_it_outside(shape):
    g = torch.Generator().manual_seed(5)
    p = (torch.rand(4000, 3, generator=g) * 2 - 1) * 1.2
    exact, world = E.exact_primitive_sdf(shape, p), W.primitive_sdf(shape, p)
    assert torch.equal(exact > 0, world > 0)
    assert (exact[world > 0] >= world[world > 0] - 1e-6).all()


@pytest.mark.parametrize("shape", W.SHAPES)
def test_stepping_back_along_the_normal_lands_on_the_surface(shape):
    """For an exact distance, x - phi(x) n(x) is the nearest surface point: phi there is 0."""
    scene = W.Scene.single("red", shape)
    g = torch.Generator().manual_seed(6)
    x = (torch.rand(2000, 3, generator=g) * 2 - 1).double()
    phi, n = E.scene_sdf_and_normal(scene, x)
    keep = phi.abs() > 1e-3
    foot = x[keep] - phi[keep, None] * n[keep]
    assert E.exact_scene_sdf(scene, foot).abs().max().item() < 1e-5


def test_normals_on_flat_faces_are_the_face_normals():
    """On the surface itself (where sqrt of a squared distance has no autograd gradient)."""
    pts = torch.tensor([[W.CUBE_HALF, 0.1, 0.2], [0.1, 0.1, -H], [0.0, 0.0, -PH]], dtype=torch.float64)
    shapes = ["cube", "cone", "pyramid"]
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 0.0, -1.0]], dtype=torch.float64)
    for point, shape, n in zip(pts, shapes, expected):
        _, normal = E.scene_sdf_and_normal(W.Scene.single("red", shape), point[None])
        assert torch.allclose(normal[0], n, atol=1e-6), shape


def test_composition_is_the_minimum_over_its_placed_objects():
    scene = W.parse_prompt("a red cube on top of a blue sphere")
    top, bottom = scene.placements()
    pts = torch.tensor([top.centre, bottom.centre, (0.0, 0.0, 5.0)], dtype=torch.float64)
    per_object = E.object_sdfs(scene, pts)
    assert per_object.shape == (3, 2)
    assert per_object[0, 0].item() == pytest.approx(-top.scale * W.CUBE_HALF)
    assert per_object[1, 1].item() == pytest.approx(-bottom.scale * W.SPHERE_R)
    assert torch.equal(E.exact_scene_sdf(scene, pts), per_object.min(-1).values)
    # the band option: exact near the surface, the world's elsewhere (same sign everywhere)
    g = torch.Generator().manual_seed(7)
    p = (torch.rand(3000, 3, generator=g) * 2 - 1).double()
    octa = W.parse_prompt("a purple octahedron next to a pink cube")
    banded, exact = E.object_sdfs(octa, p, band=0.05), E.object_sdfs(octa, p)
    near = exact.abs() < 0.04
    assert torch.allclose(banded[near], exact[near]) and torch.equal(banded > 0, exact > 0)


def test_unknown_polyhedron_is_refused():
    with pytest.raises(ValueError, match="pyramid, octahedron"):
        E.polyhedron_triangles("cube")
