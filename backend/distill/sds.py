"""Score Distillation Sampling (DreamFusion, Poole et al. 2022, arXiv 2209.14988, Eq. 3).

    grad_theta L_SDS = E_{t, eps}[ w(t) (eps_hat_phi(z_t; y, t) - eps) dx/dtheta ],   z_t = alpha_t x + sigma_t eps,

with eps ~ N(0, I) fresh every step, t ~ U[0.02 T, 0.98 T], w(t) = sigma_t^2 = 1 - abar_t and classifier-free
guidance eps_hat = eps_u + s (eps_c - eps_u) at s = 100 (DreamFusion / threestudio). The method returns the
bracket times w(t) as the gradient on z; the surrogate loss carries it through dz/dtheta.

Code versus paper: threestudio's implementation details are followed: integer t from U{t_min..t_max} (one per
batch element), nan_to_num on the gradient, and the optional ``grad_clip`` (elementwise clamp, or here also a
per-sample norm clip), whose value may be a scheduled value. The CFG scale is the diffusers/threestudio scale s
(DreamFusion's omega = s - 1 in its (1 + omega) eps_c - omega eps_u form).
"""

from __future__ import annotations

from .base import DistillInput, DistillOutput, ScoreDistillation


class SDS(ScoreDistillation):
    """Score Distillation Sampling:  grad = w(t) (eps_u + s (eps_c - eps_u) - eps),  s = 100 by default.

    One batched prior call evaluates the conditional and unconditional halves of CFG. Options: DistillConfig.
    """

    name = "sds"
    default_guidance = 100.0

    def gradient(self, inp: DistillInput) -> DistillOutput:
        s = self.noised(inp)
        eps_cfg = self.guided(s.x_t, s.t, inp).eps_cfg
        return self.finish(self.weight(s.t, s.z.ndim) * (eps_cfg - s.eps), s.t, inp)


__all__ = ["SDS"]
