"""SDFField: the VolSDF density (closed form), the closed-form distance gradient, bound clipping, rendering."""

import math

import pytest
import torch

from dreamstill.backend.fields import HashGridConfig, SDFField, SDFFieldConfig
from dreamstill.backend.fields.sdf import laplace_cdf, volsdf_density, volsdf_density_derivative
from dreamstill.backend.fields.sdf_init import SDFGrid, SDFInitConfig, fit_sdf_field

SMALL = HashGridConfig(n_levels=4, log2_hashmap_size=12, base_resolution=4, max_resolution=32, backend="torch")


def rng(seed=0):
    return torch.Generator().manual_seed(seed)


def small_field(**kw) -> SDFField:
    return SDFField(SDFFieldConfig(grid=SMALL, albedo_grid=SMALL, hidden_dim=16, **kw), rng=rng())


def sphere_field(radius=0.5, **kw) -> SDFField:
    """The untrained field with its MLP output zeroed: exactly d(x) = ||x|| - radius."""
    f = small_field(sphere_radius=radius, **kw)
    with torch.no_grad():
        f.mlp[-1].weight.zero_()
        f.mlp[-1].bias.zero_()
    return f


# --- the Laplace CDF density ----------------------------------------------------------------------------------------


def test_laplace_cdf_closed_form_values():
    beta = 0.1
    s = torch.tensor([0.0, beta, -beta, 2 * beta, -50.0, 50.0])
    expect = torch.tensor([0.5, 1 - 0.5 * math.exp(-1), 0.5 * math.exp(-1), 1 - 0.5 * math.exp(-2), 0.0, 1.0])
    assert torch.allclose(laplace_cdf(s, beta), expect, atol=1e-7)


def test_volsdf_density_is_half_over_beta_on_the_surface_and_one_over_beta_inside():
    beta = 0.05
    d = torch.tensor([0.0, -10.0, 10.0, 0.1])
    density = volsdf_density(d, beta)
    assert density[0].item() == pytest.approx(1 / (2 * beta))
    assert density[1].item() == pytest.approx(1 / beta)
    assert density[2].item() == pytest.approx(0.0, abs=1e-30)
    assert density[3].item() == pytest.approx(math.exp(-0.1 / beta) / (2 * beta), rel=1e-5)


def test_volsdf_density_derivative_matches_autograd():
    beta = 0.07
    d = torch.linspace(-0.3, 0.3, 25, dtype=torch.float64).requires_grad_(True)
    (g,) = torch.autograd.grad(volsdf_density(d, beta).sum(), d)
    # away from the kink at 0 (sign() there) the closed form is the exact derivative
    keep = d.detach().abs() > 1e-9
    assert torch.allclose(volsdf_density_derivative(d.detach(), beta)[keep], g[keep], rtol=1e-10)


# --- the field -----------------------------------------------------------------------------------------------------


def test_zeroed_field_is_the_sphere_bias_and_its_density():
    f = sphere_field(radius=0.4, beta=0.02)
    x = torch.tensor([[0.0, 0.0, 0.0], [0.4, 0.0, 0.0], [0.0, 0.7, 0.0], [0.3, 0.3, 0.3]])
    d = f.sdf(x)
    assert torch.allclose(d, x.norm(dim=-1) - 0.4, atol=1e-6)
    assert torch.allclose(f.density(x), volsdf_density(d, 0.02), rtol=1e-6)


def test_field_is_clipped_to_the_bounding_sphere():
    f = small_field(bound=1.0)
    with torch.no_grad():
        f.mlp[-1].bias.fill_(-5.0)  # the raw field says "inside" everywhere
    x = torch.tensor([[0.9, 0.9, 0.0], [0.0, 0.0, 0.2]])
    d = f.sdf(x)
    assert d[0].item() == pytest.approx(math.hypot(0.9, 0.9) - 1.0, abs=1e-6)  # outside the ball: d = ||x|| - bound
    assert d[1].item() < 0


