"""Fixtures of the distillation tests: the 2D Gaussian harness with closed-form scores, and the tiny UNet priors.

``harness`` bundles an exact 2D Gaussian prior (conditional N(MU_C, COV_C), unconditional N(MU_U, COV_U)) with the
helpers that recompute, independently of the code under test, the draws a method makes from a seeded rng
(t first, then eps) and the noise predictions in closed form.
"""

from types import SimpleNamespace

import pytest
import torch

from dreamstill.backend.distill import DistillInput
from dreamstill.backend.priors.analytic import GaussianPrior

MU_C = torch.tensor([1.0, 2.0], dtype=torch.float64)
COV_C = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)
MU_U = torch.tensor([0.0, 0.5], dtype=torch.float64)
COV_U = torch.tensor([[2.0, 0.3], [0.3, 1.5]], dtype=torch.float64)
B = 6


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
        rng=torch.Generator().manual_seed(seed),
        **kw,
    )


def draws(seed, n=B, t_range=(20, 980)):
    """The (rng, t, eps) a uniform-t method draws from ``seed`` (t first, then eps)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(t_range[0], t_range[1] + 1, (n,), generator=g)
    eps = torch.randn(n, 2, 1, 1, generator=g)
    return g, t, eps


def points(seed=3):
    return torch.randn(B, 2, 1, 1, generator=torch.Generator().manual_seed(seed)) * 1.5


def noised(prior, z, t, eps):
    abar = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    return abar.sqrt() * z + (1 - abar).sqrt() * eps


@pytest.fixture()
def harness():
    """The 2D Gaussian prior and the closed-form helpers (module docstring). Uniform-t tests pass
    ``min_step_percent=0.02, max_step_percent=0.98`` so that t ~ U{20..980} whatever a method's default."""
    return SimpleNamespace(
        prior=GaussianPrior(MU_C, COV_C, MU_U, COV_U),
        MU_C=MU_C,
        COV_C=COV_C,
        MU_U=MU_U,
        COV_U=COV_U,
        B=B,
        closed_eps=closed_eps,
        make_input=make_input,
        draws=draws,
        points=points,
        noised=noised,
        uniform={"min_step_percent": 0.02, "max_step_percent": 0.98},
    )


@pytest.fixture(scope="module")
def tiny8():
    """The tiny random prior at 8x8 pixels (3, 8, 8), epsilon prediction, CPU fp32, with two prompts encoded."""
    from dreamstill.backend.priors.tiny import build_tiny_prior

    prior = build_tiny_prior(seed=0, image_size=8)
    return prior, prior.encode_text(["a red cube"]), prior.encode_text([""])


@pytest.fixture(scope="module")
def tiny8_v_camera():
    """The tiny random prior at 8x8, camera-conditioned and v-prediction (as the built-in prior and SD 2.1)."""
    from dreamstill.backend.priors.tiny import build_tiny_prior

    prior = build_tiny_prior(seed=1, image_size=8, camera=True, prediction_type="v_prediction")
    return prior, prior.encode_text(["a blue cone"]), prior.encode_text([""])
