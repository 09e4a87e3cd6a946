"""Stable Score Distillation (Tang et al. 2023, arXiv 2312.09305, Eq. 4 and Algorithm 1).

SSD splits the SDS estimator (SSD Eq. 4, with the CFG scale s = 1 + omega in the diffusers convention):

    eps_hat_cfg - eps = omega h              mode-disengaging,  h = eps_hat(x_t, t, y) - eps_hat(x_t, t, empty)
                      + eps_hat(x_t, t, y)   mode-seeking
                      - eps                  variance-reducing (DreamFusion's control variate)

and replaces it by (Algorithm 1), per sample:

    t > M:   E_SSD = h                                                  "fast geometry formation"
    t <= M:  r = <eps_hat(y), eps> / ||eps||^2                          (Eq. 6, one scalar per sample)
             eps_tilde = eps_hat(y) - r eps                             (Eq. 7: the part of eps_hat(y) orthogonal to eps)
             E_SSD = (||h|| / ||eps_tilde||) eps_tilde                  "high-density chasing", rescaled to h's norm

    grad = w(t) E_SSD,   w(t) = sigma_t^2.

r is the per-sample proxy of the optimal control-variate coefficient c* = tr(Cov(eps_hat, eps)) / d (Eq. 8).
No CFG scale enters the estimator (``guidance`` only matters to ``decompose``); with Perp-Neg, h is the guided
direction with the perpendicular negative terms.

Timesteps: the paper's 3D schedule, scaled to the run: t ~ U[20, 980] for the first half, then U[20, 500]
(the paper: 5k steps, then t_max = 500; ``max_step_percent=["50%", 0.98, 0.5, "50%"]``).

Code versus paper: the paper gives neither M (the option ``threshold_t``) nor w(t); M = 200 (the "t <= 200" regime the text names) and
w = sigma_t^2 (threestudio's default) are this module's defaults. Norms and r are per sample over the whole
flattened tensor. Ablations (``estimator``): "mode_disengaging" (h only = CSD), "mode_seeking" (eps_hat(y) only, the
toy's trapped trajectory), "variance_reduced" (the paper's "without rescale": h for t > M, eps_tilde without the
rescale for t <= M), "ssd".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .base import DistillInput, DistillOutput, ScoreDistillation
from .options import DistillConfig
from .schedules import ScheduledValue

ESTIMATORS = ("ssd", "mode_disengaging", "mode_seeking", "variance_reduced")


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.flatten(1) * b.flatten(1)).sum(1)


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def decompose(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, eps: torch.Tensor, guidance: float) -> dict:
    """The three terms of SSD Eq. 4 for the CFG scale s = guidance (omega = s - 1); they sum to eps_cfg - eps."""
    return {
        "mode_disengaging": (guidance - 1.0) * (eps_cond - eps_uncond),
        "mode_seeking": eps_cond,
        "variance_reducing": -eps,
    }


def variance_reduction_coefficient(eps_hat: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """r = <eps_hat, eps> / ||eps||^2 per sample, (B,) (SSD Eq. 6; argmin_k ||eps_hat - k eps||)."""
    return _dot(eps_hat, eps) / _dot(eps, eps).clamp_min(1e-20)


def ssd_estimator(
    eps_cond: torch.Tensor,
    direction: torch.Tensor,
    eps: torch.Tensor,
    t: torch.Tensor,
    threshold_t: int,
    estimator: str = "ssd",
) -> tuple[torch.Tensor, dict]:
    """E_SSD of Algorithm 1 per sample (module docstring) from eps_hat(y), h and eps, and diagnostics (r, ||h||,
    fraction with t <= M)."""
    h = direction
    r = variance_reduction_coefficient(eps_cond, eps)
    eps_tilde = eps_cond - _per_sample(r, eps) * eps
    h_norm = h.flatten(1).norm(dim=1)
    info = {"r": r.mean(), "h_norm": h_norm.mean(), "frac_t_le_M": (t <= threshold_t).float().mean()}
    if estimator == "mode_disengaging":
        return h, info
    if estimator == "mode_seeking":
        return eps_cond, info
    if estimator == "variance_reduced":
        low_t = eps_tilde
    elif estimator == "ssd":
        scale = h_norm / eps_tilde.flatten(1).norm(dim=1).clamp_min(1e-20)
        low_t = _per_sample(scale, eps) * eps_tilde
    else:
        raise ValueError(f"unknown SSD estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    return torch.where(_per_sample(t <= threshold_t, eps), low_t, h), info


@dataclass
class SSDConfig(DistillConfig):
    """DistillConfig with the paper's halfway drop of t_max, plus M (``threshold_t``) and the estimator."""

    max_step_percent: ScheduledValue = field(default_factory=lambda: ["50%", 0.98, 0.5, "50%"])
    threshold_t: int = 200  # M: t > M uses h, t <= M the rescaled variance-reduced mode-seeking term
    estimator: str = "ssd"  # or an ablation: mode_disengaging, mode_seeking, variance_reduced

    renamed_options: ClassVar[dict[str, str]] = {"threshold": "threshold_t"}

    def __post_init__(self):
        super().__post_init__()
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown SSD estimator {self.estimator!r}; choose one of {', '.join(ESTIMATORS)}")
        if self.threshold_t < 0:
            raise ValueError(f"SSD's threshold_t (the paper's M) must be >= 0; got {self.threshold_t}")
        if self.cfg_rescale:
            raise ValueError("SSD's estimator has no CFG scale, so cfg_rescale has nothing to rescale: leave it 0")


class SSD(ScoreDistillation):
    """grad = w(t) E_SSD (Algorithm 1): h above the threshold M, the rescaled eps_hat(y) - r eps at or below."""

    name = "ssd"
    default_guidance = 1.0  # not used by the estimator; the paper's point is that no CFG scale needs tuning
    Config = SSDConfig

    def gradient(self, inp: DistillInput) -> DistillOutput:
        s = self.noised(inp)
        g = self.guided(s.x_t, s.t, inp, scale=1.0)
        estimate, info = ssd_estimator(
            g.eps_cond, g.direction, s.eps, s.t, self.config.threshold_t, self.config.estimator
        )
        return self.finish(self.weight(s.t, s.z.ndim) * estimate, s.t, inp, **info)


__all__ = ["ESTIMATORS", "SSD", "SSDConfig", "decompose", "ssd_estimator", "variance_reduction_coefficient"]