def test_closed_form_gradient_matches_autograd_for_a_random_field():
    f = small_field()
    with torch.no_grad():
        for p in f.encoding.parameters():
            p.normal_(0, 0.3, generator=rng(1))
    x = (torch.rand(64, 3, generator=rng(2)) * 2 - 1) * 0.5
    d, grad = f.sdf_with_gradient(x)
    xa = x.clone().requires_grad_(True)
    (g_auto,) = torch.autograd.grad(f.sdf(xa).sum(), xa)
    assert torch.allclose(d, f.sdf(x), atol=1e-6)
    assert torch.allclose(grad, g_auto, atol=1e-4)
    density, _, grad_density = f.forward_with_gradient(x)
    xs = x.clone().requires_grad_(True)
    (gs_auto,) = torch.autograd.grad(f.density(xs).sum(), xs)
    assert torch.allclose(grad_density, gs_auto, rtol=1e-3, atol=1e-3)


def test_gradient_trains_the_field_by_first_order_autograd():
    f = small_field()
    x = torch.rand(32, 3, generator=rng(3)) - 0.5
    _, grad = f.sdf_with_gradient(x)
    ((grad.norm(dim=-1) - 2.0) ** 2).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in f.encoding.parameters())


def test_beta_anneals_learns_and_respects_its_floor():
    f = small_field(beta=0.05, beta_min=0.01)
    assert f.beta.item() == pytest.approx(0.05)
    f.set_beta(0.02)
    assert f.beta.item() == pytest.approx(0.02)
    f.set_beta(0.0)
    assert f.beta.item() == pytest.approx(0.01)
    assert "beta_offset" not in dict(f.named_parameters())
    learned = small_field(learn_beta=True)
    assert "beta_offset" in dict(learned.named_parameters())


def test_freeze_geometry_leaves_only_the_albedo_trainable():
    f = small_field()
    f.freeze_geometry()
    trainable = {n for n, p in f.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("albedo") for n in trainable)
    f.freeze_geometry(False)
    assert all(p.requires_grad for p in f.parameters())


def test_bad_config_says_what_to_change():
    with pytest.raises(ValueError, match="sphere_radius"):
        SDFFieldConfig(sphere_radius=2.0).validate()
    with pytest.raises(ValueError, match="beta"):
        SDFFieldConfig(beta=0.0).validate()
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        small_field().sdf(torch.zeros(4, 2))


def test_normals_of_a_fitted_sphere_point_outward():
    n = 33
    axis = torch.linspace(-1, 1, n)
    pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1)
    grid = SDFGrid((pts.norm(dim=-1) - 0.6).numpy(), lo=-1.0, spacing=2 / (n - 1))
    f = small_field(sphere_radius=0.3)  # starts as a ball of radius 0.3, must grow to 0.6
    fit_sdf_field(f, grid, SDFInitConfig(fit_steps=150, fit_points=2048), rng=rng(4))
    u = torch.nn.functional.normalize(torch.randn(200, 3, generator=rng(5)), dim=-1)
    x = 0.6 * u
    assert f.sdf(x).abs().max().item() < 0.05
    cos = (f.normals(x) * u).sum(-1)
    assert cos.min().item() > 0.9


def test_renders_a_solid_lit_sphere_with_outward_normals():
    from dreamstill.backend.render import render
    from dreamstill.backend.render.cameras import orbit_cameras

    f = sphere_field(radius=0.5, beta=0.01)
    cams = orbit_cameras(1, elevation=0.0, distance=3.0)
    out = render(f, cams, 16, 16, shading="lambertian", num_samples=96)
    assert out.opacity[0, 8, 8, 0].item() > 0.99  # the centre ray hits the ball
    assert out.opacity[0, 0, 0, 0].item() < 1e-3  # the corner ray misses it
    # the centre pixel's normal points back at the camera (which sits on +X at azimuth 0)
    n = torch.nn.functional.normalize(out.normal[0, 8, 8], dim=-1)
    to_camera = torch.nn.functional.normalize(cams.position[0], dim=-1)
    assert (n * to_camera).sum().item() > 0.95
