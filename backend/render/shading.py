"""DreamFusion's shading models (Poole et al. 2022, Sec. 3.1) and its light sampling.

With albedo rho, unit normal n, unit direction l from the point towards the light, ambient light l_a and diffuse
light l_p, DreamFusion shades a point as  c = rho * (l_p * max(0, n . l) + l_a).  We use white lights with
l_a = ambient and l_p = 1 - ambient (threestudio's diffuse-with-point-light material: ambient 0.1, diffuse 0.9), so
a surface facing the light shows exactly its albedo:

    "albedo"       c = rho                                           (unlit; DreamFusion's albedo-only renders)
    "lambertian"   c = rho * (ambient + (1 - ambient) max(0, n . l))
    "textureless"  the same with rho = (1, 1, 1): geometry only, which stops the model from painting shape onto
                   a flat texture.

DreamFusion samples the light around the camera: threestudio's 'dreamfusion' strategy puts it at
    l_pos = normalize(c_pos + N(0, s^2 I)) * U(d_min, d_max)
with s = 1 and (d_min, d_max) = (0.8, 1.5) for cameras at distance 1.0..1.5; our cameras sit at 2.5..3.0, so the
defaults here are those values scaled by ~2.2: s = 2.2, (d_min, d_max) = (1.8, 3.3).
"""

from __future__ import annotations

import torch

from .cameras import Cameras

SHADINGS = ("albedo", "lambertian", "textureless")


def lambertian(
    albedo: torch.Tensor,
    normal: torch.Tensor,
    light_dir: torch.Tensor,
    ambient: float = 0.1,
    diffuse: float | None = None,
) -> torch.Tensor:
    """rho * (ambient + diffuse * max(0, n . l)), diffuse = 1 - ambient unless given. Shapes broadcast (..., 3)."""
    diffuse = 1.0 - ambient if diffuse is None else diffuse
    cos = (normal * light_dir).sum(-1, keepdim=True).clamp_min(0.0)
    return albedo * (ambient + diffuse * cos)


def shade(
    shading: str,
    albedo: torch.Tensor,
    normal: torch.Tensor | None = None,
    light_dir: torch.Tensor | None = None,
    ambient: float = 0.1,
) -> torch.Tensor:
    """Colour of points under one of SHADINGS; ``normal`` and ``light_dir`` (unit, towards the light) for lit modes."""
    if shading not in SHADINGS:
        raise ValueError(f"shading {shading!r} is unknown; use one of {SHADINGS}")
    if shading == "albedo":
        return albedo
    if normal is None or light_dir is None:
        raise ValueError(f"shading {shading!r} needs normals and a light direction")
    if shading == "textureless":
        albedo = torch.ones_like(albedo)
    return lambertian(albedo, normal, light_dir, ambient)


def sample_light_positions(
    cameras: Cameras, rng: torch.Generator, distance_range=(1.8, 3.3), perturb: float = 2.2
) -> torch.Tensor:
    """(B, 3) point-light positions around each camera: normalize(c_pos + perturb * N(0, I)) * U(distance_range)."""
    pos = cameras.position
    b = pos.shape[0]
    noise = torch.randn(b, 3, generator=rng, device=rng.device).to(pos)
    u = torch.rand(b, generator=rng, device=rng.device).to(pos)
    lo, hi = distance_range
    direction = torch.nn.functional.normalize(pos + perturb * noise, dim=-1)
    return direction * (lo + (hi - lo) * u)[:, None]
