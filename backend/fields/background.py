"""Backgrounds: what a ray that leaves the scene sees, c_bg(d) for a unit ray direction d.

"solid": a constant colour (white by default, the toy world's and DreamFusion's usual choice for previews).
"learned": threestudio's neural-environment-map background: a small MLP on a frequency encoding of d,
    gamma(d) = [d, sin(2^k pi d), cos(2^k pi d)]_{k < K},   c_bg(d) = sigmoid(MLP(gamma(d))).
It starts close to ``color`` (last layer scaled down, bias set to logit(color)) so the first renders match the solid
background, then learns. The renderer composites  rgb = sum_i weight_i c_i + (1 - opacity) c_bg.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .nerf import make_mlp

BACKGROUND_KINDS = ("solid", "learned")


@dataclass
class BackgroundConfig:
    kind: str = "solid"
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    n_frequencies: int = 4
    hidden_dim: int = 32
    n_hidden_layers: int = 1

    def validate(self) -> BackgroundConfig:
        if self.kind not in BACKGROUND_KINDS:
            raise ValueError(f"BackgroundConfig.kind is {self.kind!r}; use one of {BACKGROUND_KINDS}")
        if len(self.color) != 3 or not all(0.0 <= float(c) <= 1.0 for c in self.color):
            raise ValueError(f"BackgroundConfig.color is {self.color}; use three values in [0, 1]")
        if self.n_frequencies < 0:
            raise ValueError(f"BackgroundConfig.n_frequencies is {self.n_frequencies}; use 0 or more (4)")
        return self


def frequency_encoding(d: torch.Tensor, n_frequencies: int) -> torch.Tensor:
    """[d, sin(2^k pi d), cos(2^k pi d) for k < K] along the last axis: (..., 3 + 6K)."""
    if n_frequencies == 0:
        return d
    scales = (2.0 ** torch.arange(n_frequencies, device=d.device, dtype=d.dtype)) * math.pi
    a = (d[..., None, :] * scales[:, None]).flatten(-2)
    return torch.cat([d, a.sin(), a.cos()], -1)


class Background(nn.Module):
    """forward(dirs (..., 3)) -> colours (..., 3) in [0, 1]."""

    def __init__(self, config: BackgroundConfig | None = None, rng: torch.Generator | None = None, **overrides):
        super().__init__()
        config = config or BackgroundConfig()
        if overrides:
            config = BackgroundConfig(**{**config.__dict__, **overrides})
        self.config = cfg = config.validate()
        self.register_buffer("color", torch.tensor([float(c) for c in cfg.color]), persistent=False)
        self.mlp = None
        if cfg.kind == "learned":
            n_in = 3 + 6 * cfg.n_frequencies
            self.mlp = make_mlp(n_in, 3, cfg.hidden_dim, cfg.n_hidden_layers, rng)
            last = self.mlp[-1]
            with torch.no_grad():
                last.weight.mul_(0.01)
                last.bias.copy_(torch.logit(self.color.clamp(0.02, 0.98)))

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        if dirs.shape[-1] != 3:
            raise ValueError(f"Background expects ray directions (..., 3), got shape {tuple(dirs.shape)}")
        if self.mlp is None:
            return self.color.to(dirs.dtype).expand(*dirs.shape[:-1], 3)
        d = torch.nn.functional.normalize(dirs, dim=-1)
        return torch.sigmoid(self.mlp(frequency_encoding(d, self.config.n_frequencies)))
