"""Signed-distance field rendered as a volume, VolSDF-style (Yariv et al. 2021): hash grid -> small MLP -> d(x).

The geometry is a signed distance d(x) (negative inside, |grad d| = 1 ideally) and the renderer sees an ordinary
volume density through the Laplace CDF (VolSDF Eq. 2-3), so ``render.volume`` works unchanged:

    density(x) = a Psi_beta(-d(x)),   a = 1 / beta,   (VolSDF's sigma(x); sigma is the noise level here)
    Psi_beta(v) = 1/2 exp(v / beta)          (v <= 0)
                = 1 - 1/2 exp(-v / beta)      (v > 0)          the CDF of Laplace(0, beta),

so density = 1/(2 beta) exp(-d / beta) outside and 1/beta (1 - 1/2 exp(d / beta)) inside; the surface d = 0 has
density = 1/(2 beta), and beta -> 0 makes the density a step of height 1/beta at the surface. beta is either a fixed
value the caller anneals (``set_beta``) or learnable (``learn_beta``), always at least ``beta_min``.

Geometry. World points x in the ball ||x|| <= bound map to u = (x / bound + 1) / 2 in [0, 1]^3; with the hash grid
h(u) (Instant-NGP) and the MLP's first output f,

    d(x) = max(f(h(u)) + ||x|| - r_0,  ||x|| - bound),

the sphere bias ||x|| - r_0 (threestudio's ``sdf_bias: sphere``) making the untrained field a ball of radius r_0, and
the max with the bounding sphere making the field empty outside the scene ball, so marching cubes of d over the box
is watertight inside it. The gradient grad_x d is available in closed form (``sdf_with_gradient``: the MLP's input
gradient times the hash grid's Jacobian, ordinary first-order ops), so eikonal and normal losses train the field
without double backward. Normals are n = grad d / ||grad d|| (outward).

Appearance is a second, smaller hash grid and MLP with a sigmoid: the texture stage trains it with the geometry
frozen (``freeze_geometry``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .base import Field
from .hashgrid import HashGridConfig, HashGridEncoding
from .nerf import make_mlp
from .occupancy import OccupancyGrid


def laplace_cdf(v: torch.Tensor, beta) -> torch.Tensor:
    """Psi_beta(v), the CDF of the zero-mean Laplace distribution with scale beta, in a form that never overflows:
    1/2 + 1/2 sign(v) (1 - exp(-|v| / beta))."""
    return 0.5 - 0.5 * torch.sign(v) * torch.expm1(-v.abs() / beta)


def volsdf_density(d: torch.Tensor, beta) -> torch.Tensor:
    """density = (1 / beta) Psi_beta(-d) (VolSDF Eq. 2): 1/(2 beta) on the surface, -> 1/beta deep inside."""
    return laplace_cdf(-d, beta) / beta


def volsdf_density_derivative(d: torch.Tensor, beta) -> torch.Tensor:
    """d density / d d = -(1 / beta) psi_beta(-d) = -exp(-|d| / beta) / (2 beta^2) (psi the Laplace pdf)."""
    return -torch.exp(-d.abs() / beta) / (2 * beta * beta)


def sphere_biased_sdf(raw: torch.Tensor, x: torch.Tensor, sphere_radius: float, bound: float):
    """(d, ||x||, mask where the bounding sphere wins) of d(x) = max(raw + ||x|| - r_0, ||x|| - bound) (module
    docstring): raw (N,) the network's distance output at world points x (N, 3), r_0 = ``sphere_radius``."""
    norm = x.norm(dim=-1)
    d = raw + norm - sphere_radius
    outside = norm - bound
    ball_wins = outside > d
    return torch.where(ball_wins, outside, d), norm, ball_wins


def geometric_anneal(start: float, end: float, fraction: float) -> float:
    """start (end / start)^fraction, fraction clamped to [0, 1]: the surface stage's beta schedule
    beta_k = beta_start (beta_end / beta_start)^(k / (K - 1))."""
    return start * (end / start) ** min(max(fraction, 0.0), 1.0)


