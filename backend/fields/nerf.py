"""Density NeRF field: hash grid -> small MLP -> (volume density, albedo rho), DreamFusion / threestudio
'implicit-volume' style.

World points x in the ball ||x|| <= bound are mapped to u = (x / bound + 1) / 2 in [0, 1]^3, encoded by the
multiresolution hash grid h(u) (Instant-NGP), and an MLP gives 4 raw outputs (s, a_1, a_2, a_3):

    density(x) = act(s + b(x))          act = softplus (default) or trunc_exp (NeRF's sigma(x))
    rho(x)     = sigmoid(a)             albedo in [0, 1]^3

b(x) is the density-blob bias that makes the initial field a fuzzy ball at the centre, so the first renders are not
empty (DreamFusion, Sec. 3.1 and App. A.2; threestudio's ``density_bias``). Two shapes, with s_b = blob_density and
r_b = blob_radius (world units):

    "blob_magic3d" (default)  b(x) = s_b (1 - ||x|| / r_b)                 threestudio default for DreamFusion runs
    "blob_dreamfusion"        b(x) = s_b exp(-||x||^2 / (2 r_b^2))          the DreamFusion paper's Gaussian blob

With softplus, s_b = 10 and r_b = 0.5 the centre starts at density ~ 10 (opaque over a few tenths of a unit), the
blob's edge at density ~ 0.7 and the box corner at density ~ 1e-10, i.e. empty.

The field is zero outside the ball ||x|| <= bound (``clip_to_bound``): the renderer only samples inside that ball, so
mesh extraction over the box [-bound, bound]^3 sees exactly what was rendered and trained, no unconstrained corners.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .activations import activation_derivative, density_activation
from .base import Field
from .hashgrid import HashGridConfig, HashGridEncoding
from .occupancy import OccupancyGrid

DENSITY_BIASES = ("blob_magic3d", "blob_dreamfusion", "none")


@dataclass
class DensityFieldConfig:
    bound: float = 1.0  # the scene is the ball of this radius inside the box [-bound, bound]^3
    grid: HashGridConfig = field(default_factory=HashGridConfig)
    hidden_dim: int = 64
    n_hidden_layers: int = 1
    density_activation: str = "softplus"  # or "trunc_exp"
    density_bias: str = "blob_magic3d"  # or "blob_dreamfusion", "none"
    blob_density: float = 10.0  # s_b
    blob_radius: float = 0.5  # r_b, world units
    clip_to_bound: bool = True
    # coarse occupancy grid the renderer uses to skip empty space (0 turns it off); see fields/occupancy.py
    occupancy_resolution: int = 32
    occupancy_threshold: float = 0.1  # density below which a cell counts as empty
    occupancy_update_every: int = 16  # training renders between automatic refreshes

    def validate(self) -> DensityFieldConfig:
        def bad(name, why):
            raise ValueError(f"DensityFieldConfig.{name} {why}")

        if not self.bound > 0:
            bad("bound", f"is {self.bound}; use a positive scene radius (1.0)")
        if self.hidden_dim < 1 or self.n_hidden_layers < 0:
            bad("hidden_dim", f"/ n_hidden_layers are {self.hidden_dim}/{self.n_hidden_layers}; use e.g. 64 and 1")
        density_activation(self.density_activation)
        if self.density_bias not in DENSITY_BIASES:
            bad("density_bias", f"is {self.density_bias!r}; use one of {DENSITY_BIASES}")
        if self.density_bias != "none" and not self.blob_radius > 0:
            bad("blob_radius", f"is {self.blob_radius}; use a positive radius in world units (0.5)")
        if self.occupancy_resolution < 0:
            bad("occupancy_resolution", f"is {self.occupancy_resolution}; use 0 (off) or a grid size like 32")
        return self


def init_linear(layer: nn.Linear, rng: torch.Generator | None) -> nn.Linear:
    """PyTorch's default Linear initialisation (U(-1/sqrt(fan_in), 1/sqrt(fan_in))), drawn from ``generator``."""
    if rng is None:
        return layer
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.copy_((torch.rand(layer.weight.shape, generator=rng) * 2 - 1) * bound)
        layer.bias.copy_((torch.rand(layer.bias.shape, generator=rng) * 2 - 1) * bound)
    return layer


