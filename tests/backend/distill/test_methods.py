"""Identities of the score-distillation methods against closed forms of the analytic Gaussian prior."""

import pytest
import torch

from dreamstill.backend.distill import METHODS, available_methods, make_method, method_class
from dreamstill.backend.distill.analytic import GaussianPrior
from dreamstill.backend.distill.base import DistillInput, surrogate_loss
from dreamstill.backend.distill.fsd import ddim_step, euler_step
from dreamstill.backend.distill.ssd import decompose, variance_reduction_coefficient

MU_C = torch.tensor([1.0, 2.0], dtype=torch.float64)
COV_C = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)
MU_U = torch.tensor([0.0, 0.5], dtype=torch.float64)
COV_U = torch.tensor([[2.0, 0.3], [0.3, 1.5]], dtype=torch.float64)
B = 6


@pytest.fixture()
def prior():
    return GaussianPrior(MU_C, COV_C, MU_U, COV_U)


def closed_eps(prior, x, t, mu, cov):
    """sigma_t (alpha_t^2 Sigma + sigma_t^2 I)^{-1} (x - alpha_t mu), by a direct solve (independent of analytic.py)."""
    abar = prior.alphas_cumprod[t].double()
    out = []
    for i in range(x.shape[0]):
        a, s2 = abar[i].sqrt(), 1 - abar[i]
        cov_t = abar[i] * cov + s2 * torch.eye(2, dtype=torch.float64)
        out.append(s2.sqrt() * torch.linalg.solve(cov_t, x[i].flatten().double() - a * mu))
    return torch.stack(out)


def make_input(prior, z, seed=0, step=0, total=100, **kw):
    return DistillInput(
        z=z,
        cond=prior.encode_text(["a point"]),
        uncond=prior.encode_text([""]),
        step=step,
        total_steps=total,
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )


def draws(seed, n=B, t_range=(20, 980)):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(t_range[0], t_range[1] + 1, (n,), generator=g)
    eps = torch.randn(n, 2, 1, 1, generator=g)
    return g, t, eps


def points(seed=3):
    return torch.randn(B, 2, 1, 1, generator=torch.Generator().manual_seed(seed)) * 1.5


def noised(prior, z, t, eps):
    abar = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    return abar.sqrt() * z + (1 - abar).sqrt() * eps


# --- SDS -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("guidance", [1.0, 7.5, 100.0])
def test_sds_gradient_is_weighted_cfg_minus_noise(prior, guidance):
    z = points()
    out = make_method("sds", prior, guidance=guidance).gradient(make_input(prior, z))
    _, t, eps = draws(0)
    x_t = noised(prior, z, t, eps)
    e_c, e_u = closed_eps(prior, x_t, t, MU_C, COV_C), closed_eps(prior, x_t, t, MU_U, COV_U)
    w = (1 - prior.alphas_cumprod[t].double())[:, None]
    want = w * (e_u + guidance * (e_c - e_u) - eps.flatten(1).double())
    assert torch.equal(out.t, t)
    torch.testing.assert_close(out.grad.flatten(1).double(), want, rtol=1e-4, atol=1e-5)


def test_sds_uses_one_batched_prior_call_equal_to_two_calls(prior):
    z = points()
    prior.calls = 0
    make_method("sds", prior).gradient(make_input(prior, z))
    assert prior.calls == 1
    _, t, eps = draws(0)
    x_t = noised(prior, z, t, eps)
    cfg, e_c, e_u = prior.predict_eps_cfg(x_t, t, prior.encode_text(["a"]), prior.encode_text([""]), 7.5)
    torch.testing.assert_close(e_c, prior.predict_eps(x_t, t, prior.encode_text(["a"] * B)))
    torch.testing.assert_close(e_u, prior.predict_eps(x_t, t, prior.encode_text([""] * B)))


def test_surrogate_loss_backpropagates_the_gradient(prior):
    z = points().requires_grad_()
    out = make_method("sds", prior).gradient(make_input(prior, z))
    surrogate_loss(z, out.grad).backward()
    torch.testing.assert_close(z.grad, out.grad / B)


