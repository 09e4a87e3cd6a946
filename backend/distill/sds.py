"""Score Distillation Sampling (DreamFusion, Poole et al. 2022) and the machinery the other methods share.

SDS (PD Eq. 3, SSD Eq. 3, ASD Table 1):

    grad_theta L_SDS = E_{t, eps, c}[ w(t) (eps_hat_cfg(x_t; y^c, t) - eps) dx/dtheta ],   x_t = alpha_t x + sigma_t eps,

with eps ~ N(0, I) fresh every step, t ~ U[0.02 T, 0.98 T], w(t) = sigma_t^2 = 1 - abar_t and classifier-free
guidance eps_hat_cfg = eps_u + s (eps_c - eps_u) at s = 100 (DreamFusion / threestudio). The method returns the
bracket times w(t) as the gradient on z; the surrogate loss carries it through dz/dtheta.

Code versus paper: threestudio's implementation details are followed: integer t from U{t_min..t_max} (one per
batch element), nan_to_num on the gradient, and the optional ``grad_clip`` (elementwise clamp, or here also a
per-sample norm clip), whose value may be a C() schedule. The CFG scale is the diffusers/threestudio scale s
(DreamFusion's omega = s - 1 in the (1 + omega) eps_c - omega eps_u form).
"""

from __future__ import annotations

import torch

from .base import DistillInput, DistillMethod, DistillOutput
from .schedules import DistillConfig, clip_gradient, parse_options, scheduled_value, weighting


class ScoreDistillation(DistillMethod):
    """Shared steps of SDS-like methods: parse options into ``Config``, draw t and eps, weight, clip, report.

    Subclasses set ``Config`` (a DistillConfig subclass), ``name``, ``default_guidance`` and implement ``gradient``.
    """

    Config = DistillConfig

    def __init__(self, prior, guidance: float = 0.0, **options):
        if guidance is not None and guidance < 0:
            raise ValueError(
                f"guidance must be >= 0 (0 = the method's default {self.default_guidance}); got {guidance}"
            )
        super().__init__(prior, guidance or 0.0)
        self.config = parse_options(self.Config, options, self.name)

    # --- draws ------------------------------------------------------------------------------------------------
    def sample_t(self, inp: DistillInput) -> torch.Tensor:
        """(B,) long timesteps on z's device from the configured schedule and ``inp.generator``."""
        return self.config.schedule.sample(
            inp.z.shape[0], inp.step, inp.total_steps, self.prior.num_train_timesteps, inp.generator, inp.z.device
        )

    def t_bounds(self, inp: DistillInput) -> tuple[int, int]:
        return self.config.schedule.bounds(inp.step, inp.total_steps, self.prior.num_train_timesteps)

    @staticmethod
    def sample_noise(inp: DistillInput) -> torch.Tensor:
        """eps ~ N(0, I) shaped like z, drawn from ``inp.generator`` (on its device), float32 on z's device."""
        g = inp.generator
        return torch.randn(inp.z.shape, generator=g, device=g.device, dtype=torch.float32).to(inp.z.device)

    def weight(self, t: torch.Tensor, ndim: int = 4) -> torch.Tensor:
        """w(t) shaped (B, 1, 1, 1) to broadcast against z."""
        return weighting(self.config.weighting, self.prior.alphas_cumprod, t).view(-1, *([1] * (ndim - 1)))

    # --- output -----------------------------------------------------------------------------------------------
    def finish(self, grad: torch.Tensor, t: torch.Tensor, inp: DistillInput, **info) -> DistillOutput:
        """nan_to_num, optional clipping, and the logging scalars (grad_norm: mean per-sample L2 norm before
        clipping; t: mean timestep)."""
        grad = torch.nan_to_num(grad.detach().to(inp.z.dtype))
        info = {k: float(v) for k, v in info.items()}
        info["grad_norm"] = float(grad.flatten(1).norm(dim=1).mean())
        info["t"] = float(t.float().mean())
        clip = scheduled_value(self.config.grad_clip, inp.step, inp.total_steps)
        return DistillOutput(clip_gradient(grad, clip, self.config.grad_clip_mode), t, info)


class SDS(ScoreDistillation):
    """Score Distillation Sampling:  grad = w(t) (eps_u + s (eps_c - eps_u) - eps),  s = 100 by default.

    One batched prior call evaluates the conditional and unconditional halves of CFG. Options: DistillConfig
    (t_sampler, min/max_step_percent, weighting, grad_clip, grad_clip_mode, t_per_sample).
    """

    name = "sds"
    default_guidance = 100.0

    def gradient(self, inp: DistillInput) -> DistillOutput:
        z = inp.z.detach()
        t = self.sample_t(inp)
        eps = self.sample_noise(inp)
        x_t = self.prior.add_noise(z, eps, t)
        with torch.no_grad():
            eps_cfg, _, _ = self.prior.predict_eps_cfg(x_t, t, inp.cond, inp.uncond, self.guidance, inp.camera)
        return self.finish(self.weight(t, z.ndim) * (eps_cfg - eps), t, inp)


__all__ = ["SDS", "ScoreDistillation"]
