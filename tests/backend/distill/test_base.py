"""The shared prologue: draw order, noising, the guided call, clipping, and the surrogate loss."""

import torch

from dreamstill.backend.distill import make_method
from dreamstill.backend.distill.base import surrogate_loss


def test_noised_draws_t_then_eps_from_the_generator(harness):
    h, prior = harness, harness.prior
    z = h.points()
    s = make_method("sds", prior).noised(h.make_input(prior, z, seed=11))
    _, t, eps = h.draws(11)
    assert torch.equal(s.t, t) and torch.equal(s.eps, eps)
    torch.testing.assert_close(s.x_t, h.noised(prior, z, t, eps))
    assert s.z.is_contiguous() and not s.z.requires_grad


def test_guided_call_equals_separate_calls(harness):
    h, prior = harness, harness.prior
    z = h.points()
    sds = make_method("sds", prior)
    inp = h.make_input(prior, z)
    s = sds.noised(inp)
    prior.calls = 0
    g = sds.guided(s.x_t, s.t, inp)
    assert prior.calls == 1
    torch.testing.assert_close(g.eps_cond, prior.predict_eps(s.x_t, s.t, prior.encode_text(["a"] * h.B)))
    torch.testing.assert_close(g.eps_uncond, prior.predict_eps(s.x_t, s.t, prior.encode_text([""] * h.B)))
    torch.testing.assert_close(g.eps_cfg, g.eps_uncond + 100.0 * (g.eps_cond - g.eps_uncond))


def test_surrogate_loss_backpropagates_grad_over_batch(harness):
    h, prior = harness, harness.prior
    z = h.points().requires_grad_()
    out = make_method("sds", prior).gradient(h.make_input(prior, z))
    surrogate_loss(z, out.grad).backward()
    torch.testing.assert_close(z.grad, out.grad / h.B)


def test_grad_clip_value_and_norm(harness):
    h, prior = harness, harness.prior
    z = h.points()
    raw = make_method("sds", prior).gradient(h.make_input(prior, z)).grad
    clamped = make_method("sds", prior, grad_clip=0.1).gradient(h.make_input(prior, z)).grad
    torch.testing.assert_close(clamped, raw.clamp(-0.1, 0.1))
    normed = make_method("sds", prior, grad_clip=0.1, grad_clip_mode="norm").gradient(h.make_input(prior, z)).grad
    assert (normed.flatten(1).norm(dim=1) <= 0.1 + 1e-6).all()
    cos = torch.nn.functional.cosine_similarity(normed.flatten(1), raw.flatten(1))
    torch.testing.assert_close(cos, torch.ones(h.B))