@dataclass
class SDFFieldConfig:
    bound: float = 1.0  # the scene is the ball of this radius inside the box [-bound, bound]^3
    grid: HashGridConfig = field(default_factory=HashGridConfig)  # geometry encoding
    albedo_grid: HashGridConfig = field(default_factory=lambda: HashGridConfig(n_levels=6, log2_hashmap_size=14))
    hidden_dim: int = 64
    n_hidden_layers: int = 1
    sphere_radius: float = 0.5  # r_0 of the sphere bias (the untrained field is this ball)
    beta: float = 0.05  # initial Laplace scale (world units); ~ the thickness of the rendered surface
    beta_min: float = 1e-3
    learn_beta: bool = False
    # coarse occupancy grid for empty-space skipping, as DensityField (0 turns it off); threshold on density
    occupancy_resolution: int = 32
    occupancy_threshold: float = 0.1
    occupancy_update_every: int = 16

    def validate(self) -> SDFFieldConfig:
        def bad(name, why):
            raise ValueError(f"SDFFieldConfig.{name} {why}")

        if not self.bound > 0:
            bad("bound", f"is {self.bound}; use a positive scene radius (1.0)")
        if self.hidden_dim < 1 or self.n_hidden_layers < 0:
            bad("hidden_dim", f"/ n_hidden_layers are {self.hidden_dim}/{self.n_hidden_layers}; use e.g. 64 and 1")
        if not 0 < self.sphere_radius < self.bound:
            bad("sphere_radius", f"is {self.sphere_radius}; use a radius inside the bound {self.bound} (0.5)")
        if not self.beta_min > 0 or not self.beta >= self.beta_min:
            bad("beta", f"is {self.beta} (beta_min {self.beta_min}); use beta >= beta_min > 0, e.g. 0.05 and 1e-3")
        if self.occupancy_resolution < 0:
            bad("occupancy_resolution", f"is {self.occupancy_resolution}; use 0 (off) or a grid size like 32")
        return self


def mlp_input_gradient(mlp: nn.Sequential, feats: torch.Tensor, output: int = 0):
    """(raw outputs (N, n_out), d raw[:, output] / d feats (N, F)) of a Linear/ReLU stack, in one pass.

    The input gradient is back-propagated by hand (v <- v W for a Linear, v <- v * [pre > 0] for a ReLU), so it is an
    ordinary differentiable tensor: a loss on it trains the MLP with first-order autograd.
    """
    h, masks = feats, []
    layers = list(mlp)
    for layer in layers:
        if isinstance(layer, nn.ReLU):
            masks.append(h > 0)
            h = torch.relu(h)
        else:
            h = layer(h)
    v = layers[-1].weight[output].expand(feats.shape[0], -1)
    for layer in reversed(layers[:-1]):
        v = v * masks.pop() if isinstance(layer, nn.ReLU) else v @ layer.weight
    return h, v


