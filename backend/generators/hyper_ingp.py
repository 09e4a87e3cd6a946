"""Hyper-iNGP (ATT3D; ScaleDreamer App. A.3): a prompt-agnostic hash grid, prompt-specific decoder weights.

    h(x) = HashGrid(x)                                  shared by every prompt (L levels x F features)
    [W_1, W_2, U_1, U_2] = H(y)                         hypernetwork on the pooled text embedding y:
                                                        H = Linear(no bias) -> LayerNorm -> SiLU -> Linear
    density_raw = W_2 relu(W_1 h),  c_raw = U_2 relu(U_1 h)   generated layers, no biases (as the released code)

Spectral normalisation of the hypernetwork's linear layers is optional: ATT3D and ScaleDreamer find SDS needs it
for stability and ASD does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm

from ..fields.hashgrid import HashGridConfig, HashGridEncoding
from ..priors.base import TextEmbedding
from .base import GeneratedFields, make_decoding, pooled_text


@dataclass
class HyperINGPConfig:
    text_dim: int = 64
    hyper_hidden: int = 64
    decoder_hidden: int = 32
    spectral_norm: bool = False
    bound: float = 1.0
    grid: HashGridConfig | None = None
    geometry: str = "density"  # or "sdf": density_raw is a signed distance's raw_d (base.SDFDecoding)

    @classmethod
    def paper(cls) -> HyperINGPConfig:
        """Released sizes: 16 levels x 2 features, 2^19 table, base 16, scale 1.4473; text 1024; hidden 64."""
        return cls(
            text_dim=1024,
            hyper_hidden=64,
            decoder_hidden=64,
            grid=HashGridConfig(
                n_levels=16, n_features_per_level=2, log2_hashmap_size=19, base_resolution=16, per_level_scale=1.4473
            ),
        )


class HyperINGP(nn.Module):
    def __init__(self, config: HyperINGPConfig | None = None):
        super().__init__()
        self.config = c = config or HyperINGPConfig()
        self.grid = HashGridEncoding(c.grid or HashGridConfig())
        d = self.grid.output_dim
        self.shapes = [(c.decoder_hidden, d), (1, c.decoder_hidden), (c.decoder_hidden, d), (3, c.decoder_hidden)]
        n_weights = sum(o * i for o, i in self.shapes)
        first = nn.Linear(c.text_dim, c.hyper_hidden, bias=False)
        last = nn.Linear(c.hyper_hidden, n_weights)
        if c.spectral_norm:
            first, last = spectral_norm(first), spectral_norm(last)
        self.hyper = nn.Sequential(first, nn.LayerNorm(c.hyper_hidden), nn.SiLU(), last)
        with torch.no_grad():  # start near a fan-in initialised decoder for every prompt
            lin = last.parametrizations.weight.original if c.spectral_norm else last.weight
            lin.mul_(0.1)
            start = 0
            for o, i in self.shapes:
                last.bias[start : start + o * i].uniform_(-(i**-0.5), i**-0.5)
                start += o * i
        self.decoding = make_decoding(c.geometry, c.bound)
        if c.geometry == "sdf":
            self.reset_distance_head()

    def reset_distance_head(self) -> None:
        """W_2 = 0 for every prompt (its rows of the hypernetwork's last layer zeroed): raw_d = 0, so the SDF
        generator's field is SDFDecoding's ball."""
        last = self.hyper[-1]
        weight = last.parametrizations.weight.original if self.config.spectral_norm else last.weight
        start = self.shapes[0][0] * self.shapes[0][1]
        size = self.shapes[1][0] * self.shapes[1][1]
        with torch.no_grad():
            weight[start : start + size].zero_()
            last.bias[start : start + size].zero_()

    def forward(self, text: TextEmbedding) -> HyperFields:
        weights = self.hyper(pooled_text(text))  # (B, n_weights)
        mats, start = [], 0
        for o, i in self.shapes:
            mats.append(weights[:, start : start + o * i].view(-1, o, i))
            start += o * i
        return HyperFields(self.grid, mats, self.config.bound, self.decoding)


class HyperFields(GeneratedFields):
    MATRICES = ("w1", "w2", "u1", "u2")  # the generated layers, in the order of HyperINGP.shapes

    def __init__(
        self, grid: HashGridEncoding, mats: list[torch.Tensor], bound: float, decoding: nn.Module | None = None
    ):
        super().__init__(mats[0].shape[0], bound, decoding)
        self.grid, self.mats = grid, mats

    def raw(self, index: int, x_unit: torch.Tensor) -> torch.Tensor:
        h = self.grid((x_unit + 1) / 2)  # the grid takes [0, 1]^3
        w1, w2, u1, u2 = (m[index] for m in self.mats)
        density = torch.relu(h @ w1.t()) @ w2.t()
        rgb = torch.relu(h @ u1.t()) @ u2.t()
        return torch.cat([density, rgb], -1)

    def prompt_parts(self, index: int) -> dict:
        mats = {k: m[index : index + 1] for k, m in zip(self.MATRICES, self.mats)}
        return {"grid": self.grid, "decoding": self.decoding, **mats}

    @classmethod
    def from_parts(cls, parts: dict, bound: float) -> HyperFields:
        return cls(parts["grid"], [parts[k] for k in cls.MATRICES], bound, parts.get("decoding"))
