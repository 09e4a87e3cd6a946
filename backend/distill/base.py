"""The score-distillation method interface and the prologue every method shares.

A method turns a differentiable model-space render z = g(theta) into a gradient on z. The optimizer then steps on
the surrogate loss  L = 0.5 * sum_b ||z_b - stopgrad(z_b - grad_b)||^2 / B,  whose gradient with respect to z is
grad / B (so d L / d theta = (1/B) sum_b grad_b^T dz_b/dtheta: the SDS-style update that skips the UNet Jacobian,
averaged over the batch of renders).

The shared prologue (``ScoreDistillation``): draw t from the configured schedule, then eps ~ N(0, I), both from the
step's torch.Generator in that order; noise x_t = alpha_t z + sigma_t eps; one batched, guided prior call
(``guidance.guided_prediction``: CFG, optional Perp-Neg and CFG rescale, plus any extra rows a method needs);
and the epilogue: nan_to_num, optional clipping, logging scalars.

Methods with state of their own (VSD's LoRA, L2-VSD's lookahead, FSD's world-map noise) own it, update it inside
``gradient``, and save it through ``state_dict``/``load_state_dict`` so checkpoints and resume cover it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..priors.base import Prior, TextEmbedding
from .guidance import ExtraRows, GuidedPrediction, guided_prediction
from .options import DistillConfig, parse_options
from .perp_neg import ViewPrompts, check_view_prompts, perp_neg_prompts
from .schedules import clip_gradient, scheduled_value, weighting


@dataclass
class DistillInput:
    """Everything a method may look at for one optimization step.

    z: (B, C, h, w) model-space renders, float32, requires grad (methods must not backprop through it themselves;
       they return a gradient).
    cond: text embedding of the view-dependent prompts, B rows (or 1, broadcast).
    uncond: embedding of the negative/empty prompt, 1 or B rows.
    camera: (B, 4) rows (elevation_deg, azimuth_deg, distance, fov_deg), or None in the 2D harness.
    opacity: (B, 1, H, W) render opacity at the RENDER resolution (or any resolution that is a multiple of z's), or
       None. FSD average-pools it to z's resolution for its foreground mask.
    step, total_steps: for timestep schedules (step counts from 0; schedules with "P%" bounds scale to total_steps).
    rng: the torch.Generator every random draw of the step uses (timesteps, noise), for reproducibility.
    view_prompts: the prompt's front/side/back view embeddings (perp_neg.encode_view_prompts), needed only by the
       perp_neg option.
    """

    z: torch.Tensor
    cond: TextEmbedding
    uncond: TextEmbedding
    step: int
    total_steps: int
    rng: torch.Generator
    camera: torch.Tensor | None = None
    opacity: torch.Tensor | None = None
    view_prompts: ViewPrompts | None = None


@dataclass
class DistillOutput:
    grad: torch.Tensor  # same shape as z, detached
    t: torch.Tensor  # (B,) the timesteps used
    info: dict = field(default_factory=dict)  # scalars for logging (e.g. grad norm, ssd's r)


@dataclass
class NoisySample:
    """One distillation draw: z (detached, contiguous), t (B,), eps (B, C, h, w), x_t = alpha_t z + sigma_t eps."""

    z: torch.Tensor
    t: torch.Tensor
    eps: torch.Tensor
    x_t: torch.Tensor


class DistillMethod:
    """The interface. Subclasses set ``name`` and ``default_guidance`` and implement ``gradient``."""

    name: str = "base"
    default_guidance: float = 7.5

    def __init__(self, prior: Prior, guidance: float = 0.0, **options):
        self.prior = prior
        self.guidance = guidance or self.default_guidance

    def gradient(self, inp: DistillInput) -> DistillOutput:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def surrogate_loss(z: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """0.5 * ||z - sg(z - grad)||^2 summed over elements and averaged over the batch; d/dz = grad / B."""
    target = (z - grad).detach()
    return 0.5 * (z - target).pow(2).sum() / z.shape[0]


class ScoreDistillation(DistillMethod):
    """The shared steps of every method here: options -> ``Config``, draws, noising, guided prediction, w(t),
    clipping and logging. Subclasses set ``Config`` (a DistillConfig subclass), ``name``, ``default_guidance`` and
    implement ``gradient``."""

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
        """(B,) long timesteps on z's device from the configured schedule and ``inp.rng``."""
        return self.config.schedule.sample(
            inp.z.shape[0], inp.step, inp.total_steps, self.prior.num_train_timesteps, inp.rng, inp.z.device
        )

    def t_bounds(self, inp: DistillInput) -> tuple[int, int]:
        """(t_min, t_max) of the schedule at this step."""
        return self.config.schedule.bounds(inp.step, inp.total_steps, self.prior.num_train_timesteps)

    @staticmethod
    def sample_noise(inp: DistillInput) -> torch.Tensor:
        """eps ~ N(0, I) shaped like z, drawn from ``inp.rng`` (on its device), float32 on z's device."""
        g = inp.rng
        return torch.randn(inp.z.shape, generator=g, device=g.device, dtype=torch.float32).to(inp.z.device)

    def noised(self, inp: DistillInput, noise: Callable[[DistillInput], torch.Tensor] | None = None) -> NoisySample:
        """t, then eps = ``noise(inp)`` (default: fresh N(0, I)), from ``inp.rng`` in that order, and
        x_t = alpha_t z + sigma_t eps.

        z is made contiguous: renders often arrive channels-last, and forward-mode group_norm (L2-VSD's jvp) needs
        contiguous inputs."""
        z = inp.z.detach().contiguous()
        t = self.sample_t(inp)
        eps = (noise or self.sample_noise)(inp)
        return NoisySample(z, t, eps, self.prior.add_noise(z, eps, t))

    # --- the guided prediction --------------------------------------------------------------------------------
    def guided(
        self, x_t: torch.Tensor, t: torch.Tensor, inp: DistillInput, extra: ExtraRows | None = None, scale=None
    ) -> GuidedPrediction:
        """eps_u + s h at (x_t, t) with this method's guidance s (or ``scale``), Perp-Neg and CFG rescale as
        configured, and ``extra`` rows in the same prior call."""
        cond, negatives = inp.cond, None
        if self.config.perp_neg:
            check_view_prompts(inp.view_prompts, inp.camera, bool(getattr(self.prior, "supports_camera", False)))
            cond, negatives = perp_neg_prompts(inp.view_prompts, inp.cond, inp.uncond, inp.camera)
        return guided_prediction(
            self.prior,
            x_t,
            t,
            cond,
            inp.uncond,
            self.guidance if scale is None else scale,
            inp.camera,
            negatives,
            self.config.cfg_rescale,
            extra,
        )

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


__all__ = [
    "DistillInput",
    "DistillMethod",
    "DistillOutput",
    "NoisySample",
    "ScoreDistillation",
    "surrogate_loss",
]
