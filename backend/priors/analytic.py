"""Priors whose noise predictions are exact: the 2D analytic harness of the score-distillation papers.

"Images" are D-dim points shaped (B, D, 1, 1) (or any (B, C, h, w) with C*h*w = D, flattened), the renderer is the
identity, and every prior noises its clean distribution p_0 analytically under the DDPM forward process

    x_t = alpha_t x_0 + sigma_t eps,   alpha_t = sqrt(abar_t),  sigma_t = sqrt(1 - abar_t),

so that for a Gaussian p_0 = N(mu, Sigma)  the noised marginal is  p_t = N(alpha_t mu, alpha_t^2 Sigma + sigma_t^2 I)
and the exact noise prediction is the (scaled) score

    eps_hat(x_t; y, t) = -sigma_t grad_x log p_t(x_t) = sigma_t (alpha_t^2 Sigma + sigma_t^2 I)^{-1} (x_t - alpha_t mu).

For a mixture sum_k w_k N(mu_k, Sigma_k) the score is the responsibility-weighted sum of the component scores
(responsibilities r_k(x_t) proportional to w_k N(x_t; alpha_t mu_k, alpha_t^2 Sigma_k + sigma_t^2 I)). This is the
toy of the L2-VSD appendix (``calc_perturbed_gaussian_score``) and of SSD's mixture experiment.

Text: ``encode_text`` maps "" to the unconditional distribution and every other prompt to the conditional one; the
embedding is one flag column (1 = conditional, 0 = unconditional), shape (B, 1, 1). The unconditional distribution is
broader than the conditional one, so classifier-free guidance eps_u + s (eps_c - eps_u) is well defined and, at
t -> 0, is the score of the tilted density p_c^s p_u^(1-s) (``GaussianPrior.guided_target``).

``empirical_eps`` is the exact noise prediction of the empirical distribution of a particle set (point masses, or
isotropic Gaussians of width ``bandwidth``), the "score model fitted exactly to the current particles" that the VSD
identity tests need: with a single point mass at the particle x_0 it returns (x_t - alpha_t x_0) / sigma_t = eps.

All maths runs in float64; outputs come back in x_t's dtype. The particle loop of the 2D harness that optimises
against these priors is ``dreamstill.backend.distill.particles.optimize_particles``.
"""

from __future__ import annotations

import math

import torch

from .base import Prior, TextEmbedding


