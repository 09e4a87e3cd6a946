"""The 2D harness of the score-distillation papers: optimise a set of particles directly with a method's gradient.

The "renders" are the particles themselves (the renderer is the identity), so a method's update on the particle x
is exactly its gradient on z = x. With the exact priors of ``dreamstill.backend.priors.analytic`` every score is
known in closed form, which is how the papers' 2D claims (SDS collapses, VSD/FSD keep the spread, ASD's gradient
norm is far below SDS's at CFG 100) are checked here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import DistillInput, DistillMethod


@dataclass
class ParticleRun:
    """Result of ``optimize_particles``: final particles (N, *shape), per-step mean gradient norms, snapshots."""

    particles: torch.Tensor
    grad_norms: torch.Tensor
    snapshots: list[torch.Tensor]


def optimize_particles(
    method: DistillMethod,
    x0: torch.Tensor,
    steps: int,
    lr: float = 0.05,
    optimizer: str = "adam",
    seed: int = 0,
    prompt: str = "a point",
    negative_prompt: str = "",
    snapshot_every: int = 0,
) -> ParticleRun:
    """Optimise N particles x (the "renders" z = x) with ``method.gradient`` for ``steps`` steps.

    Each step hands the whole particle set to the method as one batch (one t and eps per particle) and applies its
    gradient directly: "sgd" is x <- x - lr * grad, "adam" is torch.optim.Adam on that gradient (betas 0.9, 0.999;
    the papers' 2D toys use Adam). Every draw comes from one torch.Generator seeded with ``seed``.
    """
    prior = method.prior
    x = torch.nn.Parameter(x0.detach().clone().float().reshape(x0.shape[0], *prior.latent_shape))
    if optimizer == "adam":
        opt = torch.optim.Adam([x], lr=lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD([x], lr=lr)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose adam or sgd")
    cond, uncond = prior.encode_text([prompt]), prior.encode_text([negative_prompt])
    rng = torch.Generator().manual_seed(seed)
    norms, snaps = [], [x.detach().clone()] if snapshot_every else []
    for step in range(steps):
        out = method.gradient(DistillInput(x, cond, uncond, step, steps, rng))
        norms.append(float(out.grad.flatten(1).norm(dim=1).mean()))
        opt.zero_grad(set_to_none=True)
        x.grad = out.grad.detach().to(x.dtype)
        opt.step()
        if snapshot_every and (step + 1) % snapshot_every == 0:
            snaps.append(x.detach().clone())
    return ParticleRun(x.detach().clone(), torch.tensor(norms), snaps)


__all__ = ["ParticleRun", "optimize_particles"]
