"""Density activations.

trunc_exp (Instant-NGP / torch-ngp / threestudio): forward exp(x), backward exp(min(x, 15)), so a large
pre-activation cannot blow up the gradient. softplus: log(1 + e^x), threestudio's default for density fields.
"""

from __future__ import annotations

import torch


class _TruncExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        # written with differentiable ops, so second derivatives (analytic normals in a loss) work too
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    return _TruncExp.apply(x)


DENSITY_ACTIVATIONS = {
    "softplus": torch.nn.functional.softplus,
    "trunc_exp": trunc_exp,
    "exp": torch.exp,
    "relu": torch.relu,
}


def density_activation(name: str):
    try:
        return DENSITY_ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"density activation {name!r} is unknown; use one of {sorted(DENSITY_ACTIVATIONS)}") from None


def activation_derivative(name: str, z: torch.Tensor) -> torch.Tensor:
    """act'(z) for the density activations (trunc_exp's clamped derivative), in differentiable ops."""
    if name == "softplus":
        return torch.sigmoid(z)
    if name == "trunc_exp":
        return torch.exp(z.clamp(max=15.0))
    if name == "exp":
        return torch.exp(z)
    if name == "relu":
        return (z > 0).to(z.dtype)
    density_activation(name)  # raises with the list of names
    raise ValueError(f"no derivative for density activation {name!r}")
