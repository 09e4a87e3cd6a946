"""Generated fields' decodings: the SDF geometry (a ball when fresh, VolSDF density, autograd gradient) beside the
density blob, for every architecture."""

import pytest
import torch

from dreamstill.backend.fields.regularizers import eikonal_loss
from dreamstill.backend.generators import ARCHITECTURES, build_generator
from dreamstill.backend.generators.base import SDFDecoding
from dreamstill.backend.priors.base import TextEmbedding


def text_batch(b=2, length=5, dim=64, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return TextEmbedding(torch.randn(b, length, dim, generator=g).to(dtype), torch.randn(b, dim, generator=g).to(dtype))


def sdf_generator(arch, perturb=0.0, dtype=torch.float32):
    torch.manual_seed(0)
    gen = build_generator(arch, text_dim=64, geometry="sdf").to(dtype)
    if perturb:
        with torch.no_grad():  # move off the initialisation so the distance is not the ball
            for p in gen.parameters():
                p.add_(torch.randn_like(p) * perturb)
    return gen


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_fresh_sdf_generator_is_the_ball_of_radius_r0(arch):
    fields = sdf_generator(arch)(text_batch())
    x = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [0.0, -0.4, 0.3], [0.0, 0.0, 0.8], [0.6, 0.6, 0.0]])
    expected = x.norm(dim=-1) - 0.5  # max(||x|| - r0, ||x|| - bound) = ||x|| - r0 for r0 < bound
    for b in range(2):
        torch.testing.assert_close(fields[b].sdf(x), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_volsdf_density_is_one_over_two_beta_on_the_surface(arch):
    gen = sdf_generator(arch)
    gen.decoding.set_beta(0.02)
    field = gen(text_batch())[0]
    on_surface = torch.nn.functional.normalize(torch.randn(16, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    density, albedo = field(0.5 * on_surface)
    torch.testing.assert_close(density, torch.full((16,), 1 / (2 * 0.02)), rtol=1e-5, atol=0)
    assert ((albedo > 0) & (albedo < 1)).all()
    deep = field.density(torch.zeros(1, 3))  # 1/beta (1 - exp(-0.5/beta) / 2) ~ 1/beta
    torch.testing.assert_close(deep, torch.tensor([50.0]), rtol=1e-5, atol=0)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_sdf_gradient_matches_finite_differences(arch):
    gen = sdf_generator(arch, perturb=0.05, dtype=torch.float64)
    field = gen(text_batch(dtype=torch.float64))[1]
    x = (torch.rand(32, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2 - 1) * 0.55
    d, grad = field.sdf_with_gradient(x)
    assert not torch.allclose(d, x.norm(dim=-1) - 0.5)  # perturbed: not the ball
    eps = 1e-6
    fd = torch.stack(
        [(field.sdf(x + eps * e) - field.sdf(x - eps * e)) / (2 * eps) for e in torch.eye(3, dtype=torch.float64)], -1
    )
    torch.testing.assert_close(grad, fd, rtol=1e-4, atol=1e-5)
    density, _, grad_density = field.forward_with_gradient(x)
    torch.testing.assert_close(density, field.density(x))
    beta = float(gen.decoding.beta)
    slope = -torch.exp(-d.abs() / beta) / (2 * beta * beta)  # d density / d d
    torch.testing.assert_close(grad_density, slope[:, None] * grad)
    torch.testing.assert_close(field.normals(x), torch.nn.functional.normalize(grad, dim=-1))


def test_eikonal_term_trains_the_generator_through_the_gradient():
    """create_graph: a loss on grad d reaches the generator's weights (double backward through the lookups)."""
    gen = sdf_generator("triplane", perturb=0.05)
    field = gen(text_batch())[0]
    x = torch.rand(64, 3, generator=torch.Generator().manual_seed(3)) - 0.5
    loss = eikonal_loss(field.sdf_with_gradient(x)[1])
    assert float(loss.detach()) > 0
    loss.backward()
    assert gen.queries.grad is not None and gen.queries.grad.abs().sum() > 0
    with torch.no_grad():  # without gradients, nothing keeps a graph
        d, grad = field.sdf_with_gradient(x)
    assert not d.requires_grad and not grad.requires_grad


def test_geometry_is_checked_and_the_density_generator_is_unchanged():
    with pytest.raises(ValueError, match="geometry 'mesh' is unknown; use one of density, sdf"):
        build_generator("triplane", text_dim=64, geometry="mesh")
    density_gen = build_generator("triplane", text_dim=64)
    assert not any(k.startswith("decoding") for k in density_gen.state_dict())  # shipped checkpoints still load
    sdf_gen = build_generator("triplane", text_dim=64, geometry="sdf")
    assert set(sdf_gen.state_dict()) - set(density_gen.state_dict()) == {"decoding.beta"}
    view = density_gen(text_batch())[0]
    assert not view.supports_analytic_gradient
    with pytest.raises(ValueError, match="geometry=sdf"):
        view.sdf(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="sphere_radius"):
        SDFDecoding(bound=1.0, sphere_radius=1.5)


def test_lit_render_of_an_sdf_field_takes_the_gradient_path():
    from dreamstill.backend.render import render
    from dreamstill.backend.render.cameras import orbit_cameras

    field = sdf_generator("triplane")(text_batch())[0]
    assert field.supports_analytic_gradient
    out = render(field, orbit_cameras(1), 8, 8, shading="lambertian", num_samples=32, num_importance=8)
    centre = out.normal[0, 4, 4]  # the ball's front: the normal points back at the camera
    camera = orbit_cameras(1).position[0]
    cosine = torch.nn.functional.cosine_similarity(centre, camera, dim=0)
    assert out.opacity[0, 4, 4, 0] > 0.99 and cosine > 0.9
