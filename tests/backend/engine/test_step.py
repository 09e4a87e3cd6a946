"""The distillation step both loops share: the shading schedule in closed form, and render -> encode -> gradient ->
surrogate loss wired so that dL/dz = grad / B and the method sees what it should."""

from __future__ import annotations

import pytest
import torch

from dreamstill.backend.distill.base import DistillOutput
from dreamstill.backend.engine.step import DistillStep, DistillViews, OpacitySparsity, ShadingSchedule
from dreamstill.backend.priors.base import TextEmbedding
from dreamstill.backend.render import RenderOutput, orbit_cameras


def rng(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_albedo_only_early_without_touching_the_rng():
    schedule, g = ShadingSchedule(albedo_until=0.25), rng()
    before = g.get_state()
    assert [schedule.choose(step, 100, g) for step in (0, 10, 24)] == ["albedo"] * 3
    assert torch.equal(g.get_state(), before)  # no draw: the rest of the run's draws do not shift


def test_one_draw_per_choice_mapped_by_the_probabilities():
    schedule = ShadingSchedule(albedo_until=0.0, lambertian_probability=0.5, textureless_probability=0.3)
    g, replay = rng(5), rng(5)
    for _ in range(200):
        u = torch.rand((), generator=replay).item()
        expected = "lambertian" if u < 0.5 else "textureless" if u < 0.8 else "albedo"
        assert schedule.choose(50, 100, g) == expected
    assert torch.equal(g.get_state(), replay.get_state())


def test_default_schedule_is_dreamfusions():
    schedule, g = ShadingSchedule(), rng(1)
    picks = [schedule.choose(10, 100, g) for _ in range(4000)]
    assert picks.count("textureless") == 0
    assert picks.count("lambertian") / 4000 == pytest.approx(0.75, abs=0.03)
    with pytest.raises(ValueError, match="sum to at most 1"):
        ShadingSchedule(lambertian_probability=0.8, textureless_probability=0.3)


class FixedGradient:
    """A method stub: returns a fixed gradient and keeps what it was given."""

    def __init__(self, grad: torch.Tensor):
        self.grad, self.seen = grad, None

    def gradient(self, inp):
        self.seen = inp
        return DistillOutput(grad=self.grad, t=torch.zeros(inp.z.shape[0]))


def test_loss_gradient_on_z_is_the_methods_gradient_over_b():
    b = 3
    grad = torch.randn(b, 4, 8, 8, generator=rng(2))
    method = FixedGradient(grad)
    step = DistillStep(prior=None, method=method, resolution=16)
    z = torch.randn(b, 4, 8, 8, generator=rng(3), requires_grad=True)
    opacity = torch.rand(b, 1, 16, 16, generator=rng(4), requires_grad=True)
    views = DistillViews(z, opacity, torch.zeros(b, 4), [])
    cond = uncond = TextEmbedding(torch.zeros(1, 2, 8), None)
    loss = step.loss(views, cond, uncond, step=7, total_steps=20, noise_rng=rng(6))
    loss.backward()
    torch.testing.assert_close(z.grad, grad / b)
    torch.testing.assert_close(loss.detach(), 0.5 * grad.pow(2).sum() / b)
    seen = method.seen
    assert (seen.step, seen.total_steps) == (7, 20) and seen.opacity.shape == (b, 1, 16, 16)
    assert not seen.opacity.requires_grad  # the method gets the detached opacity at the render's resolution
    torch.testing.assert_close(seen.opacity, opacity.detach())


def test_view_groups_concatenate_in_order_and_sparsity_is_the_mean_opacity():
    def group(value: float, n: int) -> DistillViews:
        out = RenderOutput(*(torch.zeros(n, 1, 1, 1) for _ in range(6)))
        return DistillViews(torch.full((n, 1, 2, 2), value), torch.full((n, 1, 4, 4), value), torch.zeros(n, 4), [out])

    views = DistillViews.cat([group(0.2, 1), group(0.8, 3)])
    assert views.z[:, 0, 0, 0].tolist() == pytest.approx([0.2, 0.8, 0.8, 0.8]) and len(views.outputs) == 2
    assert float(OpacitySparsity(2.0)(views)) == pytest.approx(2.0 * (0.2 + 3 * 0.8) / 4)
    single = group(0.5, 2)
    assert DistillViews.cat([single]) is single


def test_render_draws_shading_and_lights_from_the_camera_rng(tiny_prior):
    """Lit renders draw their point lights from camera_rng after the shading draw; noise_rng only jitters samples."""
    from dreamstill.backend.fields import Background, DensityField, DensityFieldConfig, HashGridConfig
    from dreamstill.backend.render import sample_light_positions

    torch.manual_seed(0)
    field = DensityField(DensityFieldConfig(grid=HashGridConfig(backend="torch")))
    step = DistillStep(tiny_prior, None, 8, shading=ShadingSchedule(albedo_until=0.0, lambertian_probability=1.0))
    cams = orbit_cameras(2, elevation=15.0)
    cam_rng = rng(11)
    views = step.render(field, Background(), cams, 0, 10, cam_rng, rng(12))
    replay = rng(11)
    torch.rand((), generator=replay)  # the shading draw
    sample_light_positions(cams, replay)  # the lights
    assert torch.equal(cam_rng.get_state(), replay.get_state())
    assert views.z.shape[:2] == (2, 3) and views.opacity.shape == (2, 1, 8, 8)  # opacity at the render size
    assert views.outputs[0].normal is not None  # a lambertian render
    torch.testing.assert_close(views.camera, cams.as_condition())
