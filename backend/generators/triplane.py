"""Triplane-Transformer (ScaleDreamer App. A.3, LRM-style).

    Q_0 = learned queries, 3 n^2 tokens of width d (one n x n grid per plane)
    Q_{l+1} = Block_l(Q_l, Y):  Q += CrossAttn(LN(Q), W_y Y);  Q += SelfAttn(LN(Q));  Q += MLP(LN(Q))
    P = ConvTranspose2d_{k=2,s=2}(reshape(LN(Q_L)))     three feature planes (C, 2n, 2n): xy, xz, yz
    (density, c) = MLP(P_xy(x, y) + P_xz(x, z) + P_yz(y, z))   bilinear lookups, summed

Y are the token-level text embeddings (B, L, D_text); every layer cross-attends to them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..priors.base import TextEmbedding
from .base import GeneratedFields, make_decoding, small_mlp, zero_distance_row


@dataclass
class TriplaneConfig:
    text_dim: int = 64
    width: int = 64  # d
    heads: int = 4
    layers: int = 2
    tokens_per_side: int = 8  # n: planes come out at 2n x 2n
    plane_channels: int = 16
    decoder_hidden: int = 32
    bound: float = 1.0
    geometry: str = "density"  # or "sdf": the decoder's first output is a signed distance (base.SDFDecoding)

    @classmethod
    def paper(cls) -> TriplaneConfig:
        """ScaleDreamer's released sizes: 12 layers, width 768, 16 heads, 3 x 32^2 queries, 32-channel 64^2 planes."""
        return cls(
            text_dim=1024, width=768, heads=16, layers=12, tokens_per_side=32, plane_channels=32, decoder_hidden=64
        )


class TriplaneBlock(nn.Module):
    """Pre-LN cross-attention -> self-attention -> MLP (the order of ScaleDreamer's released code)."""

    def __init__(self, width: int, heads: int, text_dim: int):
        super().__init__()
        self.norm_cross, self.norm_self, self.norm_mlp = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.cross = nn.MultiheadAttention(width, heads, kdim=text_dim, vdim=text_dim, batch_first=True)
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, q: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        h = self.norm_cross(q)
        q = q + self.cross(h, text, text, need_weights=False)[0]
        h = self.norm_self(q)
        q = q + self.self_attn(h, h, h, need_weights=False)[0]
        return q + self.mlp(self.norm_mlp(q))


class TriplaneTransformer(nn.Module):
    def __init__(self, config: TriplaneConfig | None = None):
        super().__init__()
        self.config = c = config or TriplaneConfig()
        self.queries = nn.Parameter(torch.randn(1, 3 * c.tokens_per_side**2, c.width) * 0.02)
        self.blocks = nn.ModuleList(TriplaneBlock(c.width, c.heads, c.text_dim) for _ in range(c.layers))
        self.norm = nn.LayerNorm(c.width)
        self.upsample = nn.ConvTranspose2d(c.width, c.plane_channels, kernel_size=2, stride=2)
        self.decoder = small_mlp(c.plane_channels, c.decoder_hidden, 4)
        self.decoding = make_decoding(c.geometry, c.bound)
        if c.geometry == "sdf":
            self.reset_distance_head()

    def reset_distance_head(self) -> None:
        """raw_d = 0 everywhere: the SDF generator's field is SDFDecoding's ball (base.zero_distance_row)."""
        zero_distance_row(self.decoder[-1])

    def forward(self, text: TextEmbedding) -> TriplaneFields:
        c, y = self.config, text.tokens
        b, n = y.shape[0], c.tokens_per_side
        q = self.queries.expand(b, -1, -1)
        for block in self.blocks:
            q = block(q, y)
        q = self.norm(q).view(b, 3, n, n, c.width).permute(0, 1, 4, 2, 3).reshape(b * 3, c.width, n, n)
        planes = self.upsample(q).view(b, 3, c.plane_channels, 2 * n, 2 * n)
        return TriplaneFields(planes, self.decoder, c.bound, self.decoding)


class TriplaneFields(GeneratedFields):
    def __init__(self, planes: torch.Tensor, decoder: nn.Module, bound: float, decoding: nn.Module | None = None):
        super().__init__(planes.shape[0], bound, decoding)
        self.planes, self.decoder = planes, decoder

    def raw(self, index: int, x_unit: torch.Tensor) -> torch.Tensor:
        pairs = (x_unit[:, [0, 1]], x_unit[:, [0, 2]], x_unit[:, [1, 2]])  # xy, xz, yz
        grid = torch.stack(pairs).unsqueeze(2)  # (3, N, 1, 2)
        feats = F.grid_sample(self.planes[index], grid, align_corners=False, padding_mode="border")  # (3, C, N, 1)
        return self.decoder(feats.sum(0).squeeze(-1).t())

    def prompt_parts(self, index: int) -> dict:
        return {"planes": self.planes[index : index + 1], "decoder": self.decoder, "decoding": self.decoding}

    @classmethod
    def from_parts(cls, parts: dict, bound: float) -> TriplaneFields:
        return cls(parts["planes"], parts["decoder"], bound, parts.get("decoding"))
