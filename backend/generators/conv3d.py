"""3DConv-Net (ScaleDreamer App. A.3, after CC3D): StyleGAN2 modulated convolutions in 3D.

    w = Mapping([z ; W_y y_pooled])                     y the pooled text embedding; z = 0 (see below)
    V_4 = learned constant (C, 4, 4, 4)
    V_{2r} = LeakyReLU(ModConv3d(Up2(V_r), w) + b_{2r})   b_{2r}: the learned "3D bias" at each resolution
    F = Conv1x1(V_R)                                    feature voxel grid (C_f, R, R, R)
    (density, c) = MLP(trilinear(F, x))

ModConv3d (StyleGAN2): s = A(w) per input channel, w'_{oikkk} = s_i w_{oikkk}, demodulated by
d_o = sqrt(sum_{i,k} w'^2 + 1e-8), applied per sample as one grouped convolution.

The paper draws z ~ N(0, I) (as text-conditioned GANs do, for several samples per prompt). Here z is always the zero
vector, in training and at inference: a job asks for the one asset of its prompt, and nothing here samples z. The
mapping network keeps its z_dim input columns (they see only zeros) so that trained checkpoints keep loading.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..priors.base import TextEmbedding
from .base import GeneratedFields, make_decoding, pooled_text, small_mlp, zero_distance_row


@dataclass
class Conv3DConfig:
    text_dim: int = 64
    z_dim: int = 16
    w_dim: int = 64
    mapping_layers: int = 2
    channels: tuple[int, ...] = (64, 48, 32, 16)  # at 4^3, 8^3, 16^3, 32^3 (paper: up to 128^3)
    feature_dim: int = 16
    decoder_hidden: int = 32
    bound: float = 1.0
    geometry: str = "density"  # or "sdf": the decoder's first output is a signed distance (base.SDFDecoding)

    @classmethod
    def paper(cls) -> Conv3DConfig:
        """ScaleDreamer's released sizes (z 64, w 256, c 1024, 2 mapping layers, 32 features up to 128^3)."""
        return cls(
            text_dim=1024,
            z_dim=64,
            w_dim=256,
            channels=(256, 256, 128, 64, 32, 32),
            feature_dim=32,
            decoder_hidden=64,
            bound=1.0,
        )


class ModulatedConv3d(nn.Module):
    def __init__(self, c_in: int, c_out: int, w_dim: int, kernel: int = 3, demodulate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel, kernel) / (c_in * kernel**3) ** 0.5)
        self.affine = nn.Linear(w_dim, c_in)
        nn.init.ones_(self.affine.bias)  # styles start at 1, as StyleGAN2
        self.demodulate, self.padding = demodulate, kernel // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        b, c_in = x.shape[:2]
        style = self.affine(w)  # (B, C_in)
        weight = self.weight[None] * style[:, None, :, None, None, None]  # (B, C_out, C_in, k, k, k)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4, 5), keepdim=True) + 1e-8)
        c_out = weight.shape[1]
        out = F.conv3d(
            x.reshape(1, b * c_in, *x.shape[2:]),
            weight.reshape(b * c_out, *weight.shape[2:]),
            padding=self.padding,
            groups=b,
        )
        return out.reshape(b, c_out, *out.shape[2:])


class Conv3DNet(nn.Module):
    def __init__(self, config: Conv3DConfig | None = None):
        super().__init__()
        self.config = c = config or Conv3DConfig()
        layers, d = [], c.z_dim + c.w_dim
        for _ in range(c.mapping_layers):
            layers += [nn.Linear(d, c.w_dim), nn.LeakyReLU(0.2)]
            d = c.w_dim
        self.text_proj = nn.Linear(c.text_dim, c.w_dim)
        self.mapping = nn.Sequential(*layers)
        self.const = nn.Parameter(torch.randn(1, c.channels[0], 4, 4, 4))
        self.blocks = nn.ModuleList(ModulatedConv3d(a, b, c.w_dim) for a, b in zip(c.channels[:-1], c.channels[1:]))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.zeros(1, ch, 4 * 2 ** (i + 1), *(4 * 2 ** (i + 1),) * 2))
            for i, ch in enumerate(c.channels[1:])
        )
        self.to_features = nn.Conv3d(c.channels[-1], c.feature_dim, 1)
        self.decoder = small_mlp(c.feature_dim, c.decoder_hidden, 4)
        self.decoding = make_decoding(c.geometry, c.bound)
        if c.geometry == "sdf":
            self.reset_distance_head()

    def reset_distance_head(self) -> None:
        """raw_d = 0 everywhere: the SDF generator's field is SDFDecoding's ball (base.zero_distance_row)."""
        zero_distance_row(self.decoder[-1])

    def forward(self, text: TextEmbedding) -> VoxelFields:
        y = pooled_text(text)
        b = y.shape[0]
        z = torch.zeros(b, self.config.z_dim, device=y.device)  # the paper's latent, fixed at 0 (module docstring)
        w = self.mapping(torch.cat([z, self.text_proj(y)], -1))
        v = self.const.expand(b, -1, -1, -1, -1)
        for block, bias in zip(self.blocks, self.biases):
            v = F.interpolate(v, scale_factor=2, mode="trilinear", align_corners=False)
            v = F.leaky_relu(block(v, w) + bias, 0.2)
        return VoxelFields(self.to_features(v), self.decoder, self.config.bound, self.decoding)


class VoxelFields(GeneratedFields):
    def __init__(self, grid: torch.Tensor, decoder: nn.Module, bound: float, decoding: nn.Module | None = None):
        super().__init__(grid.shape[0], bound, decoding)
        self.grid, self.decoder = grid, decoder

    def raw(self, index: int, x_unit: torch.Tensor) -> torch.Tensor:
        # grid_sample wants (x, y, z) -> (W, H, D) order; our grid's last three axes are (z, y, x).
        coords = x_unit.view(1, -1, 1, 1, 3)
        feats = F.grid_sample(self.grid[index : index + 1], coords, align_corners=False, padding_mode="border")
        return self.decoder(feats.view(self.grid.shape[1], -1).t())

    def prompt_parts(self, index: int) -> dict:
        return {"grid": self.grid[index : index + 1], "decoder": self.decoder, "decoding": self.decoding}

    @classmethod
    def from_parts(cls, parts: dict, bound: float) -> VoxelFields:
        return cls(parts["grid"], parts["decoder"], bound, parts.get("decoding"))
