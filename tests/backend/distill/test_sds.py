"""SDS against the closed forms of the 2D Gaussian harness."""

import pytest
import torch

from dreamstill.backend.distill import make_method


@pytest.mark.parametrize("guidance", [1.0, 7.5, 100.0])
def test_sds_gradient_is_weighted_cfg_minus_noise(harness, guidance):
    h, prior = harness, harness.prior
    z = h.points()
    out = make_method("sds", prior, guidance=guidance).gradient(h.make_input(prior, z))
    _, t, eps = h.draws(0)
    x_t = h.noised(prior, z, t, eps)
    e_c, e_u = h.closed_eps(prior, x_t, t, h.MU_C, h.COV_C), h.closed_eps(prior, x_t, t, h.MU_U, h.COV_U)
    w = (1 - prior.alphas_cumprod[t].double())[:, None]
    want = w * (e_u + guidance * (e_c - e_u) - eps.flatten(1).double())
    assert torch.equal(out.t, t)
    torch.testing.assert_close(out.grad.flatten(1).double(), want, rtol=1e-4, atol=1e-5)


def test_sds_uses_one_batched_prior_call(harness):
    h, prior = harness, harness.prior
    prior.calls = 0
    make_method("sds", prior).gradient(h.make_input(prior, h.points()))
    assert prior.calls == 1


def test_sds_default_guidance_is_dreamfusions(harness):
    assert make_method("sds", harness.prior).guidance == 100.0
    assert make_method("sds", harness.prior, guidance=3).guidance == 3
    with pytest.raises(ValueError, match="guidance must be >= 0"):
        make_method("sds", harness.prior, guidance=-1)
