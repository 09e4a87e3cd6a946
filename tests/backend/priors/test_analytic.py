"""The exact priors of the 2D harness against autograd of their log densities."""

import pytest
import torch
from torch.distributions import MultivariateNormal

from dreamstill.backend.priors.analytic import (
    GaussianPrior,
    MixtureOfGaussiansPrior,
    ddpm_alphas_cumprod,
    empirical_eps,
    particle_score_prior,
)

T = torch.tensor([1, 100, 500, 900, 999])


def _autograd_eps(x, log_prob, abar):
    x = x.double().reshape(-1).requires_grad_()
    (g,) = torch.autograd.grad(log_prob(x), x)
    return -(1 - abar).sqrt() * g


def test_schedule_is_ddpm_linear():
    ac = ddpm_alphas_cumprod()
    assert ac.shape == (1000,)
    assert ac[0] == pytest.approx(1 - 1e-4)
    assert ac[-1] == pytest.approx(float(torch.prod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))))


def test_gaussian_eps_is_minus_sigma_times_score():
    g = GaussianPrior(torch.tensor([1.0, 2.0]), torch.tensor([[1.0, 0.3], [0.3, 0.5]]))
    x = torch.randn(5, 2, 1, 1, generator=torch.Generator().manual_seed(0))
    text = g.encode_text(["a", "", "b", "a", ""])
    eps = g.predict_eps(x, T, text)
    abar = g.alphas_cumprod[T].double()
    for i in range(5):
        m = g.cond if text.tokens[i, 0, 0] == 1 else g.uncond
        cov = abar[i] * m.cov + (1 - abar[i]) * torch.eye(2, dtype=torch.float64)
        want = _autograd_eps(x[i], MultivariateNormal(abar[i].sqrt() * m.mean, cov).log_prob, abar[i])
        torch.testing.assert_close(eps[i].flatten().double(), want, rtol=1e-5, atol=1e-6)


def test_mixture_eps_is_minus_sigma_times_score():
    w, mus, vs = [0.3, 0.7], [[0.0, 0.0], [3.0, 3.0]], [0.1, 0.2]
    mx = MixtureOfGaussiansPrior(w, mus, vs)
    x = 2 * torch.randn(5, 2, 1, 1, generator=torch.Generator().manual_seed(1))
    eps = mx.predict_eps(x, T, mx.encode_text(["a"]))
    abar = mx.alphas_cumprod[T].double()
    eye = torch.eye(2, dtype=torch.float64)
    for i in range(5):
        a = abar[i]

        def log_prob(z):
            parts = [
                MultivariateNormal(a.sqrt() * torch.tensor(mu, dtype=torch.float64), (a * v + 1 - a) * eye).log_prob(z)
                + torch.tensor(wk, dtype=torch.float64).log()
                for wk, mu, v in zip(w, mus, vs)
            ]
            return torch.logsumexp(torch.stack(parts), 0)

        torch.testing.assert_close(eps[i].flatten().double(), _autograd_eps(x[i], log_prob, a), rtol=1e-5, atol=1e-6)


def test_empirical_eps_of_one_point_mass_returns_the_noise():
    ac = ddpm_alphas_cumprod().double()
    p = torch.randn(1, 2, dtype=torch.float64)
    eps = torch.randn(3, 2, dtype=torch.float64)
    t = torch.tensor([5, 300, 900])
    x_t = ac[t].sqrt()[:, None] * p + (1 - ac[t]).sqrt()[:, None] * eps
    torch.testing.assert_close(empirical_eps(x_t, t, p, ac), eps)
    prior = particle_score_prior(p.float())
    out = prior.predict_eps(x_t.float().view(3, 2, 1, 1), t, prior.encode_text([""]))
    torch.testing.assert_close(out.flatten(1), eps.float(), rtol=1e-4, atol=1e-4)


def test_guided_target_and_errors():
    g = GaussianPrior(torch.zeros(2), torch.eye(2), torch.zeros(2), 4 * torch.eye(2))
    mean, cov = g.guided_target(3.0)  # precision 3 - 2/4 = 2.5
    torch.testing.assert_close(cov, torch.eye(2, dtype=torch.float64) / 2.5)
    with pytest.raises(ValueError, match="broader"):
        GaussianPrior(torch.zeros(2), torch.eye(2), torch.zeros(2), 0.1 * torch.eye(2)).guided_target(7.5)
    with pytest.raises(ValueError, match="positive semi-definite"):
        GaussianPrior(torch.zeros(2), -torch.eye(2))
    with pytest.raises(ValueError, match="R\\^2"):
        g.predict_eps(torch.zeros(1, 3, 1, 1), torch.tensor([3]), g.encode_text(["a"]))


def test_samples_match_moments():
    g = GaussianPrior(torch.tensor([1.0, -1.0]), torch.tensor([[1.0, 0.5], [0.5, 2.0]]))
    x = g.sample(20000, torch.Generator().manual_seed(0)).flatten(1).double()
    torch.testing.assert_close(x.mean(0), g.cond.mean, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), g.cond.cov, atol=0.08, rtol=0)