def test_grad_clip_value_and_norm(prior):
    z = points()
    raw = make_method("sds", prior).gradient(make_input(prior, z)).grad
    clamped = make_method("sds", prior, grad_clip=0.1).gradient(make_input(prior, z)).grad
    torch.testing.assert_close(clamped, raw.clamp(-0.1, 0.1))
    normed = make_method("sds", prior, grad_clip=0.1, grad_clip_mode="norm").gradient(make_input(prior, z)).grad
    norms = normed.flatten(1).norm(dim=1)
    assert (norms <= 0.1 + 1e-6).all()
    cos = torch.nn.functional.cosine_similarity(normed.flatten(1), raw.flatten(1))
    torch.testing.assert_close(cos, torch.ones(B))


# --- CSD and ASD -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("s", [2.0, 7.5])
def test_asd_with_eta_zero_is_s_minus_one_times_csd(prior, s):
    z = points()
    asd = make_method("asd", prior, guidance=s, eta=0.0).gradient(make_input(prior, z, seed=5))
    csd = make_method("csd", prior).gradient(make_input(prior, z, seed=5))
    assert torch.equal(asd.t, csd.t)
    torch.testing.assert_close(asd.grad, (s - 1) * csd.grad, rtol=1e-5, atol=1e-6)
    csd_scaled = make_method("csd", prior, guidance=s - 1).gradient(make_input(prior, z, seed=5))
    torch.testing.assert_close(asd.grad, csd_scaled.grad, rtol=1e-5, atol=1e-6)


def test_csd_is_weighted_classifier_score(prior):
    z = points()
    out = make_method("csd", prior).gradient(make_input(prior, z))
    _, t, eps = draws(0)
    x_t = noised(prior, z, t, eps)
    w = (1 - prior.alphas_cumprod[t].double())[:, None]
    want = w * (closed_eps(prior, x_t, t, MU_C, COV_C) - closed_eps(prior, x_t, t, MU_U, COV_U))
    torch.testing.assert_close(out.grad.flatten(1).double(), want, rtol=1e-4, atol=1e-6)


def test_csd_negative_prompt_mix(prior):
    """With omega_2 > 0, uncond is the negative prompt and "" is encoded by the prior (here both map to uncond)."""
    z = points()
    plain = make_method("csd", prior, guidance=3.0).gradient(make_input(prior, z))
    neg = make_method("csd", prior, guidance=3.0, negative_weight=0.5).gradient(make_input(prior, z))
    torch.testing.assert_close(neg.grad, plain.grad)  # eps(y_neg) = eps(empty) here, so the extra term is zero
    inp = make_input(prior, z)
    inp.uncond = prior.encode_text(["a negative prompt"])  # now eps(y_neg) = eps_c
    neg = make_method("csd", prior, guidance=3.0, negative_weight=0.5).gradient(inp)
    torch.testing.assert_close(neg.grad, plain.grad * (3.0 - 0.5) / 3.0, rtol=1e-5, atol=1e-6)


def test_asd_closed_form_same_noise_shifted_conditional(prior):
    z = points()
    prior.calls = 0
    out = make_method("asd", prior).gradient(make_input(prior, z, seed=2))
    assert prior.calls == 1  # cond@t, uncond@t and cond@t+dt in one batch
    g, t, eps = draws(2)
    u = torch.rand(B, generator=g)
    dt = (u * (0.1 * (t - 20).float()).clamp(min=0).minimum((999 - t).float())).long()
    t2 = (t + dt).clamp(1, 999)
    assert out.info["dt"] == pytest.approx(float(dt.float().mean()))
    assert ((t2 - t) <= 0.1 * (t - 20)).all() and (t2 >= t).all()
    e_c = closed_eps(prior, noised(prior, z, t, eps), t, MU_C, COV_C)
    e_u = closed_eps(prior, noised(prior, z, t, eps), t, MU_U, COV_U)
    e_c2 = closed_eps(prior, noised(prior, z, t2, eps), t2, MU_C, COV_C)
    w = (1 - prior.alphas_cumprod[t].double())[:, None]  # sigma_t^2 at t, not t + dt
    torch.testing.assert_close(out.grad.flatten(1).double(), w * (e_u + 7.5 * (e_c - e_u) - e_c2), rtol=1e-4, atol=1e-6)


def test_asd_shift_is_clipped_to_the_schedule_range(prior):
    asd = make_method("asd", prior, eta=5.0, min_step_percent=0.5, max_step_percent=0.999)
    inp = make_input(prior, points())
    t = torch.tensor([500, 700, 900, 998, 999, 999])
    t2 = asd.shifted_t(t, inp)
    assert (t2 <= 999).all() and (t2 >= t).all()