class SDFField(Field):
    """forward(x) -> (density, albedo) with the VolSDF density; sdf(x) -> d; sdf_with_gradient(x) -> (d, grad d);
    forward_with_gradient(x) -> (density, albedo, grad density) so lit renders get closed-form normals."""

    def __init__(self, config: SDFFieldConfig | None = None, rng: torch.Generator | None = None):
        super().__init__()
        self.config = cfg = (config or SDFFieldConfig()).validate()
        self.bound = float(cfg.bound)
        self.encoding = HashGridEncoding(cfg.grid, rng=rng)
        self.mlp = make_mlp(self.encoding.output_dim, 1, cfg.hidden_dim, cfg.n_hidden_layers, rng)
        self.albedo_encoding = HashGridEncoding(cfg.albedo_grid, rng=rng)
        self.albedo_mlp = make_mlp(self.albedo_encoding.output_dim, 3, cfg.hidden_dim, cfg.n_hidden_layers, rng)
        beta = torch.tensor(float(cfg.beta) - cfg.beta_min)
        if cfg.learn_beta:
            self.beta_offset = nn.Parameter(beta)
        else:
            self.register_buffer("beta_offset", beta)
        self.occupancy = (
            OccupancyGrid(cfg.bound, cfg.occupancy_resolution, cfg.occupancy_threshold, cfg.occupancy_update_every)
            if cfg.occupancy_resolution
            else None
        )

    # --- parameters ----------------------------------------------------------------------------------------------
    @property
    def beta(self) -> torch.Tensor:
        """beta = beta_min + |offset| (a scalar tensor; differentiable when learnable)."""
        return self.config.beta_min + self.beta_offset.abs()

    @torch.no_grad()
    def set_beta(self, value: float) -> None:
        """Anneal beta (values below beta_min are raised to it)."""
        self.beta_offset.fill_(max(float(value), self.config.beta_min) - self.config.beta_min)

    def geometry_parameters(self) -> list[nn.Parameter]:
        params = list(self.encoding.parameters()) + list(self.mlp.parameters())
        return params + ([self.beta_offset] if isinstance(self.beta_offset, nn.Parameter) else [])

    def albedo_parameters(self) -> list[nn.Parameter]:
        return list(self.albedo_encoding.parameters()) + list(self.albedo_mlp.parameters())

    def freeze_geometry(self, frozen: bool = True) -> None:
        """Stop (or restart) gradients to the distance: the texture stage trains only the albedo."""
        for p in self.geometry_parameters():
            p.requires_grad_(not frozen)

    @property
    def supports_analytic_gradient(self) -> bool:
        return self.encoding.supports_jacobian

    # --- distance ------------------------------------------------------------------------------------------------
    def _check(self, x: torch.Tensor):
        if x.ndim != 2 or x.shape[-1] != 3:
            raise ValueError(f"SDFField expects world points (N, 3), got shape {tuple(x.shape)}")

    def _u(self, x: torch.Tensor) -> torch.Tensor:
        return (x / self.bound + 1) * 0.5

    def _clip(self, raw: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(d, ||x||, mask where the bounding sphere wins) for raw = f(h(u))."""
        return sphere_biased_sdf(raw, x, self.config.sphere_radius, self.bound)

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        """d(x), (N,)."""
        self._check(x)
        return self._clip(self.mlp(self.encoding(self._u(x)))[:, 0], x)[0]

    def sdf_with_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(d (N,), grad_x d (N, 3)), the gradient in closed form:
        grad_x d = J_h(u)^T grad_h f / (2 bound) + x / ||x||  (or x / ||x|| where the bounding sphere wins)."""
        self._check(x)
        if not self.supports_analytic_gradient:
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                d = self.sdf(xg)
                (grad,) = torch.autograd.grad(d.sum(), xg, create_graph=torch.is_grad_enabled())
            return d, grad
        feats, jac = self.encoding.forward_with_jacobian(self._u(x))
        raw, df_dh = mlp_input_gradient(self.mlp, feats)
        d, norm, ball_wins = self._clip(raw[:, 0], x)
        radial = x / norm.clamp_min(1e-12)[:, None]
        grad = torch.einsum("nj,njk->nk", df_dh, jac) / (2 * self.bound) + radial
        return d, torch.where(ball_wins[:, None], radial, grad)

    # --- the Field interface -------------------------------------------------------------------------------------
    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return torch.sigmoid(self.albedo_mlp(self.albedo_encoding(self._u(x))))

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return volsdf_density(self.sdf(x), self.beta)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.density(x), self.albedo(x)

    def forward_with_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(density, albedo, grad_x density); grad density = (d density / d d) grad d points inward, so the renderer's
        n = -normalize(grad density) is the outward normalize(grad d)."""
        d, grad_d = self.sdf_with_gradient(x)
        beta = self.beta
        density = volsdf_density(d, beta)
        return density, self.albedo(x), volsdf_density_derivative(d, beta)[:, None] * grad_d

    def normals(self, x: torch.Tensor, method: str = "analytic", eps: float = 1e-2) -> torch.Tensor:
        """n = normalize(grad d), outward; "analytic" (closed form) or the base class's density-gradient methods."""
        if method == "analytic":
            return torch.nn.functional.normalize(self.sdf_with_gradient(x)[1], dim=-1, eps=1e-12)
        g = super().density_gradient(x, method, eps)
        return -torch.nn.functional.normalize(g, dim=-1, eps=1e-12)
