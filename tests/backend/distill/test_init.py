"""The registry, and every method on the tiny random diffusers prior: shapes, finiteness, the surrogate loss."""

import pytest
import torch

from dreamstill.backend.distill import METHODS, DistillInput, available_methods, make_method, method_class
from dreamstill.backend.distill.base import surrogate_loss

FAST = ["sds", "csd", "asd", "ssd", "fsd"]


def test_registry_and_errors(harness):
    assert list(METHODS) == ["sds", "csd", "vsd", "l2vsd", "ssd", "fsd", "asd"]
    assert set(FAST) <= set(available_methods())
    with pytest.raises(ValueError, match="choose one of sds, csd"):
        make_method("sdss", harness.prior)
    defaults = {n: method_class(n).default_guidance for n in ("sds", "csd", "asd", "ssd", "fsd", "vsd", "l2vsd")}
    assert defaults == {"sds": 100.0, "csd": 1.0, "asd": 7.5, "ssd": 1.0, "fsd": 100.0, "vsd": 7.5, "l2vsd": 7.5}


def _input(prior, seed=0, step=0):
    b = 2
    z = prior.encode_images(
        torch.rand(b, 3, prior.image_size, prior.image_size, generator=torch.Generator().manual_seed(9))
    )
    z = z.detach().requires_grad_()
    opacity = torch.zeros(b, 1, prior.image_size, prior.image_size)
    opacity[:, :, 8:24, 8:24] = 1.0
    camera = torch.tensor([[15.0, 30.0, 3.0, 45.0], [0.0, -120.0, 3.0, 45.0]])
    return DistillInput(
        z=z,
        cond=prior.encode_text(["a red cube, front view", "a red cube, back view"]),
        uncond=prior.encode_text([""]),
        step=step,
        total_steps=10,
        rng=torch.Generator().manual_seed(seed),
        camera=camera,
        opacity=opacity,
    )


@pytest.mark.parametrize("name", FAST)
def test_method_runs_on_the_tiny_prior(tiny_prior, name):
    method = make_method(name, tiny_prior)
    inp = _input(tiny_prior)
    out = method.gradient(inp)
    assert out.grad.shape == inp.z.shape and torch.isfinite(out.grad).all() and not out.grad.requires_grad
    assert out.t.shape == (2,) and out.info["grad_norm"] > 0
    surrogate_loss(inp.z, out.grad).backward()
    torch.testing.assert_close(inp.z.grad, out.grad / 2)
