"""Asynchronous Score Distillation (ScaleDreamer, Ma et al. ECCV 2024; spec_asd_scaledreamer.md §1).

ASD models the rendered-image score with the same frozen prior at a later (noisier) timestep (Eq. 4):

    grad_theta L_ASD = E_{pi, t, eps}[ w(t) ( eps_phi^cfg(x_t; t, y^pi) - eps_phi(x_{t+dt}; t+dt, y^pi) ) dx/dtheta ]

    x_t = alpha_t x + sigma_t eps,   x_{t+dt} = alpha_{t+dt} x + sigma_{t+dt} eps     (the SAME eps)
    dt ~ U[0, eta (t - T_min)],  eta = 0.1,   w(t) = sigma_t^2 = 1 - abar_t  evaluated at t (not t + dt).

CFG (s = 7.5) only on the first term, eps_u + s (eps_c - eps_u); the shifted term is the plain conditional
prediction. The three predictions [cond @ t, uncond @ t, cond @ t+dt] go through ONE batched prior call of 3B.

Code versus paper (the paper leaves these open; the ScaleDreamer repo's ``get_t_plus`` is followed):
- dt_max = clamp(eta (t - T_min), 0, T - 1 - t) with T_min the *current* (possibly annealed) lower bound of t;
  dt = floor(u dt_max), u ~ U(0, 1) (``random_shift``; False gives the deterministic ablation dt = floor(dt_max));
  t + dt is clamped to [1, T - 1], the scheduler's range, not the annealed T_max.
- u is drawn after t and eps from the same generator, so with eta = 0 the draws of t and eps match SDS/CSD's and
  ASD reduces exactly to eps_cfg - eps_c = (s - 1)(eps_c - eps_u), i.e. (s - 1) times CSD at scale 1.
- The ScaleDreamer 3D schedule anneals t's range [500, 980] -> [20, 500] over the run:
  ``min_step_percent=[0, 0.5, 0.02, 1.0], max_step_percent=[0, 0.98, 0.5, 1.0]``; the default here is
  threestudio's constant U(0.02, 0.98) (the paper's 2D toys use [20, 980]).
- Perp-Neg (used with SD against Janus) is not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..priors.base import TextEmbedding
from .base import DistillInput, DistillOutput
from .schedules import DistillConfig
from .sds import ScoreDistillation


@dataclass
class ASDConfig(DistillConfig):
    eta: float = 0.1  # dt ~ U[0, eta (t - T_min)] ("plus_ratio")
    random_shift: bool = True  # False: the deterministic ablation dt = eta (t - T_min) ("plus_random")

    def __post_init__(self):
        super().__post_init__()
        if self.eta < 0:
            raise ValueError(f"ASD's eta must be >= 0 (the paper uses 0.1); got {self.eta}")


class ASD(ScoreDistillation):
    """grad = w(t) (eps_u(t) + s (eps_c(t) - eps_u(t)) - eps_c(t + dt)), s = 7.5, same eps for both timesteps."""

    name = "asd"
    default_guidance = 7.5
    Config = ASDConfig

    def shifted_t(self, t: torch.Tensor, inp: DistillInput) -> torch.Tensor:
        """t + dt with dt = floor(u * clamp(eta (t - T_min), 0, T - 1 - t)), clamped to [1, T - 1]."""
        big_t = self.prior.num_train_timesteps
        t_min, _ = self.t_bounds(inp)
        dt_max = (self.config.eta * (t - t_min).float()).clamp_min(0.0)
        dt_max = torch.minimum(dt_max, (big_t - 1 - t).float())
        g = inp.generator
        n = t.shape[0] if self.config.t_per_sample else 1
        u = torch.rand(n, generator=g, device=g.device).expand(t.shape[0]).to(t.device)
        dt = (u * dt_max).long() if self.config.random_shift else dt_max.long()
        return (t + dt).clamp(1, big_t - 1)

    def gradient(self, inp: DistillInput) -> DistillOutput:
        z = inp.z.detach()
        b = z.shape[0]
        t = self.sample_t(inp)
        eps = self.sample_noise(inp)
        t2 = self.shifted_t(t, inp)
        x_t = self.prior.add_noise(z, eps, t)
        x_t2 = self.prior.add_noise(z, eps, t2)
        cond = inp.cond.expand_to(b)
        text = TextEmbedding.cat([cond, inp.uncond.expand_to(b), cond])
        cam = None if inp.camera is None else inp.camera.repeat(3, 1)
        with torch.no_grad():
            out = self.prior.predict_eps(torch.cat([x_t, x_t, x_t2]), torch.cat([t, t, t2]), text, cam)
        eps_c, eps_u, eps_c2 = out.chunk(3)
        eps_cfg = eps_u + self.guidance * (eps_c - eps_u)
        return self.finish(self.weight(t, z.ndim) * (eps_cfg - eps_c2), t, inp, dt=(t2 - t).float().mean())


__all__ = ["ASD", "ASDConfig"]
