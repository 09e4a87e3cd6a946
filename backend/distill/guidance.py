"""The guided noise prediction every method starts from: CFG, Perp-Neg and CFG rescale in ONE batched prior call.

Classifier-free guidance (Ho & Salimans 2022, arXiv 2207.12598; the diffusers/threestudio scale s):

    eps_cfg = eps_u + s h,     h = eps_c - eps_u                     (h: the implicit classifier direction)

Perp-Neg (Armandpour et al. 2023, arXiv 2304.04968, the perpendicular negative guidance): negative prompts y_i
push only along the part of their own classifier direction that is perpendicular to the positive one,

    h = (eps_c - eps_u) + sum_i w_i perp(eps_{neg,i} - eps_u, eps_c - eps_u),
    perp(a, b) = a - (<a, b> / ||b||^2) b            (per sample, over all elements),

with w_i <= 0 (a negative prompt repels); ``perp_neg.py`` builds the view-dependent prompts and weights.

CFG rescale (Lin et al. 2024, arXiv 2305.08891, Eq. 15-16; MVDream's "SDS*" uses phi = 0.5): in x0 space,

    x0_cfg = (x_t - sigma_t eps_cfg) / alpha_t,   x0_c = (x_t - sigma_t eps_c) / alpha_t,
    x0_final = phi x0_cfg std(x0_c) / std(x0_cfg) + (1 - phi) x0_cfg        (std per sample over C, h, w),

and back to eps: eps_final = (x_t - alpha_t x0_final) / sigma_t. With k = std(x0_c) / std(x0_cfg) (alpha_t cancels:
k = std(x_t - sigma_t eps_c) / std(x_t - sigma_t eps_cfg)) and m = phi k + 1 - phi this is

    eps_final = m eps_cfg + (1 - m) x_t / sigma_t,

which never divides by alpha_t (tiny near t = T). MVDream takes the std over its 4 views together; here it is per
sample, so each view is rescaled on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..priors.base import Prior, TextEmbedding


@dataclass
class NegativePrompts:
    """Perp-Neg's negatives: K embeddings of B rows each (row b belongs to sample b) and weights (B, K), w <= 0."""

    texts: list[TextEmbedding]
    weights: torch.Tensor


@dataclass
class ExtraRows:
    """Predictions a method needs besides CFG's pair, batched into the same prior call (e.g. ASD's eps_c at t + dt).

    text None means the positive prompt the guidance used (after Perp-Neg's view interpolation, if on)."""

    x_t: torch.Tensor
    t: torch.Tensor
    text: TextEmbedding | None = None


@dataclass
class GuidedPrediction:
    """eps_cfg = eps_u + s h (rescaled when cfg_rescale > 0), its parts, and the extra rows' predictions."""

    eps_cfg: torch.Tensor
    eps_cond: torch.Tensor
    eps_uncond: torch.Tensor
    direction: torch.Tensor  # h: eps_c - eps_u plus the Perp-Neg terms
    cond: TextEmbedding  # the positive prompt used
    extra: torch.Tensor | None = None


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def perpendicular_component(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a - (<a, b> / ||b||^2) b per sample: the part of a orthogonal to b (zero where b is zero)."""
    dot = (a.flatten(1) * b.flatten(1)).sum(1)
    norm2 = b.flatten(1).pow(2).sum(1)
    coef = torch.where(norm2 > 0, dot / norm2.clamp_min(1e-30), torch.zeros_like(dot))
    return a - _per_sample(coef, a) * b


def perp_neg_direction(
    eps_cond: torch.Tensor, eps_uncond: torch.Tensor, eps_negs: list[torch.Tensor], weights: torch.Tensor
) -> torch.Tensor:
    """h = (eps_c - eps_u) + sum_i w_i perp(eps_{neg,i} - eps_u, eps_c - eps_u)  (module docstring)."""
    positive = eps_cond - eps_uncond
    h = positive
    for i, eps_neg in enumerate(eps_negs):
        h = h + _per_sample(weights[:, i].to(h), h) * perpendicular_component(eps_neg - eps_uncond, positive)
    return h


def rescale_cfg(
    eps_cfg: torch.Tensor, eps_cond: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor, phi: float
) -> torch.Tensor:
    """Lin et al.'s CFG rescale in x0 space, returned as eps: m eps_cfg + (1 - m) x_t / sigma_t (module docstring)."""
    if phi == 0:
        return eps_cfg
    std_c = (x_t - sigma * eps_cond).flatten(1).std(dim=1)
    std_cfg = (x_t - sigma * eps_cfg).flatten(1).std(dim=1).clamp_min(1e-12)
    m = _per_sample(phi * std_c / std_cfg + 1.0 - phi, eps_cfg)
    return m * eps_cfg + (1.0 - m) * x_t / sigma


def _repeat_camera(camera: torch.Tensor | None, n: int) -> torch.Tensor | None:
    return None if camera is None else camera.repeat(n, 1)


def guided_prediction(
    prior: Prior,
    x_t: torch.Tensor,
    t: torch.Tensor,
    cond: TextEmbedding,
    uncond: TextEmbedding,
    guidance: float,
    camera: torch.Tensor | None = None,
    negatives: NegativePrompts | None = None,
    cfg_rescale: float = 0.0,
    extra: ExtraRows | None = None,
) -> GuidedPrediction:
    """One prior call on [x_t | cond, x_t | uncond, x_t | negative_1..K, extra rows]; CFG with scale ``guidance``,
    Perp-Neg when ``negatives`` are given, and the rescale when ``cfg_rescale`` (phi) > 0. Runs under no_grad."""
    b = x_t.shape[0]
    cond = cond.expand_to(b)
    texts = [cond, uncond.expand_to(b)] + ([] if negatives is None else [n.expand_to(b) for n in negatives.texts])
    n_guided = len(texts)
    xs, ts, cams = [x_t] * n_guided, [t] * n_guided, _repeat_camera(camera, n_guided)
    if extra is not None:
        rows = extra.x_t.shape[0]
        xs, ts = xs + [extra.x_t], ts + [extra.t]
        texts.append(cond if extra.text is None else extra.text.expand_to(rows))
        if camera is not None:
            if rows % b:
                raise ValueError(f"extra rows ({rows}) must be a multiple of the batch ({b}) to reuse its cameras")
            cams = torch.cat([cams, camera.repeat(rows // b, 1)])
    with torch.no_grad():
        out = prior.predict_eps(torch.cat(xs), torch.cat(ts), TextEmbedding.cat(texts), cams)
    parts = list(out[: n_guided * b].chunk(n_guided))
    eps_cond, eps_uncond = parts[0], parts[1]
    if negatives is None:
        direction = eps_cond - eps_uncond
    else:
        direction = perp_neg_direction(eps_cond, eps_uncond, parts[2:], negatives.weights)
    eps_cfg = eps_uncond + guidance * direction
    if cfg_rescale > 0:
        _, sigma = prior.alpha_sigma(t, x_t.ndim)
        eps_cfg = rescale_cfg(eps_cfg, eps_cond, x_t, sigma, cfg_rescale)
    extra_out = out[n_guided * b :] if extra is not None else None
    return GuidedPrediction(eps_cfg, eps_cond, eps_uncond, direction, cond, extra_out)


__all__ = [
    "ExtraRows",
    "GuidedPrediction",
    "NegativePrompts",
    "guided_prediction",
    "perp_neg_direction",
    "perpendicular_component",
    "rescale_cfg",
]
