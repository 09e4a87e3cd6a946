"""Test-time refinement: a prompt's generated field as trainable copies that start where the generator is, and a
per-prompt optimizer that moves them (and never the generator)."""

import pytest
import torch

from dreamstill.backend.generators import ARCHITECTURES, build_generator
from dreamstill.backend.priors.base import TextEmbedding
from dreamstill.protocol import JobSpec


def text_batch(b=3, length=5, dim=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TextEmbedding(torch.randn(b, length, dim, generator=g), torch.randn(b, dim, generator=g))


def perturbed_generator(arch: str, seed: int = 0, text_dim: int = 64):
    """A generator moved off its blob initialisation, so prompts give different fields."""
    torch.manual_seed(seed)
    gen = build_generator(arch, text_dim=text_dim)
    with torch.no_grad():
        for p in gen.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return gen


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_refinable_field_starts_as_the_prompts_field(arch):
    from dreamstill.backend.generators.refine import RefinableField

    gen = perturbed_generator(arch)
    with torch.no_grad():
        fields = gen(text_batch())
        field = RefinableField(fields, index=1)
        x = torch.rand(200, 3) * 2 - 1
        sigma, albedo = field(x)
        want_sigma, want_albedo = fields[1](x)
    torch.testing.assert_close(sigma, want_sigma, rtol=0, atol=0)
    torch.testing.assert_close(albedo, want_albedo, rtol=0, atol=0)
    torch.testing.assert_close(field.density(x), want_sigma, rtol=0, atol=0)
    assert not torch.allclose(sigma, fields[0].density(x))  # prompt 1's field, not prompt 0's
    assert field.bound == fields.bound and all(p.requires_grad for p in field.parameters())


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_training_the_copy_leaves_the_generator_alone(arch):
    from dreamstill.backend.generators.refine import RefinableField

    gen = perturbed_generator(arch)
    before = [p.detach().clone() for p in gen.parameters()]
    with torch.no_grad():
        fields = gen(text_batch())
    field = RefinableField(fields, index=0)
    opt = torch.optim.SGD(field.parameters(), lr=0.1)
    x = torch.rand(100, 3) * 2 - 1
    start = field.density(x).detach().clone()
    field.density(x).sum().backward()
    opt.step()
    assert not torch.allclose(field.density(x), start)  # the copy moved
    assert all(torch.equal(a, b) for a, b in zip(before, gen.parameters()))  # the generator did not
    torch.testing.assert_close(fields[0].density(x), start, rtol=0, atol=0)  # nor its output


def test_refine_optimizer_runs_the_jobs_method_for_refine_steps(tiny_prior):
    from dreamstill.backend.generators.refine import REFINE_LR, RefinableField, refine_optimizer

    text = tiny_prior.encode_text(["a red cube"])
    gen = perturbed_generator("triplane", text_dim=text.tokens.shape[-1])
    with torch.no_grad():
        fields = gen(text)
    spec = JobSpec(
        prompt="a red cube", prior="tiny", mode="instant", refine_steps=2, method="asd", resolution=16, batch_size=1
    )
    optimizer = refine_optimizer(fields, 0, spec, tiny_prior)
    assert isinstance(optimizer.field, RefinableField) and optimizer.spec.steps == 2
    assert optimizer.optimizer.param_groups[0]["lr"] == REFINE_LR
    x = torch.rand(100, 3) * 2 - 1
    start = optimizer.field.density(x).detach().clone()
    progress = [e.step for e in optimizer.run() if hasattr(e, "loss")]
    assert progress == [1, 2] and optimizer.step == 2
    assert not torch.allclose(optimizer.field.density(x).detach(), start)
    lr_spec = JobSpec(**{**spec.to_dict(), "lr": 0.003})
    assert refine_optimizer(fields, 0, lr_spec, tiny_prior).optimizer.param_groups[0]["lr"] == 0.003
