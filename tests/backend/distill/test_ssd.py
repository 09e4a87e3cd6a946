"""SSD against the closed forms of the 2D Gaussian harness; its ablations and the paper's halfway drop of t_max."""

import pytest
import torch

from dreamstill.backend.distill import make_method
from dreamstill.backend.distill.ssd import decompose, variance_reduction_coefficient


def test_sds_estimator_equals_the_sum_of_ssd_terms(harness):
    h, prior = harness, harness.prior
    z = h.points()
    sds = make_method("sds", prior).gradient(h.make_input(prior, z, seed=4))
    _, t, eps = h.draws(4)
    x_t = h.noised(prior, z, t, eps)
    _, e_c, e_u = prior.predict_eps_cfg(x_t, t, prior.encode_text(["a"]), prior.encode_text([""]), 1.0)
    terms = decompose(e_c, e_u, eps, 100.0)
    w = (1 - prior.alphas_cumprod[t]).view(-1, 1, 1, 1)
    torch.testing.assert_close(sds.grad, w * sum(terms.values()), rtol=1e-5, atol=1e-5)


def test_ssd_with_threshold_zero_uses_only_h(harness):
    h, prior = harness, harness.prior
    z = h.points()
    ssd = make_method("ssd", prior, threshold_t=0).gradient(h.make_input(prior, z, seed=1))
    csd = make_method("csd", prior).gradient(h.make_input(prior, z, seed=1))
    torch.testing.assert_close(ssd.grad, csd.grad)
    assert ssd.info["frac_t_le_M"] == 0.0


def _h_and_tilde(h, prior, z, seed):
    _, t, eps = h.draws(seed)
    x_t = h.noised(prior, z, t, eps)
    _, e_c, e_u = prior.predict_eps_cfg(x_t, t, prior.encode_text(["a"]), prior.encode_text([""]), 1.0)
    r = variance_reduction_coefficient(e_c, eps)
    return t, eps, (e_c - e_u).flatten(1), (e_c - r.view(-1, 1, 1, 1) * eps).flatten(1)


def test_ssd_low_t_branch_is_rescaled_and_orthogonal_to_eps(harness):
    h, prior = harness, harness.prior
    z = h.points()
    out = make_method("ssd", prior, threshold_t=1000).gradient(h.make_input(prior, z, seed=6))
    t, eps, h_dir, tilde = _h_and_tilde(h, prior, z, 6)
    w = (1 - prior.alphas_cumprod[t]).view(-1, 1)
    est = out.grad.flatten(1) / w
    torch.testing.assert_close((est * eps.flatten(1)).sum(1), torch.zeros(h.B), atol=1e-5, rtol=0)
    torch.testing.assert_close(est.norm(dim=1), h_dir.norm(dim=1), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.nn.functional.cosine_similarity(est, tilde), torch.ones(h.B))


def test_ssd_mixed_batch_switches_per_sample(harness):
    h, prior = harness, harness.prior
    z = h.points()
    out = make_method("ssd", prior, threshold_t=500).gradient(h.make_input(prior, z, seed=7))
    h_only = make_method("csd", prior).gradient(h.make_input(prior, z, seed=7))
    high = out.t > 500
    assert high.any() and (~high).any()
    torch.testing.assert_close(out.grad[high], h_only.grad[high])
    assert not torch.allclose(out.grad[~high], h_only.grad[~high])


def test_variance_reduced_ablation_keeps_h_above_the_threshold(harness):
    """The paper's "without rescale" ablation: h for t > M, eps_tilde (not rescaled) for t <= M."""
    h, prior = harness, harness.prior
    z = h.points()
    out = make_method("ssd", prior, threshold_t=500, estimator="variance_reduced").gradient(
        h.make_input(prior, z, seed=7)
    )
    t, _, h_dir, tilde = _h_and_tilde(h, prior, z, 7)
    high = t > 500
    assert high.any() and (~high).any()
    w = (1 - prior.alphas_cumprod[t]).view(-1, 1)
    torch.testing.assert_close(out.grad.flatten(1)[high], (w * h_dir)[high], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.grad.flatten(1)[~high], (w * tilde)[~high], rtol=1e-5, atol=1e-6)


def test_ssd_default_drops_t_max_to_500_halfway(harness):
    h, prior = harness, harness.prior
    ssd = make_method("ssd", prior)
    bounds = [ssd.t_bounds(h.make_input(prior, h.points(), step=s, total=1000)) for s in (0, 499, 500, 1000)]
    assert bounds == [(20, 980), (20, 980), (20, 500), (20, 500)]


def test_r_brackets_the_closed_form_optimum_c_star(harness):
    """For a Gaussian, eps_hat(y) = sigma alpha S^{-1}(x - mu) + sigma^2 S^{-1} eps with S = Sigma_t, so
    c* = tr(Cov(eps_hat, eps)) / d = sigma^2 tr(S^{-1}) / d, and E[r] = c* exactly: the first part is odd in eps
    (antithetic pairs eps, -eps cancel it; in 2D its variance is infinite) and the second averages to c*."""
    h, prior = harness, harness.prior
    g = torch.Generator().manual_seed(0)
    n = 4096
    for t_val in (50, 300, 700):
        x0 = torch.tensor([0.3, -0.4]).expand(n, 2).reshape(n, 2, 1, 1)
        t = torch.full((n,), t_val)
        eps = torch.randn(n // 2, 2, 1, 1, generator=g)
        eps = torch.cat([eps, -eps])
        e_c = prior.predict_eps(h.noised(prior, x0, t, eps), t, prior.encode_text(["a"]))
        r = variance_reduction_coefficient(e_c.double(), eps.double())
        abar = prior.alphas_cumprod[t_val].double()
        s_t = abar * h.COV_C + (1 - abar) * torch.eye(2, dtype=torch.float64)
        c_star = float((1 - abar) * torch.linalg.inv(s_t).trace() / 2)
        assert r.min() <= c_star <= r.max()
        assert float(r.mean()) == pytest.approx(c_star, rel=0.05)


def test_ssd_options_are_checked(harness):
    with pytest.raises(ValueError, match="estimator"):
        make_method("ssd", harness.prior, estimator="bogus")
    with pytest.raises(ValueError, match="cfg_rescale"):
        make_method("ssd", harness.prior, cfg_rescale=0.5)
    with pytest.raises(ValueError, match="threshold_t"):
        make_method("ssd", harness.prior, threshold_t=-1)
    with pytest.warns(FutureWarning, match="threshold_t"):
        assert make_method("ssd", harness.prior, threshold=300).config.threshold_t == 300