def make_mlp(n_in: int, n_out: int, hidden: int, n_hidden_layers: int, rng=None) -> nn.Sequential:
    """Linear-ReLU stack with ``n_hidden_layers`` hidden layers of width ``hidden`` (0 gives one Linear)."""
    dims = [n_in] + [hidden] * n_hidden_layers + [n_out]
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(init_linear(nn.Linear(dims[i], dims[i + 1]), rng))
        if i < len(dims) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class DensityField(Field):
    """forward(x (N, 3) world) -> (density (N,), albedo (N, 3)); density(x) -> (N,); normals(x) -> (N, 3) unit,
    -normalize(grad_x density), closed form by default ("analytic"), or "autograd" / "finite_difference"."""

    def __init__(self, config: DensityFieldConfig | None = None, rng: torch.Generator | None = None):
        super().__init__()
        self.config = cfg = (config or DensityFieldConfig()).validate()
        self.bound = float(cfg.bound)
        self.encoding = HashGridEncoding(cfg.grid, rng=rng)
        self.mlp = make_mlp(self.encoding.output_dim, 4, cfg.hidden_dim, cfg.n_hidden_layers, rng)
        self._activation = density_activation(cfg.density_activation)
        self.occupancy = (
            OccupancyGrid(cfg.bound, cfg.occupancy_resolution, cfg.occupancy_threshold, cfg.occupancy_update_every)
            if cfg.occupancy_resolution
            else None
        )

    def density_bias(self, x: torch.Tensor) -> torch.Tensor:
        """b(x), the blob added to the raw density before the activation."""
        cfg = self.config
        if cfg.density_bias == "blob_magic3d":
            return cfg.blob_density * (1 - x.norm(dim=-1) / cfg.blob_radius)
        if cfg.density_bias == "blob_dreamfusion":
            return cfg.blob_density * torch.exp(-(x * x).sum(-1) / (2 * cfg.blob_radius**2))
        return x.new_zeros(x.shape[:-1])

    def density_bias_gradient(self, x: torch.Tensor) -> torch.Tensor:
        """grad_x b(x), (N, 3)."""
        cfg = self.config
        if cfg.density_bias == "blob_magic3d":
            return -(cfg.blob_density / cfg.blob_radius) * torch.nn.functional.normalize(x, dim=-1, eps=1e-12)
        if cfg.density_bias == "blob_dreamfusion":
            return self.density_bias(x)[:, None] * (-x / cfg.blob_radius**2)
        return torch.zeros_like(x)

    def _check(self, x: torch.Tensor):
        if x.ndim != 2 or x.shape[-1] != 3:
            raise ValueError(f"DensityField expects world points (N, 3), got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        u = (x / self.bound + 1) * 0.5
        raw = self.mlp(self.encoding(u))
        density = self._activation(raw[:, 0] + self.density_bias(x))
        if self.config.clip_to_bound:
            density = density * ((x * x).sum(-1) <= self.bound**2)
        return density, torch.sigmoid(raw[:, 1:4])

    def density_gradient(self, x: torch.Tensor, method: str = "analytic", eps: float = 1e-2) -> torch.Tensor:
        """grad_x density: "analytic" (closed form, equal to autograd's, first-order graph only), "autograd" or
        "finite_difference"."""
        if method == "analytic":
            if self.supports_analytic_gradient:
                return self.forward_with_gradient(x)[2]
            method = "finite_difference"  # tiny-cuda-nn encodings: no Jacobian, no double backward
        return super().density_gradient(x, method, eps)

    def normals(self, x: torch.Tensor, method: str = "analytic", eps: float = 1e-2) -> torch.Tensor:
        return super().normals(x, method, eps)

    @property
    def supports_analytic_gradient(self) -> bool:
        return self.encoding.supports_jacobian

    def forward_with_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(density, albedo, grad_x density) in one pass, the gradient in closed form (no double backward).

        With q = s(h(u)) + b(x), u = (x / bound + 1) / 2 and density = act(q):
            grad_x density = act'(q) (J_h(u)^T grad_h s / (2 bound) + grad_x b),
        grad_h s is the MLP's input gradient of its density output, back-propagated by hand through the
        Linear/ReLU stack (v <- v W for a Linear, v <- v * [pre > 0] for a ReLU), J_h from
        ``HashGridEncoding.forward_with_jacobian``. Every step is an ordinary differentiable op, so a loss on the
        normals trains the field with first-order autograd.
        """
        self._check(x)
        u = (x / self.bound + 1) * 0.5
        feats, jac = self.encoding.forward_with_jacobian(u)
        h, masks = feats, []
        layers = list(self.mlp)
        for layer in layers:
            if isinstance(layer, nn.ReLU):
                masks.append(h > 0)
                h = torch.relu(h)
            else:
                h = layer(h)
        raw = h
        v = layers[-1].weight[0].expand(x.shape[0], -1)  # d s / d (last hidden)
        for layer in reversed(layers[:-1]):
            if isinstance(layer, nn.ReLU):
                v = v * masks.pop()
            else:
                v = v @ layer.weight
        ds_du = torch.einsum("nj,njk->nk", v, jac)
        q = raw[:, 0] + self.density_bias(x)
        density = self._activation(q)
        grad = activation_derivative(self.config.density_activation, q)[:, None] * (
            ds_du / (2 * self.bound) + self.density_bias_gradient(x)
        )
        if self.config.clip_to_bound:
            inside = (x * x).sum(-1) <= self.bound**2
            density = density * inside
            grad = grad * inside[:, None]
        return density, torch.sigmoid(raw[:, 1:4]), grad
