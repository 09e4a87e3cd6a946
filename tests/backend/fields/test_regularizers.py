"""Regularizers: closed-form values on analytic shapes and hand-computed inputs."""

import math

import pytest
import torch

from dreamstill.backend.fields.regularizers import (
    eikonal_loss,
    normal_difference,
    normal_smoothness_loss,
    opacity_entropy_loss,
    opacity_sparsity_loss,
    orientation_loss,
)


def rng(seed=0):
    return torch.Generator().manual_seed(seed)


def sphere_gradient(x, radius=0.5):
    return torch.nn.functional.normalize(x, dim=-1)  # grad (||x|| - r)


def test_eikonal_is_zero_for_an_analytic_sphere_sdf_and_exact_for_a_scaled_one():
    x = torch.randn(500, 3, generator=rng())
    assert eikonal_loss(sphere_gradient(x)).item() == pytest.approx(0.0, abs=1e-10)
    # d = 3 (||x|| - r) has ||grad d|| = 3 everywhere: loss (3 - 1)^2 = 4
    assert eikonal_loss(3 * sphere_gradient(x)).item() == pytest.approx(4.0, rel=1e-6)
    # autograd of the analytic SDF gives the same zero
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad((xg.norm(dim=-1) - 0.5).sum(), xg)
    assert eikonal_loss(g).item() == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        eikonal_loss(torch.zeros(4, 2))


def test_orientation_penalises_only_normals_facing_away():
    v = torch.tensor([[1.0, 0.0, 0.0]]).expand(4, 3)  # rays along +x
    c = math.cos(math.radians(60))
    normals = torch.tensor([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [c, math.sin(math.radians(60)), 0.0], [0.0, 1.0, 0.0]])
    w = torch.tensor([1.0, 0.5, 2.0, 0.0])
    # facing the camera (n . v = -1) costs 0; away: 0.5 * 1^2 + 2 * cos(60)^2; the zero weight is not counted
    expect = (0.5 * 1.0 + 2.0 * c**2) / 3
    assert orientation_loss(w, normals, v).item() == pytest.approx(expect, rel=1e-6)
    assert orientation_loss(torch.ones(1), -v[:1], v[:1]).item() == 0.0
    with pytest.raises(ValueError, match="weights"):
        orientation_loss(torch.ones(3), normals, v)


def test_normal_difference_closed_form_on_plane_and_sphere():
    plane = lambda x: torch.tensor([0.0, 0.0, 1.0]).expand_as(x)  # noqa: E731
    x = torch.randn(10, 3, generator=rng(1))
    assert normal_smoothness_loss(plane, x, 0.05, rng(2)).item() == 0.0
    # sphere of radius R at x = (R, 0, 0), tangential offset e: ||n1 - n2||^2 = 2 - 2 R / sqrt(R^2 + e^2)
    r, e = 0.5, 0.1
    got = normal_difference(sphere_gradient, torch.tensor([[r, 0.0, 0.0]]), torch.tensor([[0.0, e, 0.0]]))
    assert got.item() == pytest.approx(2 - 2 * r / math.sqrt(r * r + e * e), rel=1e-5)
    # power 1 (total variation): the norm itself
    got = normal_difference(sphere_gradient, torch.tensor([[r, 0.0, 0.0]]), torch.tensor([[0.0, e, 0.0]]), power=1.0)
    assert got.item() == pytest.approx(math.sqrt(2 - 2 * r / math.sqrt(r * r + e * e)), rel=1e-4)
    assert normal_smoothness_loss(plane, x, 0.05, rng(2), power=1.0).item() == pytest.approx(1e-4, rel=1e-3)  # eps
    with pytest.raises(ValueError, match="jitter"):
        normal_smoothness_loss(plane, x, 0.0, rng())
    with pytest.raises(ValueError, match="power"):
        normal_smoothness_loss(plane, x, 0.05, rng(), power=0.0)


def test_normal_smoothness_is_reproducible_and_grows_with_curvature():
    u = torch.nn.functional.normalize(torch.randn(400, 3, generator=rng(3)), dim=-1)
    big = normal_smoothness_loss(sphere_gradient, 1.0 * u, 0.02, rng(4))
    small = normal_smoothness_loss(sphere_gradient, 0.2 * u, 0.02, rng(4))
    assert normal_smoothness_loss(sphere_gradient, 1.0 * u, 0.02, rng(4)).item() == big.item()
    assert small.item() > 10 * big.item()  # ~ (jitter / R)^2: 25x for a 5x smaller radius


def test_opacity_sparsity_and_entropy_values():
    o = torch.tensor([0.0, 1.0])
    assert opacity_sparsity_loss(o, k=0.1).item() == pytest.approx((0.1 + math.sqrt(1.01)) / 2, rel=1e-6)
    assert opacity_entropy_loss(torch.tensor([0.5])).item() == pytest.approx(math.log(2), rel=1e-6)
    assert opacity_entropy_loss(o).item() < 0.01
