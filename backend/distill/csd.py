"""Classifier Score Distillation (Yu et al. 2023), the baseline ScaleDreamer compares with (spec_asd §2).

    grad_theta L_CSD = E_{t, eps, c}[ w(t) s (eps_phi(x_t; t, y^c) - eps_phi(x_t; t)) dx/dtheta ]

The implicit classifier score  -sigma_t grad log p(y | x_t) = eps_c - eps_u  alone; no -eps term. s is the
"guidance" (default 1, as the ASD paper's CSD baseline: "CFG 1"), w(t) = sigma_t^2 as threestudio.

Negative prompts (the CSD paper's variant): with option ``negative_weight`` omega_2 > 0 the DistillInput's
``uncond`` is read as the *negative* prompt y_neg, the empty prompt is encoded once by the prior, and

    grad = w(t) [ s (eps(y) - eps(empty)) - omega_2 (eps(y_neg) - eps(empty)) ]

(= w [s eps(y) - (s - omega_2) eps(empty) - omega_2 eps(y_neg)], the paper's form with omega_1 = s), in one
batched prior call over 3B inputs. omega_2 may be a C() schedule (the paper anneals it).

This is SSD's mode-disengaging term h scaled by s, and ASD with eta = 0 at CFG g equals (g - 1) times CSD at s = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..priors.base import TextEmbedding
from .base import DistillInput, DistillOutput
from .schedules import DistillConfig, ScheduledValue, scheduled_value
from .sds import ScoreDistillation


@dataclass
class CSDConfig(DistillConfig):
    negative_weight: ScheduledValue = 0.0  # omega_2; 0 = plain CSD with DistillInput.uncond as the unconditional


class CSD(ScoreDistillation):
    """grad = w(t) s (eps_c - eps_u) (plus the negative-prompt term when ``negative_weight`` > 0)."""

    name = "csd"
    default_guidance = 1.0
    Config = CSDConfig

    def __init__(self, prior, guidance: float = 0.0, **options):
        super().__init__(prior, guidance, **options)
        self._empty: TextEmbedding | None = None

    def gradient(self, inp: DistillInput) -> DistillOutput:
        z = inp.z.detach()
        b = z.shape[0]
        t = self.sample_t(inp)
        eps = self.sample_noise(inp)
        x_t = self.prior.add_noise(z, eps, t)
        w_neg = scheduled_value(self.config.negative_weight, inp.step, inp.total_steps) or 0.0
        with torch.no_grad():
            if w_neg == 0:
                _, eps_c, eps_u = self.prior.predict_eps_cfg(x_t, t, inp.cond, inp.uncond, 1.0, inp.camera)
                direction = self.guidance * (eps_c - eps_u)
            else:
                if self._empty is None:
                    self._empty = self.prior.encode_text([""])
                texts = [inp.cond.expand_to(b), self._empty.expand_to(b), inp.uncond.expand_to(b)]
                cam = None if inp.camera is None else inp.camera.repeat(3, 1)
                out = self.prior.predict_eps(x_t.repeat(3, 1, 1, 1), t.repeat(3), TextEmbedding.cat(texts), cam)
                eps_c, eps_empty, eps_neg = out.chunk(3)
                direction = self.guidance * (eps_c - eps_empty) - w_neg * (eps_neg - eps_empty)
        return self.finish(self.weight(t, z.ndim) * direction, t, inp)


__all__ = ["CSD", "CSDConfig"]
