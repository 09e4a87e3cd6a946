"""Classifier Score Distillation (Yu et al. 2023, arXiv 2310.19415), ScaleDreamer's CSD baseline.

The gradient as ScaleDreamer restates it (arXiv 2407.02040, Table 1 / Sec. 2.2; the CSD paper itself is not among
this project's sources, so its own equation numbers are not quoted):

    grad_theta L_CSD = E_{t, eps}[ w(t) s (eps_phi(x_t; t, y) - eps_phi(x_t; t)) dx/dtheta ]

The implicit classifier score  -sigma_t grad log p(y | x_t) = eps_c - eps_u  alone; no -eps term. s is the
"guidance" (default 1, as the ASD paper's CSD baseline: "CFG 1"), w(t) = sigma_t^2 as threestudio. Written through
the shared guided prediction as w(t) (eps_cfg - eps_u), so Perp-Neg (h gains the perpendicular negative terms) and
the CFG rescale apply as they do to every method.

Negative prompts (the CSD paper's negative-prompt variant): with option ``negative_weight`` omega_2 > 0 the DistillInput's
``uncond`` is read as the *negative* prompt y_neg, the empty prompt is encoded once by the prior, and

    grad = w(t) [ s (eps(y) - eps(empty)) - omega_2 (eps(y_neg) - eps(empty)) ]

(= w [s eps(y) - (s - omega_2) eps(empty) - omega_2 eps(y_neg)], the paper's form with omega_1 = s), in one
batched prior call over 3B inputs. omega_2 may be a scheduled value (the paper anneals it). This variant has its own
negative prompt, so it refuses perp_neg and cfg_rescale.

This is SSD's mode-disengaging term h scaled by s, and ASD with shift_ratio = 0 at CFG g equals (g - 1) times CSD at
s = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..priors.base import TextEmbedding
from .base import DistillInput, DistillOutput, ScoreDistillation
from .guidance import ExtraRows
from .options import DistillConfig
from .schedules import ScheduledValue, check_scheduled_value, scheduled_value


@dataclass
class CSDConfig(DistillConfig):
    negative_weight: ScheduledValue = 0.0  # omega_2; 0 = plain CSD with DistillInput.uncond as the unconditional

    def __post_init__(self):
        super().__post_init__()
        check_scheduled_value("negative_weight", self.negative_weight, 0.0)
        if self.negative_weight != 0.0 and (self.perp_neg or self.cfg_rescale):
            raise ValueError(
                "CSD's negative_weight brings its own negative prompt; use it without perp_neg and cfg_rescale "
                "(or set negative_weight=0 to use those)"
            )


class CSD(ScoreDistillation):
    """grad = w(t) s (eps_c - eps_u) (plus the negative-prompt term when ``negative_weight`` > 0)."""

    name = "csd"
    default_guidance = 1.0
    Config = CSDConfig

    def __init__(self, prior, guidance: float = 0.0, **options):
        super().__init__(prior, guidance, **options)
        self._empty: TextEmbedding | None = None

    def gradient(self, inp: DistillInput) -> DistillOutput:
        s = self.noised(inp)
        w_neg = scheduled_value(self.config.negative_weight, inp.step, inp.total_steps) or 0.0
        if w_neg == 0:
            g = self.guided(s.x_t, s.t, inp)
            direction = g.eps_cfg - g.eps_uncond
        else:
            if self._empty is None:
                self._empty = self.prior.encode_text([""])
            g = self.guided(s.x_t, s.t, inp, extra=ExtraRows(s.x_t, s.t, self._empty), scale=1.0)
            eps_c, eps_neg, eps_empty = g.eps_cond, g.eps_uncond, g.extra
            direction = self.guidance * (eps_c - eps_empty) - w_neg * (eps_neg - eps_empty)
        return self.finish(self.weight(s.t, s.z.ndim) * direction, s.t, inp)


__all__ = ["CSD", "CSDConfig"]
