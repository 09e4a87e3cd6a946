"""Regularizers for surface (SDF) and density fields, each a scalar loss to add with a weight.

    eikonal             E_x[(||grad d(x)|| - 1)^2]                                  (Gropp et al. 2020; NeuS, VolSDF)
    orientation         sum_i w_i max(0, n_i . v_i)^2 / sum_i [w_i > 0]             (Ref-NeRF Eq. 7; DreamFusion)
    normal smoothness   E_x[||n(x) - n(x + delta)||^p], delta ~ N(0, s_n^2 I)      (UNISURF / Oechsle et al. 2021
                                                                                    with p = 2; p = 1 is the normals'
                                                                                    total variation, edge-keeping)
    opacity sparsity    E_rays[sqrt(o^2 + k^2)]                                     (threestudio's lambda_sparsity)
    opacity entropy     E_rays[-o log o - (1 - o) log(1 - o)]                       (threestudio's lambda_opaque)

Symbols: d the signed distance, n = grad d / ||grad d|| the outward normal, v the unit ray direction (from the camera
into the scene, so a normal facing away from the camera has n . v > 0), w_i the compositing weights of the samples
on a ray, o the accumulated opacity of a ray.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def eikonal_loss(grad: torch.Tensor) -> torch.Tensor:
    """E[(||grad d|| - 1)^2] over (N, 3) gradients; 0 exactly for a true distance function."""
    if grad.ndim != 2 or grad.shape[-1] != 3:
        raise ValueError(f"eikonal_loss expects gradients (N, 3), got shape {tuple(grad.shape)}")
    return ((grad.norm(dim=-1) - 1.0) ** 2).mean()


def orientation_loss(weights: torch.Tensor, normals: torch.Tensor, view_dirs: torch.Tensor) -> torch.Tensor:
    """sum w max(0, n . v)^2 / #(w > 0): penalises visible normals that face away from the camera.

    weights (...,), normals (..., 3), view_dirs (..., 3) unit ray directions (broadcast against normals). The
    weights are used as given (detach them to move only the normals, as threestudio does). Works per sample (w_i,
    n_i) or per ray (the accumulated opacity and the composited normal).
    """
    if normals.shape[-1] != 3 or weights.shape != normals.shape[:-1]:
        raise ValueError(
            f"orientation_loss: weights {tuple(weights.shape)} must match normals {tuple(normals.shape)} without "
            f"the last axis of 3"
        )
    facing_away = (normals * view_dirs).sum(-1).clamp_min(0.0)
    count = (weights > 0).sum().clamp_min(1)
    return (weights * facing_away**2).sum() / count


def normal_difference(normal_fn: Callable, x: torch.Tensor, offsets: torch.Tensor, power: float = 2.0):
    """E ||n(x) - n(x + offsets)||^p for given (N, 3) offsets (normal_fn maps (N, 3) -> unit (N, 3)).

    p = 2 penalises curvature everywhere (it rounds edges over time); p = 1 is the total variation of the normals,
    which charges a sharp edge no more than a gentle bend of the same total turn, so it flattens faces but keeps
    edges (piecewise-planar surfaces cost least). p = 1 uses sqrt(||.||^2 + 1e-8) to stay differentiable at 0.
    """
    both = normal_fn(torch.cat([x, x + offsets]))
    sq = ((both[: len(x)] - both[len(x) :]) ** 2).sum(-1)
    if power == 2.0:
        return sq.mean()
    return (sq + 1e-8).pow(0.5 * power).mean()


def normal_smoothness_loss(
    normal_fn: Callable, x: torch.Tensor, jitter: float, rng: torch.Generator, power: float = 2.0
) -> torch.Tensor:
    """E ||n(x) - n(x + delta)||^p with delta ~ N(0, jitter^2 I) drawn from ``rng``; 0 for a plane."""
    if not jitter > 0:
        raise ValueError(f"normal smoothness jitter is {jitter}; use a small positive distance in world units (0.02)")
    if not power > 0:
        raise ValueError(f"normal smoothness power is {power}; use 2 (squared) or 1 (total variation)")
    noise = torch.randn(x.shape, generator=rng, device=rng.device).to(x.device, x.dtype)
    return normal_difference(normal_fn, x, jitter * noise, power)


def opacity_sparsity_loss(opacity: torch.Tensor, k: float = 0.1) -> torch.Tensor:
    """mean sqrt(o^2 + k^2): about mean o for o >> k, smooth at 0 (threestudio's sparsity with k^2 = 0.01)."""
    return torch.sqrt(opacity * opacity + k * k).mean()


def opacity_entropy_loss(opacity: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """mean binary entropy of o (clamped to [eps, 1 - eps]): 0 for o in {0, 1}, log 2 at o = 1/2."""
    o = opacity.clamp(eps, 1 - eps)
    return (-(o * torch.log(o) + (1 - o) * torch.log(1 - o))).mean()
