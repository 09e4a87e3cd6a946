"""The field interface the renderer, the mesh extractor and the engine code against.

A field lives in the ball of radius ``bound`` around the origin (inside the box [-bound, bound]^3) and maps world
points x (N, 3) to a volume density, written density(x) >= 0 (N,), and an albedo rho(x) in [0, 1]^3 (N, 3). (The
NeRF paper writes the density sigma(x); here sigma is only the noise level sigma_t, see docs/notation.md.)

Normals are the normalised negative density gradient (DreamFusion, Sec. 3.1):
    n = -grad_x density / ||grad_x density||,
either by autograd (exact, needs a second backward pass when used in a loss) or by central finite differences
    d density / d x_k ~ (density(x + eps e_k) - density(x - eps e_k)) / (2 eps),
which costs six extra density evaluations but only first-order autograd (threestudio's default for density fields).
"""

from __future__ import annotations

import torch
from torch import nn

NORMAL_METHODS = ("finite_difference", "autograd")


def density_gradient(density_fn, x: torch.Tensor, method: str = "finite_difference", eps: float = 1e-2) -> torch.Tensor:
    """grad_x density (N, 3) of any ``density_fn(points (N, 3)) -> (N,)``.

    Differentiable with respect to the field's parameters when grad mode is on (autograd then builds the graph of
    the gradient itself, i.e. second derivatives later).
    """
    if method not in NORMAL_METHODS:
        raise ValueError(f"normal method {method!r} is unknown; use one of {NORMAL_METHODS}")
    if method == "autograd":
        keep_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            density = density_fn(xg)
            (grad,) = torch.autograd.grad(density.sum(), xg, create_graph=keep_graph)
        return grad
    if not eps > 0:
        raise ValueError(f"finite-difference eps is {eps}; use a small positive step in world units (1e-2)")
    offsets = torch.eye(3, device=x.device, dtype=x.dtype) * eps
    probes = torch.cat([x[:, None, :] + offsets[None], x[:, None, :] - offsets[None]], 1)  # (N, 6, 3)
    density = density_fn(probes.reshape(-1, 3)).reshape(-1, 2, 3)
    return (density[:, 0] - density[:, 1]) / (2 * eps)


def normals_from_density(density_fn, x: torch.Tensor, method: str = "finite_difference", eps: float = 1e-2):
    """n = -normalize(grad_x density), (N, 3); zero where the gradient vanishes."""
    g = density_gradient(density_fn, x, method=method, eps=eps)
    return -torch.nn.functional.normalize(g, dim=-1, eps=1e-12)


class Field(nn.Module):
    """Subclasses set ``self.bound`` and implement ``forward``; override ``density`` when it can skip the albedo.

    The renderer and the mesh extractor only need ``field(x)``, ``field.density(x)`` and ``field.bound`` (duck typing:
    generators hand over light views that are not Modules); ``occupancy`` (an OccupancyGrid) is optional.
    """

    bound: float = 1.0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, 3) world points -> (density (N,), albedo (N, 3))."""
        raise NotImplementedError

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)[0]

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)[1]

    def density_gradient(self, x: torch.Tensor, method: str = "autograd", eps: float = 1e-2) -> torch.Tensor:
        return density_gradient(self.density, x, method, eps)

    def normals(self, x: torch.Tensor, method: str = "autograd", eps: float = 1e-2) -> torch.Tensor:
        """n = -normalize(grad_x density): "autograd" (exact) or "finite_difference" (central, step eps)."""
        return -torch.nn.functional.normalize(self.density_gradient(x, method, eps), dim=-1, eps=1e-12)