def ddpm_alphas_cumprod(
    num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """bar-alpha_t = prod_{s<=t} (1 - beta_s) with DDPM's linear betas (Ho et al. 2020), float32 (T,)."""
    betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0).float()


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b; for the tiny matrices of the 2D harness a broadcast sum, which avoids BLAS threads (float64 matmuls of
    (B, 2) x (2, 2) take tens of milliseconds on a loaded 2-core machine)."""
    if b.shape[0] <= 8:
        return (a[..., :, None] * b).sum(-2)
    return a @ b


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).double()


def _abar_at(t: torch.Tensor | int, alphas_cumprod: torch.Tensor, batch: int) -> torch.Tensor:
    t = torch.as_tensor(t, device=alphas_cumprod.device)
    if t.dtype.is_floating_point:
        raise TypeError("timesteps must be integers (a long tensor of indices into alphas_cumprod)")
    abar = alphas_cumprod.double()[t.long()].reshape(-1)
    if abar.numel() == 1:
        abar = abar.expand(batch)
    if abar.numel() != batch:
        raise ValueError(f"got {abar.numel()} timesteps for a batch of {batch}; pass one per sample or a scalar")
    return abar


class _Gaussian:
    """N(mu, Sigma) in R^D, stored by its eigendecomposition Sigma = U diag(lam) U^T (float64)."""

    def __init__(self, mean, cov):
        mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        d = mean.numel()
        cov = torch.as_tensor(cov, dtype=torch.float64)
        if cov.ndim == 0:
            cov = cov * torch.eye(d, dtype=torch.float64)
        elif cov.ndim == 1:
            cov = torch.diag(cov)
        if cov.shape != (d, d):
            raise ValueError(f"covariance must be ({d}, {d}) for a mean of size {d}, got {tuple(cov.shape)}")
        if not torch.allclose(cov, cov.T, atol=1e-10):
            raise ValueError("covariance must be symmetric; pass (cov + cov.T) / 2")
        lam, u = torch.linalg.eigh(cov)
        if lam.min() < -1e-10:
            raise ValueError(f"covariance must be positive semi-definite (smallest eigenvalue {lam.min():.3g})")
        self.mean, self.cov, self.lam, self.u = mean, cov, lam.clamp_min(0.0), u

    @property
    def dim(self) -> int:
        return self.mean.numel()

    def noised_terms(self, x: torch.Tensor, abar: torch.Tensor):
        """For x (B, D) float64 and abar (B,): (Sigma_t^{-1}(x - alpha mu), Mahalanobis^2, logdet Sigma_t)."""
        alpha, var = abar.sqrt(), 1.0 - abar
        ev = alpha[:, None] ** 2 * self.lam[None] + var[:, None]  # (B, D) eigenvalues of Sigma_t
        diff = x - alpha[:, None] * self.mean[None]
        proj = _matmul(diff, self.u)  # coordinates in the eigenbasis
        solved = _matmul(proj / ev, self.u.T)
        maha = (proj**2 / ev).sum(-1)
        return solved, maha, ev.log().sum(-1)

    def eps(self, x: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        solved, _, _ = self.noised_terms(x, abar)
        return (1.0 - abar).sqrt()[:, None] * solved

    def sample(self, n: int, rng: torch.Generator | None) -> torch.Tensor:
        c = torch.randn(n, self.dim, generator=rng, dtype=torch.float64)
        return self.mean + _matmul(c * self.lam.sqrt(), self.u.T)


class _Mixture:
    """sum_k w_k N(mu_k, Sigma_k)."""

    def __init__(self, weights, means, covs):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2:
            raise ValueError(f"means must be (K, D), got shape {tuple(means.shape)}")
        k = means.shape[0]
        weights = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        if weights.numel() != k or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"weights must be {k} non-negative numbers with a positive sum")
        d = means.shape[1]
        covs = torch.as_tensor(covs, dtype=torch.float64)
        if covs.ndim == 0:
            covs = [covs] * k  # one isotropic variance for all
        elif covs.ndim == 1 and covs.numel() == k:
            covs = list(covs)  # one isotropic variance per component
        elif covs.shape == (d, d):
            covs = [covs] * k  # one shared covariance
        elif covs.shape == (k, d, d):
            covs = list(covs)
        else:
            raise ValueError(f"covs must be a scalar, ({k},), ({d}, {d}) or ({k}, {d}, {d}); got {tuple(covs.shape)}")
        self.weights = weights / weights.sum()
        self.components = [_Gaussian(means[i], covs[i]) for i in range(k)]

    @property
    def dim(self) -> int:
        return self.components[0].dim

    @property
    def mean(self) -> torch.Tensor:
        return sum(w * c.mean for w, c in zip(self.weights, self.components))

    @property
    def cov(self) -> torch.Tensor:
        m = self.mean
        return sum(w * (c.cov + torch.outer(c.mean - m, c.mean - m)) for w, c in zip(self.weights, self.components))

    def eps(self, x: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        solved, logp = [], []
        for w, c in zip(self.weights, self.components):
            s, maha, logdet = c.noised_terms(x, abar)
            solved.append(s)
            logp.append(w.log() - 0.5 * (maha + logdet))
        resp = torch.softmax(torch.stack(logp, -1), -1)  # (B, K)
        score_term = (resp[..., None] * torch.stack(solved, 1)).sum(1)  # Sigma_t^{-1}(x - alpha mu), mixed
        return (1.0 - abar).sqrt()[:, None] * score_term

    def sample(self, n: int, rng: torch.Generator | None) -> torch.Tensor:
        idx = torch.multinomial(self.weights, n, replacement=True, generator=rng)
        out = torch.empty(n, self.dim, dtype=torch.float64)
        for k, c in enumerate(self.components):
            sel = (idx == k).nonzero().flatten()
            if len(sel):
                out[sel] = c.sample(len(sel), rng)
        return out


def gaussian_eps(x_t: torch.Tensor, abar: torch.Tensor, mean, cov) -> torch.Tensor:
    """eps_hat = sigma_t (alpha_t^2 Sigma + sigma_t^2 I)^{-1} (x_t - alpha_t mu) for x_t (B, ...) and abar (B,)."""
    g = _Gaussian(mean, cov)
    return g.eps(_flat(x_t), torch.as_tensor(abar, dtype=torch.float64).reshape(-1)).to(x_t.dtype).view_as(x_t)


def empirical_eps(
    x_t: torch.Tensor,
    t: torch.Tensor | int,
    particles: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    bandwidth: float = 0.0,
) -> torch.Tensor:
    """Exact eps prediction of the empirical distribution (1/N) sum_i N(p_i, h^2 I) of N particles, noised.

    With v_t = alpha_t^2 h^2 + sigma_t^2 and responsibilities r_i(x_t) = softmax_i(-||x_t - alpha_t p_i||^2 / (2 v_t)):
        eps_hat(x_t, t) = sigma_t sum_i r_i (x_t - alpha_t p_i) / v_t.
    With h = 0 and one particle this is (x_t - alpha_t p)/sigma_t, i.e. exactly the noise that made x_t from p.
    x_t (B, ...) with prod(...) = D, particles (N, ...) with D elements each, t (B,) or scalar long. Needs sigma_t > 0
    (t >= 1 with DDPM's schedule) when h = 0.
    """
    x = _flat(x_t)
    p = particles.detach().reshape(particles.shape[0], -1).double().to(x.device)
    if p.shape[1] != x.shape[1]:
        raise ValueError(f"particles have {p.shape[1]} dims but x_t has {x.shape[1]}; flatten them to the same D")
    abar = _abar_at(t, alphas_cumprod, x.shape[0]).to(x.device)
    return _empirical_eps_flat(x, abar, p, bandwidth).to(x_t.dtype).view_as(x_t)


def _empirical_eps_flat(x: torch.Tensor, abar: torch.Tensor, p: torch.Tensor, bandwidth: float) -> torch.Tensor:
    alpha, sigma = abar.sqrt()[:, None], (1.0 - abar).sqrt()[:, None]
    v = alpha**2 * bandwidth**2 + sigma**2  # (B, 1)
    if (v <= 0).any():
        raise ValueError("empirical_eps with bandwidth 0 needs sigma_t > 0: use timesteps t >= 1")
    diff = x[:, None, :] - alpha[:, None] * p[None]  # (B, N, D)
    resp = torch.softmax(-(diff**2).sum(-1) / (2 * v), -1)  # (B, N)
    return sigma * (resp[..., None] * diff).sum(1) / v


class AnalyticPrior(Prior):
    """Base of the exact priors: text flag, identity encode/decode, shapes. Subclasses implement ``_eps``."""

    def __init__(self, dim: int, alphas_cumprod: torch.Tensor | None = None, shape: tuple[int, int, int] | None = None):
        shape = tuple(shape) if shape is not None else (dim, 1, 1)
        if math.prod(shape) != dim:
            raise ValueError(f"shape {shape} has {math.prod(shape)} elements but the distribution has {dim} dims")
        self.alphas_cumprod = ddpm_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod.float()
        self.num_train_timesteps = int(self.alphas_cumprod.numel())
        self.latent_shape = shape
        self.image_size = shape[-1]
        self.dim = dim
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.calls = 0  # number of predict_eps calls (tests check batching)

    def encode_text(self, prompts: list[str]) -> TextEmbedding:
        if isinstance(prompts, str):
            prompts = [prompts]
        flag = torch.tensor([[0.0 if p == "" else 1.0] for p in prompts]).view(-1, 1, 1)
        return TextEmbedding(flag)

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        """Identity (points are their own model space), reshaped to (B, *latent_shape)."""
        return rgb.reshape(rgb.shape[0], *self.latent_shape)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def predict_eps(self, x_t, t, text, camera=None):
        self.calls += 1
        b = x_t.shape[0]
        flags = text.expand_to(b).tokens.reshape(b, -1)[:, 0]
        abar = _abar_at(t, self.alphas_cumprod, b).to(x_t.device)
        x = _flat(x_t)
        if x.shape[1] != self.dim:
            raise ValueError(f"x_t has {x.shape[1]} elements per sample; this prior is over R^{self.dim}")
        out = torch.empty_like(x)
        for value, conditional in ((1.0, True), (0.0, False)):
            sel = (flags == value).nonzero().flatten()
            if len(sel):
                out[sel] = self._eps(x[sel], abar[sel], conditional)
        return out.to(x_t.dtype).view_as(x_t)

    def _eps(self, x: torch.Tensor, abar: torch.Tensor, conditional: bool) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, n: int, rng: torch.Generator | None = None, conditional: bool = True) -> torch.Tensor:
        """n samples of p_0(x | y) (or of p_0(x) when ``conditional`` is False), shaped (n, *latent_shape)."""
        x = (self.cond if conditional else self.uncond).sample(n, rng)
        return x.float().view(n, *self.latent_shape)


class GaussianPrior(AnalyticPrior):
    """p_0(x|y) = N(mean_cond, cov_cond), p_0(x) = N(mean_uncond, cov_uncond), noised exactly.

    Defaults for the unconditional half: mean 0, covariance cov_cond + I (strictly broader, so CFG at any scale
    s >= 1 keeps a positive-definite tilted precision).
    """

    def __init__(
        self,
        mean_cond,
        cov_cond,
        mean_uncond=None,
        cov_uncond=None,
        alphas_cumprod: torch.Tensor | None = None,
        shape: tuple[int, int, int] | None = None,
    ):
        self.cond = _Gaussian(mean_cond, cov_cond)
        d = self.cond.dim
        mean_uncond = torch.zeros(d) if mean_uncond is None else mean_uncond
        cov_uncond = self.cond.cov + torch.eye(d, dtype=torch.float64) if cov_uncond is None else cov_uncond
        self.uncond = _Gaussian(mean_uncond, cov_uncond)
        if self.uncond.dim != d:
            raise ValueError(f"unconditional mean has {self.uncond.dim} dims, conditional {d}")
        super().__init__(d, alphas_cumprod, shape)

    def _eps(self, x, abar, conditional):
        return (self.cond if conditional else self.uncond).eps(x, abar)

    def guided_target(self, guidance: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and covariance of the t -> 0 CFG density  p_c^s p_u^(1-s)  (a Gaussian; float64).

        Precision  P = s Sigma_c^{-1} - (s-1) Sigma_u^{-1},  mean = P^{-1}(s Sigma_c^{-1} mu_c - (s-1) Sigma_u^{-1} mu_u).
        """
        s = float(guidance)
        pc, pu = torch.linalg.inv(self.cond.cov), torch.linalg.inv(self.uncond.cov)
        prec = s * pc - (s - 1) * pu
        if torch.linalg.eigvalsh(prec).min() <= 0:
            raise ValueError(f"CFG {s} gives a non-positive tilted precision: make the unconditional prior broader")
        cov = torch.linalg.inv(prec)
        return cov @ (s * pc @ self.cond.mean - (s - 1) * pu @ self.uncond.mean), cov


class MixtureOfGaussiansPrior(AnalyticPrior):
    """p_0(x|y) = sum_k w_k N(mu_k, Sigma_k) noised exactly; p_0(x) a broad Gaussian unless given.

    ``covs`` may be (K, D, D), one (D, D) shared by all components, (K,) isotropic variances, or a scalar.
    The default unconditional distribution is N(m, C + I) with m, C the mixture's mean and covariance.
    """

    def __init__(
        self,
        weights,
        means,
        covs,
        uncond_weights=None,
        uncond_means=None,
        uncond_covs=None,
        alphas_cumprod: torch.Tensor | None = None,
        shape: tuple[int, int, int] | None = None,
    ):
        self.cond = _Mixture(weights, means, covs)
        d = self.cond.dim
        if uncond_means is None:
            self.uncond = _Mixture([1.0], self.cond.mean[None], self.cond.cov + torch.eye(d, dtype=torch.float64))
        else:
            uncond_means = torch.as_tensor(uncond_means, dtype=torch.float64)
            uncond_means = uncond_means[None] if uncond_means.ndim == 1 else uncond_means
            w = torch.ones(len(uncond_means)) if uncond_weights is None else uncond_weights
            self.uncond = _Mixture(w, uncond_means, uncond_covs)
        super().__init__(d, alphas_cumprod, shape)

    def _eps(self, x, abar, conditional):
        return (self.cond if conditional else self.uncond).eps(x, abar)


class ParticlePrior(AnalyticPrior):
    """The exact noised score of an empirical particle distribution, for conditional and unconditional text alike."""

    def __init__(self, particles: torch.Tensor, bandwidth: float = 0.0, alphas_cumprod: torch.Tensor | None = None):
        self.bandwidth = float(bandwidth)
        self.particles = particles.detach().clone()
        d = self.particles.reshape(self.particles.shape[0], -1).shape[1]
        super().__init__(d, alphas_cumprod, tuple(particles.shape[1:]) if particles.ndim == 4 else None)

    def _eps(self, x, abar, conditional):
        p = self.particles.reshape(self.particles.shape[0], -1).double().to(x.device)
        return _empirical_eps_flat(x, abar, p, self.bandwidth)


def particle_score_prior(particles: torch.Tensor, bandwidth: float = 0.0, alphas_cumprod=None) -> ParticlePrior:
    """A Prior whose eps prediction is ``empirical_eps`` of ``particles`` (see there)."""
    return ParticlePrior(particles, bandwidth, alphas_cumprod)


__all__ = [
    "AnalyticPrior",
    "GaussianPrior",
    "MixtureOfGaussiansPrior",
    "ParticlePrior",
    "ddpm_alphas_cumprod",
    "empirical_eps",
    "gaussian_eps",
    "particle_score_prior",
]
