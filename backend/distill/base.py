"""The score-distillation method interface.

A method turns a differentiable model-space render z = g(theta) into a gradient on z. The optimizer then steps on
the surrogate loss  L = 0.5 * ||z - stopgrad(z - grad)||^2,  whose gradient with respect to z is exactly ``grad``
(so d L / d theta = grad^T dz/dtheta, the SDS-style update that skips the UNet Jacobian).

Methods with state of their own (VSD's LoRA, L2-VSD's lookahead, FSD's world-map noise) own it, update it inside
``gradient``, and save it through ``state_dict``/``load_state_dict`` so checkpoints and resume cover it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..priors.base import Prior, TextEmbedding


@dataclass
class DistillInput:
    """Everything a method may look at for one optimization step.

    z: (B, C, h, w) model-space renders, float32, requires grad (methods must not backprop through it themselves;
       they return a gradient).
    cond: text embedding of the view-dependent prompts, B rows (or 1, broadcast).
    uncond: embedding of the negative/empty prompt, 1 or B rows.
    camera: (B, 4) rows (elevation_deg, azimuth_deg, distance, fov_deg), or None in the 2D harness.
    opacity: (B, 1, h, w) render opacity at model-space resolution, or None (FSD splits foreground/background).
    step, total_steps: for timestep schedules (step counts from 0).
    generator: the torch.Generator every random draw of the step uses (timesteps, noise), for reproducibility.
    """

    z: torch.Tensor
    cond: TextEmbedding
    uncond: TextEmbedding
    step: int
    total_steps: int
    generator: torch.Generator
    camera: torch.Tensor | None = None
    opacity: torch.Tensor | None = None


@dataclass
class DistillOutput:
    grad: torch.Tensor  # same shape as z, detached
    t: torch.Tensor  # (B,) the timesteps used
    info: dict = field(default_factory=dict)  # scalars for logging (e.g. grad norm, ssd's r)


class DistillMethod:
    """Base class. Subclasses set ``name`` and ``default_guidance`` and implement ``gradient``."""

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
