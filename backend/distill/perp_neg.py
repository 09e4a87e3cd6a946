"""Perp-Neg's view-dependent prompts for text-to-3D (Armandpour et al. 2023, arXiv 2304.04968).

Perp-Neg's remedy for multi-faced ("Janus") assets: each view's positive prompt is interpolated between the
embeddings of "<prompt>, front view", "<prompt>, side view" and "<prompt>, back view", and the other views' prompts
act as negatives through the perpendicular guidance of ``guidance.py``. With the azimuth a of a view wrapped to
[-180, 180) and f(r; A, b, c) = A exp(-b r) + c:

    |a| < 90 (front half):  r = 1 - |a| / 90     (1 = full front, 0 = full side)
        positive  = r e_front + (1 - r) e_side
        negatives = [e_front, e_side],  weights [-f_fs(r), -f_sf(1 - r)]
    |a| >= 90 (back half):  r = 2 - |a| / 90     (1 = full side, 0 = full back)
        positive  = r e_side + (1 - r) e_back
        negatives = [e_side, e_front], weights [-f_sb(r), -f_fsb(r)]

with the weight curves (A, b, c) of threestudio's Perp-Neg defaults: f_fs = f_sf = (4, 0.5, -2.426) (zero at r = 1, so
a pure front view is not repelled from "front"), f_sb = (1, 0.5, -0.606), f_fsb = (1, 0.5, 0.967). Views above the
overhead elevation (60 degrees, as ``render.cameras.view_suffix``) keep the caller's own prompt and get no negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..priors.base import Prior, TextEmbedding
from .guidance import NegativePrompts

F_FRONT_SIDE = (4.0, 0.5, -2.426)
F_SIDE_FRONT = (4.0, 0.5, -2.426)
F_SIDE_BACK = (1.0, 0.5, -0.606)
F_FRONT_SIDE_BACK = (1.0, 0.5, 0.967)
OVERHEAD_DEG = 60.0
VIEW_SUFFIXES = ("front view", "side view", "back view")


def decay(curve: tuple[float, float, float], r: torch.Tensor) -> torch.Tensor:
    """f(r; A, b, c) = A exp(-b r) + c."""
    a, b, c = curve
    return a * torch.exp(-b * r) + c


@dataclass
class ViewPrompts:
    """Embeddings of the prompt with DreamFusion's front, side and back view suffixes: 1 row each (one prompt for
    the whole batch), or B rows (row b for sample b, e.g. the amortized trainer's prompts repeated per view)."""

    front: TextEmbedding
    side: TextEmbedding
    back: TextEmbedding

    def repeat(self, n: int) -> ViewPrompts:
        """Each row repeated n times in place (as TextEmbedding.repeat): one prompt per view of a prompt."""
        return ViewPrompts(self.front.repeat(n), self.side.repeat(n), self.back.repeat(n))


def view_prompt_texts(prompt: str) -> list[str]:
    """["<prompt>, front view", "<prompt>, side view", "<prompt>, back view"] (render.cameras' suffixes)."""
    return [f"{prompt}, {suffix}" for suffix in VIEW_SUFFIXES]


def encode_view_prompts(prior: Prior, prompt: str | list[str]) -> ViewPrompts:
    """The view prompts of ``prompt`` (or of each prompt of a list, one row each) encoded by ``prior``, once per job
    (DistillInput.view_prompts)."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    emb = prior.encode_text([text for p in prompts for text in view_prompt_texts(p)])

    def rows(k: int) -> TextEmbedding:  # view k of every prompt
        return TextEmbedding(emb.tokens[k::3], None if emb.pooled is None else emb.pooled[k::3])

    return ViewPrompts(rows(0), rows(1), rows(2))


def _mix(a: TextEmbedding, b: TextEmbedding, r: torch.Tensor) -> TextEmbedding:
    """r a + (1 - r) b per row (a, b broadcast from one row)."""

    def blend(x, y):
        rr = r.to(x).view(-1, *([1] * (x.ndim - 1)))
        return rr * x + (1 - rr) * y

    pooled = None if a.pooled is None or b.pooled is None else blend(a.pooled, b.pooled)
    return TextEmbedding(blend(a.tokens, b.tokens), pooled)


def _pick(mask: torch.Tensor, a: TextEmbedding, b: TextEmbedding) -> TextEmbedding:
    """Row-wise a where mask, else b (all broadcast to len(mask) rows)."""
    n = mask.shape[0]
    a, b = a.expand_to(n), b.expand_to(n)

    def sel(x, y):
        return torch.where(mask.to(x.device).view(-1, *([1] * (x.ndim - 1))), x, y)

    pooled = None if a.pooled is None or b.pooled is None else sel(a.pooled, b.pooled)
    return TextEmbedding(sel(a.tokens, b.tokens), pooled)


def perp_neg_prompts(
    views: ViewPrompts, cond: TextEmbedding, uncond: TextEmbedding, camera: torch.Tensor
) -> tuple[TextEmbedding, NegativePrompts]:
    """(positive prompts, negatives with weights) for views ``camera`` (B, 4) rows (elevation, azimuth, ...)."""
    b = camera.shape[0]
    cam = camera.detach().float().cpu()
    azimuth = torch.remainder(cam[:, 1] + 180.0, 360.0) - 180.0
    spread = azimuth.abs() / 90.0
    front_half = spread < 1.0
    r = torch.where(front_half, 1.0 - spread, 2.0 - spread)
    overhead = cam[:, 0] > OVERHEAD_DEG
    positive = _pick(
        front_half, _mix(views.front, views.side, r), _mix(views.side, views.back, r)
    )  # r weighs the first of each pair
    positive = _pick(overhead, cond.expand_to(b), positive)
    first = _pick(front_half, views.front, views.side)
    second = _pick(front_half, views.side, views.front)
    weights = torch.stack(
        [
            torch.where(front_half, -decay(F_FRONT_SIDE, r), -decay(F_SIDE_BACK, r)),
            torch.where(front_half, -decay(F_SIDE_FRONT, 1.0 - r), -decay(F_FRONT_SIDE_BACK, r)),
        ],
        dim=1,
    )
    weights = torch.where(overhead[:, None], torch.zeros_like(weights), weights)
    negatives = [_pick(overhead, uncond.expand_to(b), first), _pick(overhead, uncond.expand_to(b), second)]
    device = cond.tokens.device
    return positive, NegativePrompts(negatives, weights.to(device))


def check_view_prompts(views: ViewPrompts | None, camera: torch.Tensor | None, supports_camera: bool) -> None:
    """Raise a ValueError that says what to pass when Perp-Neg cannot run on this input."""
    if supports_camera:
        raise ValueError(
            "perp_neg works with view-dependent prompts; this prior is camera-conditioned (MVDream-style) and sees "
            "the plain prompt: leave perp_neg off"
        )
    if views is None:
        raise ValueError(
            "perp_neg needs the prompt's front/side/back view embeddings: pass DistillInput.view_prompts = "
            "encode_view_prompts(prior, prompt) (dreamstill.backend.distill.perp_neg)"
        )
    if camera is None:
        raise ValueError(
            "perp_neg needs the views' cameras (DistillInput.camera, (B, 4) rows) to pick each view's prompts"
        )


__all__ = [
    "ViewPrompts",
    "check_view_prompts",
    "decay",
    "encode_view_prompts",
    "perp_neg_prompts",
    "view_prompt_texts",
]
