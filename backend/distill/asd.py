"""Asynchronous Score Distillation (ScaleDreamer, Ma et al. ECCV 2024, arXiv 2407.02040, Eq. 4 and Algorithm 1).

ASD models the rendered-image score with the same frozen prior at a later (noisier) timestep:

    grad_theta L_ASD = E_{pi, t, eps}[ w(t) ( eps_phi^cfg(x_t; t, y^pi) - eps_phi(x_{t+dt}; t+dt, y^pi) ) dx/dtheta ]

    x_t = alpha_t x + sigma_t eps,   x_{t+dt} = alpha_{t+dt} x + sigma_{t+dt} eps     (the SAME eps)
    dt ~ U[0, eta (t - T_min)],  eta = 0.1 (the option ``shift_ratio``),   w(t) = sigma_t^2  at t (not t + dt).

CFG (s = 7.5) only on the first term, eps_u + s (eps_c - eps_u); the shifted term is the plain conditional
prediction. The three predictions [cond @ t, uncond @ t, cond @ t+dt] go through ONE batched prior call of 3B
(with Perp-Neg the shifted term uses the same interpolated positive prompt, as ScaleDreamer's code does).

Timesteps: the paper's 3D anneal is the default, scaled to the run's length: t ~ U[T_min(i), T_max(i)] with T_min
going linearly 500 -> 20 and T_max 980 -> 500 over the whole run (ScaleDreamer's configs:
``min_step_percent=[0, 0.5, 0.02, "100%"], max_step_percent=[0, 0.98, 0.5, "100%"]``). The amortized trainer gets
the same anneal through DistillInput.total_steps. The paper's 2D toys use the constant [20, 980]
(``min_step_percent=0.02, max_step_percent=0.98``).

Code versus paper (the paper leaves these open; the ScaleDreamer repo's ``get_t_plus`` is followed):
- dt_max = clamp(eta (t - T_min), 0, T - 1 - t) with T_min the *current* (annealed) lower bound of t;
  dt = floor(u dt_max), u ~ U(0, 1) (``random_shift``; False gives the deterministic ablation dt = floor(dt_max));
  t + dt is clamped to [1, T - 1], the scheduler's range, not the annealed T_max.
- u is drawn after t and eps from the same rng (``inp.rng``), so with eta = 0 the draws of t and eps match SDS/CSD's
  and ASD reduces exactly to eps_cfg - eps_c = (s - 1)(eps_c - eps_u), i.e. (s - 1) times CSD at scale 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .base import DistillInput, DistillOutput, ScoreDistillation
from .guidance import ExtraRows
from .options import DistillConfig
from .schedules import ScheduledValue


@dataclass
class ASDConfig(DistillConfig):
    """DistillConfig with ScaleDreamer's annealed t range, plus the timestep shift.

    shift_ratio: the paper's eta (ScaleDreamer's ``plus_ratio``): dt ~ U[0, shift_ratio (t - T_min)].
    random_shift: False gives the deterministic ablation dt = shift_ratio (t - T_min) (``plus_random``).
    """

    min_step_percent: ScheduledValue = field(default_factory=lambda: [0, 0.5, 0.02, "100%"])
    max_step_percent: ScheduledValue = field(default_factory=lambda: [0, 0.98, 0.5, "100%"])
    shift_ratio: float = 0.1
    random_shift: bool = True

    renamed_options: ClassVar[dict[str, str]] = {"eta": "shift_ratio"}

    def __post_init__(self):
        super().__post_init__()
        if self.shift_ratio < 0:
            raise ValueError(
                f"ASD's shift_ratio (the paper's eta) must be >= 0 (the paper uses 0.1); got {self.shift_ratio}"
            )


class ASD(ScoreDistillation):
    """grad = w(t) (eps_u(t) + s (eps_c(t) - eps_u(t)) - eps_c(t + dt)), s = 7.5, same eps for both timesteps."""

    name = "asd"
    default_guidance = 7.5
    Config = ASDConfig

    def shifted_t(self, t: torch.Tensor, inp: DistillInput) -> torch.Tensor:
        """t + dt with dt = floor(u * clamp(eta (t - T_min), 0, T - 1 - t)), clamped to [1, T - 1]."""
        big_t = self.prior.num_train_timesteps
        t_min, _ = self.t_bounds(inp)
        dt_max = (self.config.shift_ratio * (t - t_min).float()).clamp_min(0.0)
        dt_max = torch.minimum(dt_max, (big_t - 1 - t).float())
        g = inp.rng
        n = t.shape[0] if self.config.t_per_sample else 1
        u = torch.rand(n, generator=g, device=g.device).expand(t.shape[0]).to(t.device)
        dt = (u * dt_max).long() if self.config.random_shift else dt_max.long()
        return (t + dt).clamp(1, big_t - 1)

    def gradient(self, inp: DistillInput) -> DistillOutput:
        s = self.noised(inp)
        t_shift = self.shifted_t(s.t, inp)
        shifted = ExtraRows(self.prior.add_noise(s.z, s.eps, t_shift), t_shift)
        g = self.guided(s.x_t, s.t, inp, extra=shifted)
        grad = self.weight(s.t, s.z.ndim) * (g.eps_cfg - g.extra)
        return self.finish(grad, s.t, inp, dt=(t_shift - s.t).float().mean())


__all__ = ["ASD", "ASDConfig"]