# --- SSD -------------------------------------------------------------------------------------------------------
def test_sds_estimator_equals_the_sum_of_ssd_terms(prior):
    z = points()
    sds = make_method("sds", prior).gradient(make_input(prior, z, seed=4))
    _, t, eps = draws(4)
    x_t = noised(prior, z, t, eps)
    _, e_c, e_u = prior.predict_eps_cfg(x_t, t, prior.encode_text(["a"]), prior.encode_text([""]), 1.0)
    terms = decompose(e_c, e_u, eps, 100.0)
    w = (1 - prior.alphas_cumprod[t]).view(-1, 1, 1, 1)
    torch.testing.assert_close(sds.grad, w * sum(terms.values()), rtol=1e-5, atol=1e-5)


def test_ssd_with_threshold_zero_uses_only_h(prior):
    z = points()
    ssd = make_method("ssd", prior, threshold=0).gradient(make_input(prior, z, seed=1))
    csd = make_method("csd", prior).gradient(make_input(prior, z, seed=1))
    torch.testing.assert_close(ssd.grad, csd.grad)
    assert ssd.info["frac_t_le_M"] == 0.0


def test_ssd_low_t_branch_is_rescaled_and_orthogonal_to_eps(prior):
    z = points()
    out = make_method("ssd", prior, threshold=1000).gradient(make_input(prior, z, seed=6))
    _, t, eps = draws(6)
    x_t = noised(prior, z, t, eps)
    _, e_c, e_u = prior.predict_eps_cfg(x_t, t, prior.encode_text(["a"]), prior.encode_text([""]), 1.0)
    w = (1 - prior.alphas_cumprod[t]).view(-1, 1)
    est = out.grad.flatten(1) / w
    torch.testing.assert_close((est * eps.flatten(1)).sum(1), torch.zeros(B), atol=1e-5, rtol=0)
    torch.testing.assert_close(est.norm(dim=1), (e_c - e_u).flatten(1).norm(dim=1), rtol=1e-4, atol=1e-6)
    r = variance_reduction_coefficient(e_c, eps)
    tilde = (e_c - r.view(-1, 1, 1, 1) * eps).flatten(1)
    cos = torch.nn.functional.cosine_similarity(est, tilde)
    torch.testing.assert_close(cos, torch.ones(B))


def test_ssd_mixed_batch_switches_per_sample(prior):
    z = points()
    out = make_method("ssd", prior, threshold=500).gradient(make_input(prior, z, seed=7))
    h_only = make_method("csd", prior).gradient(make_input(prior, z, seed=7))
    high = out.t > 500
    assert high.any() and (~high).any()
    torch.testing.assert_close(out.grad[high], h_only.grad[high])
    assert not torch.allclose(out.grad[~high], h_only.grad[~high])


