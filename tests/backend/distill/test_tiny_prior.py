"""Every method of this package on the tiny random diffusers prior: shapes, finiteness, batching, checkpoints."""

import io

import pytest
import torch

from dreamstill.backend.distill import make_method
from dreamstill.backend.distill.base import DistillInput, surrogate_loss

METHODS = ["sds", "csd", "asd", "ssd", "fsd"]


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
        generator=torch.Generator().manual_seed(seed),
        camera=camera,
        opacity=opacity,
    )


@pytest.mark.parametrize("name", METHODS)
def test_method_runs_on_the_tiny_prior(tiny_prior, name):
    method = make_method(name, tiny_prior)
    inp = _input(tiny_prior)
    out = method.gradient(inp)
    assert out.grad.shape == inp.z.shape and torch.isfinite(out.grad).all() and not out.grad.requires_grad
    assert out.t.shape == (2,) and out.info["grad_norm"] > 0
    surrogate_loss(inp.z, out.grad).backward()
    torch.testing.assert_close(inp.z.grad, out.grad / 2)


def test_fsd_state_survives_a_weights_only_checkpoint(tiny_prior):
    fsd = make_method("fsd", tiny_prior)
    first = fsd.gradient(_input(tiny_prior, seed=0, step=3))
    buf = io.BytesIO()
    torch.save(fsd.state_dict(), buf)
    buf.seek(0)
    resumed = make_method("fsd", tiny_prior)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    # a different generator: the world map comes from the checkpoint, not from a fresh draw
    out = resumed.gradient(_input(tiny_prior, seed=123, step=3))
    torch.testing.assert_close(out.grad, first.grad)
