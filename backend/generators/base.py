"""Prompt-amortized generators: G(y) maps a text embedding to a 3D field in one forward pass (ScaleDreamer, Sec. 3).

Every architecture returns a ``GeneratedFields`` batch: B prompt-specific fields that the ordinary volume renderer
draws. ``fields[b]`` is a field like ``fields.nerf.DensityField``: ``forward(x) -> (density, albedo)``, ``density(x)``
and ``bound``. The density carries the same blob bias as the per-prompt field (DreamFusion's initialisation), so a
fresh generator starts from a blob and training only has to carve it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..priors.base import TextEmbedding


def pooled_text(text: TextEmbedding) -> torch.Tensor:
    """The global (pooled) text vector; the mean of token states when the encoder has no pooled output."""
    return text.pooled if text.pooled is not None else text.tokens.mean(1)


@dataclass
class DensityDecoding:
    """density = softplus(raw + blob) with blob = blob_density * (1 - ||x|| / blob_radius) (Magic3D's blob);
    albedo = sigmoid(raw_rgb)."""

    blob_density: float = 10.0
    blob_radius: float = 0.5

    def __call__(self, x: torch.Tensor, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        blob = self.blob_density * (1 - x.norm(dim=-1) / self.blob_radius)
        return F.softplus(raw[..., 0] + blob), torch.sigmoid(raw[..., 1:4])


class FieldView:
    """Prompt b of a GeneratedFields batch, seen as an ordinary field by the renderer and mesh extractor."""

    def __init__(self, fields: GeneratedFields, index: int):
        self.fields, self.index, self.bound = fields, index, fields.bound

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fields.query(self.index, x)

    forward = __call__

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.fields.query(self.index, x)[0]

    def parameters(self):  # the renderer may ask for a device
        return iter(())


class GeneratedFields:
    """Base of an architecture's per-batch output: subclasses implement ``raw(index, x_unit) -> (N, 4)``."""

    def __init__(self, batch: int, bound: float, decoding: DensityDecoding):
        self.batch, self.bound, self.decoding = batch, bound, decoding

    def __len__(self) -> int:
        return self.batch

    def __getitem__(self, index: int) -> FieldView:
        if not -self.batch <= index < self.batch:
            raise IndexError(index)
        return FieldView(self, index % self.batch)

    def raw(self, index: int, x_unit: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def query(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World points (N, 3) in [-bound, bound]^3 -> (density (N,), albedo (N, 3))."""
        return self.decoding(x, self.raw(index, x / self.bound))


def small_mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, d_out))