def test_r_brackets_the_closed_form_optimum_c_star(prior):
    """For a Gaussian, eps_hat(y) = sigma alpha S^{-1}(x - mu) + sigma^2 S^{-1} eps with S = Sigma_t, so
    c* = tr(Cov(eps_hat, eps)) / d = sigma^2 tr(S^{-1}) / d, and E[r] = c* exactly: the first part is odd in eps
    (antithetic pairs eps, -eps cancel it; in 2D its variance is infinite) and the second averages to c*."""
    g = torch.Generator().manual_seed(0)
    n = 4096
    for t_val in (50, 300, 700):
        x0 = torch.tensor([0.3, -0.4]).expand(n, 2).reshape(n, 2, 1, 1)
        t = torch.full((n,), t_val)
        eps = torch.randn(n // 2, 2, 1, 1, generator=g)
        eps = torch.cat([eps, -eps])
        e_c = prior.predict_eps(noised(prior, x0, t, eps), t, prior.encode_text(["a"]))
        r = variance_reduction_coefficient(e_c.double(), eps.double())
        abar = prior.alphas_cumprod[t_val].double()
        s_t = abar * COV_C + (1 - abar) * torch.eye(2, dtype=torch.float64)
        c_star = float((1 - abar) * torch.linalg.inv(s_t).trace() / 2)
        assert r.min() <= c_star <= r.max()
        assert float(r.mean()) == pytest.approx(c_star, rel=0.05)


# --- FSD -------------------------------------------------------------------------------------------------------
def test_fsd_euler_step_is_one_ddim_step(prior):
    """Gradient descent at lr 1 with weighting "euler" moves x^c so that alpha_t' x^c + sigma_t' eps is DDIM's x_t'."""
    fsd = make_method("fsd", prior, weighting="euler", t_sampler="linear", min_step_percent=0.0, seed=0)
    total = 10
    x_c = points()
    eps = None
    for step in range(total):
        inp = make_input(prior, x_c, step=step, total=total)
        out = fsd.gradient(inp)
        eps = fsd.fixed_noise if eps is None else eps
        assert torch.equal(fsd.fixed_noise, eps)  # the noise stays fixed
        t, t_next = out.t, fsd.next_t(inp)
        x_t = prior.add_noise(x_c, eps, t)
        eps_hat, _, _ = prior.predict_eps_cfg(x_t, t, inp.cond, inp.uncond, 7.5)
        want = ddim_step(prior, x_t, t, t_next, eps_hat)
        x_c = x_c - out.grad
        torch.testing.assert_close(prior.add_noise(x_c, eps, t_next), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x_c, euler_step(prior, x_c + out.grad, eps, t, t_next, eps_hat))
    assert int(t_next[0]) == 1  # reached the end of the schedule


def test_fsd_world_map_noise(prior):
    p = GaussianPrior(torch.zeros(4 * 8 * 8), torch.eye(256), shape=(4, 8, 8))
    fsd = make_method("fsd", p)
    cams = torch.tensor([[10.0, 30.0, 3, 45], [10.0, 390.0, 3, 45], [10.0, 210.0, 3, 45], [10.0, 30.0, 3, 45]])
    opacity = torch.ones(4, 1, 8, 8)
    opacity[3] = 0.0
    inp = DistillInput(
        torch.zeros(4, 4, 8, 8),
        p.encode_text(["a"]),
        p.encode_text([""]),
        0,
        10,
        torch.Generator().manual_seed(0),
        camera=cams,
        opacity=opacity,
    )
    n = fsd.view_noise(inp)
    assert fsd.world_map.shape == (4, 16, 16)  # Theta = 180: H = h, W = 2w, plus h extra rows
    torch.testing.assert_close(n[0], n[1])  # azimuth is periodic
    assert not torch.isin(n[2], n[0]).any()  # 180 degrees on: the next patch, no shared entries
    torch.testing.assert_close(n[3], fsd.background)  # transparent: background noise
    torch.testing.assert_close(fsd.view_noise(inp), n)  # fixed across steps
    # a 1-column azimuth step slides the patch by one column
    cams2 = cams.clone()
    cams2[:, 1] += 360.0 / 16
    inp2 = DistillInput(inp.z, inp.cond, inp.uncond, 1, 10, inp.generator, camera=cams2, opacity=torch.ones(4, 1, 8, 8))
    torch.testing.assert_close(fsd.view_noise(inp2)[0, :, :, :-1], n[0, :, :, 1:])
    # state round trip, and beta = 0 gives fresh noise
    other = make_method("fsd", p)
    other.load_state_dict(fsd.state_dict())
    torch.testing.assert_close(other.view_noise(inp), n)
    fresh = make_method("fsd", p, beta=0.0)
    assert not torch.allclose(fresh.view_noise(inp), fresh.view_noise(inp))


def test_fsd_schedule_decreases(prior):
    fsd = make_method("fsd", prior)
    ts = [int(fsd.gradient(make_input(prior, points(), step=s, total=50)).t[0]) for s in range(0, 51, 10)]
    assert ts == sorted(ts, reverse=True) and ts[0] == 980 and ts[-1] == 20


# --- registry --------------------------------------------------------------------------------------------------
def test_registry_and_errors(prior):
    assert list(METHODS) == ["sds", "csd", "vsd", "l2vsd", "ssd", "fsd", "asd"]
    assert {"sds", "csd", "ssd", "fsd", "asd"} <= set(available_methods())
    with pytest.raises(ValueError, match="choose one of sds, csd"):
        make_method("sdss", prior)
    with pytest.raises(ValueError, match="accepts: .*eta"):
        make_method("asd", prior, etta=0.1)
    with pytest.raises(ValueError, match="weighting"):
        make_method("sds", prior, weighting="bogus")
    with pytest.raises(ValueError, match="beta"):
        make_method("fsd", prior, beta=2.0)
    defaults = {n: method_class(n).default_guidance for n in ("sds", "csd", "asd", "fsd")}
    assert defaults == {"sds": 100.0, "csd": 1.0, "asd": 7.5, "fsd": 7.5}
    assert make_method("sds", prior).guidance == 100.0 and make_method("sds", prior, guidance=3).guidance == 3
