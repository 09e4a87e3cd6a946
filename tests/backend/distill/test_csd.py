"""CSD against the closed forms of the 2D Gaussian harness, and its negative-prompt variant."""

import pytest
import torch

from dreamstill.backend.distill import make_method


def test_csd_is_weighted_classifier_score(harness):
    h, prior = harness, harness.prior
    z = h.points()
    out = make_method("csd", prior).gradient(h.make_input(prior, z))
    _, t, eps = h.draws(0)
    x_t = h.noised(prior, z, t, eps)
    w = (1 - prior.alphas_cumprod[t].double())[:, None]
    want = w * (h.closed_eps(prior, x_t, t, h.MU_C, h.COV_C) - h.closed_eps(prior, x_t, t, h.MU_U, h.COV_U))
    torch.testing.assert_close(out.grad.flatten(1).double(), want, rtol=1e-4, atol=1e-6)


def test_csd_negative_prompt_mix(harness):
    """With omega_2 > 0, uncond is the negative prompt and "" is encoded by the prior (here both map to uncond)."""
    h, prior = harness, harness.prior
    z = h.points()
    plain = make_method("csd", prior, guidance=3.0).gradient(h.make_input(prior, z))
    neg = make_method("csd", prior, guidance=3.0, negative_weight=0.5).gradient(h.make_input(prior, z))
    torch.testing.assert_close(neg.grad, plain.grad)  # eps(y_neg) = eps(empty) here, so the extra term is zero
    inp = h.make_input(prior, z)
    inp.uncond = prior.encode_text(["a negative prompt"])  # now eps(y_neg) = eps_c
    neg = make_method("csd", prior, guidance=3.0, negative_weight=0.5).gradient(inp)
    torch.testing.assert_close(neg.grad, plain.grad * (3.0 - 0.5) / 3.0, rtol=1e-5, atol=1e-6)


def test_csd_negative_weight_refuses_the_guidance_options(harness):
    with pytest.raises(ValueError, match="negative_weight"):
        make_method("csd", harness.prior, negative_weight=0.5, perp_neg=True)
    with pytest.raises(ValueError, match="negative_weight"):
        make_method("csd", harness.prior, negative_weight=0.5, cfg_rescale=0.5)
