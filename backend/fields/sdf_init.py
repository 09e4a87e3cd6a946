"""Start an SDF field from a trained density field: occupancy -> clean-up -> signed distance grid -> fitted SDFField.

1. Occupancy. The density is sampled on a regular grid over the box [-bound, bound]^3. Given the cameras the
   distillation used (``viewpoints``), the solid O is what they see: every voxel but those at least
   ``carve_view_share`` of the cameras see in front of the depth where their rendered opacity reaches
   ``carve_opacity`` (mesh.voxels.carve_seen_space, a voting visual hull), so thin fog that renders
   opaque becomes solid and hollows no camera sees into are filled; the votes never join the ``keep_apart`` parts
   one vote leaves apart, and they double while the cleaned solid has more than ``max_genus_per_part`` handles per
   part (a lattice of edges where the faces are fog). Otherwise O = {density >= level}, thresholded at
   the level ``level`` that ``mesh.extract`` would mesh (its automatic silhouette rule by default).
2. Clean-up on the voxels (mesh/voxels.py, scipy.ndimage):
   - keep the ``keep_components`` largest connected parts (26-connectivity), none under ``min_part_fraction`` of the
     largest, dropping floaters;
   - morphological closing O <- erode(dilate(O, B_r), B_r) with a ball B_r of radius ``close_radius`` (world units):
     it fills pits, cracks and tunnels narrower than about 2 r and leaves every feature wider than that alone (a
     torus's hole stays open when its radius is well above r); with up to ``keep_apart`` parts (the objects a prompt
     puts apart, "X next to Y") each part is closed on its own, so the gap between them stays open;
   - fill enclosed cavities (voids no path from the outside reaches), which no camera sees.
3. Signed distance by the Euclidean distance transform (mesh/voxels.py), with the surface half a voxel between an inside and an
   outside sample:  d = edt(outside) - h/2 outside,  d = -(edt(inside) - h/2) inside  (h = voxel size).
4. Fit. An SDFField is regressed onto the grid's d (trilinear interpolation at random points: half uniform in the
   ball, half within two voxels of the surface) with an L1 loss, plus the eikonal term E[(||grad d|| - 1)^2] at the
   uniform points, and its albedo onto the density field's albedo at near-surface points (MSE), with Adam.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..mesh.voxels import clean_solid, seen_empty_views, signed_distance, solid_of_votes
from .sdf import SDFField, SDFFieldConfig


@dataclass
class SDFInitConfig:
    resolution: int = 96  # grid samples per side over the box [-bound, bound]^3
    level: float | None = None  # density level of the solid; None = mesh.extract's automatic silhouette threshold
    # with the cameras given: the rendered opacity at which a ray meets the solid. After a short density stage thin
    # parts are often a fog that renders at 0.3-0.5 (on one yellow cone's density field, the SDF init's IoU: 0.11 at
    # 1/2, its body carved away to the base ring; 0.54 at 0.2; and after the geometry stage 0.38 at 0.2, a bowl with
    # a handle, against 0.86 at 0.1, a cone; a torus keeps its hole at 0.1: docs/results/surface_stage_cpu.md)
    carve_opacity: float = 0.1
    # a voxel is carved only when at least this share of the cameras sees it empty (mesh.voxels.carve_seen_space's
    # min_views; 1/K of K cameras: any one): pinholes of fog in a short density stage's shells let a few cameras
    # see through, and one vote hollowed such objects out (docs/results/surface_stage_cpu.md)
    carve_view_share: float = 0.08
    # while the cleaned solid has more handles than this per part (genus from its surface's Euler number), the votes
    # needed double (8, 16, 32, 64 of 96 cameras): a density stage whose faces are fog leaves a lattice of edges
    # (the pink octahedron: Euler -36 at 8 votes, 2 at 32); a torus (genus 1) is left alone. None: no cap
    max_genus_per_part: float | None = 1.0
    close_radius: float = 0.06  # world units; 0 turns the closing off
    keep_components: int | None = 1  # largest parts kept; None keeps all
    min_part_fraction: float = 0.03  # and none smaller than this fraction of the largest (floaters)
    # up to this many parts are closed each on its own (the closing joins none of them): the objects of "X next to
    # Y" stand 0.08 apart, and a closing of radius 0.12 over the whole solid made them one part
    keep_apart: int = 1
    fill_cavities: bool = True
    fit_steps: int = 300
    fit_points: int = 8192  # per step, half uniform and half near the surface
    fit_lr: float = 1e-2
    eikonal_weight: float = 0.1
    albedo_weight: float = 1.0
    chunk: int = 65536

    def validate(self) -> SDFInitConfig:
        if self.resolution < 16:
            raise ValueError(f"SDFInitConfig.resolution is {self.resolution}; use 16 or more samples per side (96)")
        if self.close_radius < 0:
            raise ValueError(f"SDFInitConfig.close_radius is {self.close_radius}; use 0 (off) or a radius like 0.06")
        if self.keep_components is not None and self.keep_components < 1:
            raise ValueError(f"SDFInitConfig.keep_components is {self.keep_components}; use None (all) or >= 1")
        if self.keep_apart < 1:
            raise ValueError(
                f"SDFInitConfig.keep_apart is {self.keep_apart}; use 1 (close the solid as a whole) or more"
            )
        if not 0 < self.carve_view_share <= 1:
            raise ValueError(
                f"SDFInitConfig.carve_view_share is {self.carve_view_share}; use a share of the cameras in (0, 1] "
                "like 0.08"
            )
        if self.max_genus_per_part is not None and self.max_genus_per_part < 0:
            raise ValueError(
                f"SDFInitConfig.max_genus_per_part is {self.max_genus_per_part}; use None (no cap) or >= 0 (1: a torus)"
            )
        if not 0 < self.carve_opacity < 1:
            raise ValueError(f"SDFInitConfig.carve_opacity is {self.carve_opacity}; use an opacity in (0, 1) like 0.1")
        if self.fit_steps < 0 or self.fit_points < 2:
            raise ValueError("SDFInitConfig.fit_steps must be >= 0 and fit_points >= 2")
        return self


@dataclass
class SDFGrid:
    """Signed distances on the grid axes[i] = lo + h * arange(n) (the same n and h on all three axes)."""

    values: np.ndarray  # (n, n, n) float32, negative inside
    lo: float  # world coordinate of sample 0 on every axis
    spacing: float  # h

    def sample(self, points: torch.Tensor) -> torch.Tensor:
        """Trilinear interpolation at (N, 3) world points (clamped to the grid), (N,)."""
        n = self.values.shape[0]
        grid = torch.from_numpy(self.values).to(points.device, points.dtype)[None, None]  # (1, 1, X, Y, Z)
        g = (points - self.lo) / (self.spacing * (n - 1)) * 2 - 1  # [-1, 1] per axis
        # grid_sample reads the last coordinate as the first spatial axis (W), so pass (z, y, x) for (X, Y, Z)
        coords = g.flip(-1).clamp(-1, 1)[None, :, None, None, :]
        return torch.nn.functional.grid_sample(grid, coords, mode="bilinear", align_corners=True).reshape(-1)


def occupancy_of_density(density_fn: Callable, bound: float, resolution: int, level: float | None, chunk: int):
    """(occupancy (n, n, n) bool, level used, lo, spacing) of {density >= level} on the box grid."""
    from ..mesh.extract import _infer_device, sample_density_grid, silhouette_threshold
    from ..mesh.types import EmptyFieldError

    axis = np.linspace(-bound, bound, resolution, dtype=np.float64).astype(np.float32)
    spacing = 2.0 * bound / (resolution - 1)
    grid = sample_density_grid(density_fn, [axis] * 3, chunk, _infer_device(density_fn))
    if level is None:
        level, _, depth = silhouette_threshold(grid, [spacing] * 3)
        if level is None:
            raise EmptyFieldError(
                f"The density field has no surface to start the SDF from: no ray is half opaque (largest optical "
                f"depth {depth:.3g}). Run the density stage for more steps."
            )
    occ = grid >= level
    if not occ.any():
        raise EmptyFieldError(f"No density reaches the level {level:.4g}; run the density stage for more steps.")
    return occ, float(level), float(-bound), spacing


def carved_occupancy(
    density_fn: Callable,
    bound: float,
    resolution: int,
    viewpoints: np.ndarray,
    chunk: int,
    opacity: float,
    view_share: float = 1e-9,
    keep_apart: int = 1,
    clean: Callable[[np.ndarray], np.ndarray] | None = None,
    accept: Callable[[np.ndarray], bool] | None = None,
):
    """(occupancy (n, n, n) bool, lo, spacing) of the solid the cameras at ``viewpoints`` see in the density on the
    box grid (mesh.voxels.carve_seen_space), a voxel carved when at least ``view_share`` of the cameras (and at least
    one) see it empty, never joining the ``keep_apart`` largest parts one camera's carving leaves apart, then passed
    through ``clean`` (None: as it is); while ``accept(solid)`` is False the votes needed double. Raises
    EmptyFieldError when no camera sees anything opaque."""
    from ..mesh.extract import _infer_device, sample_density_grid
    from ..mesh.types import EmptyFieldError

    axis = np.linspace(-bound, bound, resolution, dtype=np.float64).astype(np.float32)
    spacing = 2.0 * bound / (resolution - 1)
    grid = sample_density_grid(density_fn, [axis] * 3, chunk, _infer_device(density_fn))
    min_views = max(1, math.ceil(view_share * len(viewpoints) - 1e-9))
    empty_views = seen_empty_views(grid, -bound, spacing, viewpoints, opacity)
    clean = clean or (lambda occ: occ)
    occ = solid_of_votes(empty_views, min_views, keep_apart)
    solid = clean(occ)
    while accept is not None and not accept(solid) and 2 * min_views <= len(viewpoints):
        min_views *= 2
        occ = solid_of_votes(empty_views, min_views, keep_apart)
        solid = clean(occ)
    if occ.all() or not occ.any():
        raise EmptyFieldError(
            "The density field has no surface to start the SDF from: no camera sees a ray reach the SDF init's carve_opacity. Run the "
            "density stage for more steps."
        )
    return solid, float(-bound), spacing


def genus_per_part(solid: np.ndarray, spacing: float) -> float:
    """Handles per part of ``solid`` (the surface of its signed distance: genus g from the Euler number
    chi = 2 parts - 2 g); 0 for an empty solid."""
    from ..mesh.cleanup import marching_cubes_sdf, topology

    if not solid.any():
        return 0.0
    counts = topology(marching_cubes_sdf(signed_distance(solid, spacing), 1.0))
    return (2 * counts.components - counts.euler) / 2 / max(counts.components, 1)


def sdf_grid_from_density(
    density_fn: Callable, bound: float, config: SDFInitConfig | None = None, viewpoints: np.ndarray | None = None
) -> SDFGrid:
    """Steps 1-3 of the module docstring. With ``viewpoints`` (K, 3), the cameras the distillation sees the asset
    from, the solid is what they see (``carved_occupancy``) instead of the density above a level."""
    cfg = (config or SDFInitConfig()).validate()
    h = 2.0 * bound / (cfg.resolution - 1)

    def cleaned(occ: np.ndarray) -> np.ndarray:
        return clean_solid(
            occ, h, cfg.keep_components, cfg.close_radius, cfg.min_part_fraction, cfg.keep_apart, cfg.fill_cavities
        )

    if viewpoints is not None:
        cap = cfg.max_genus_per_part
        solid, lo, _ = carved_occupancy(
            density_fn,
            bound,
            cfg.resolution,
            viewpoints,
            cfg.chunk,
            cfg.carve_opacity,
            cfg.carve_view_share,
            cfg.keep_apart,
            cleaned,
            None if cap is None else lambda solid: genus_per_part(solid, h) <= cap,
        )
    else:
        occ, _, lo, h = occupancy_of_density(density_fn, bound, cfg.resolution, cfg.level, cfg.chunk)
        solid = cleaned(occ)
    return SDFGrid(signed_distance(solid, h), lo, h)


# --- fitting -------------------------------------------------------------------------------------------------------


def uniform_ball(n: int, radius: float, rng: torch.Generator) -> torch.Tensor:
    """n points uniform in the ball of the given radius (direction ~ normalised Gaussian, radius ~ U^(1/3))."""
    v = torch.nn.functional.normalize(torch.randn(n, 3, generator=rng), dim=-1)
    r = radius * torch.rand(n, 1, generator=rng).pow(1.0 / 3.0)
    return v * r


def near_surface_points(grid: SDFGrid, n: int, rng: torch.Generator, band_voxels: float = 2.0) -> torch.Tensor:
    """n points jittered within a voxel around grid samples with |d| < band_voxels * h."""
    idx = np.argwhere(np.abs(grid.values) < band_voxels * grid.spacing)
    if len(idx) == 0:
        raise ValueError("the SDF grid has no samples near its zero level")
    pick = torch.randint(len(idx), (n,), generator=rng)
    base = torch.from_numpy(idx).float()[pick] * grid.spacing + grid.lo
    return base + (torch.rand(n, 3, generator=rng) - 0.5) * grid.spacing


def fit_sdf_field(
    field: SDFField,
    grid: SDFGrid,
    config: SDFInitConfig | None = None,
    albedo_fn: Callable | None = None,
    rng: torch.Generator | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> list[float]:
    """Regress ``field`` onto ``grid`` (and its albedo onto ``albedo_fn``); returns the loss per step."""
    cfg = (config or SDFInitConfig()).validate()
    losses = []
    for loss in fit_sdf_steps(field, grid, cfg, albedo_fn, rng):
        losses.append(loss)
        if progress is not None:
            progress(len(losses), cfg.fit_steps, loss)
    return losses


def fit_sdf_steps(
    field: SDFField,
    grid: SDFGrid,
    config: SDFInitConfig | None = None,
    albedo_fn: Callable | None = None,
    rng: torch.Generator | None = None,
) -> Iterator[float]:
    """``fit_sdf_field`` one Adam step at a time, yielding each step's loss (for a caller that reports progress as
    events between steps, e.g. a texture job fitting the field to the artist's mesh)."""
    cfg = (config or SDFInitConfig()).validate()
    rng = rng if rng is not None else torch.Generator().manual_seed(0)
    device = next(field.parameters()).device
    params = [p for p in field.geometry_parameters() if p.requires_grad]
    if albedo_fn is not None:
        params += field.albedo_parameters()
    opt = torch.optim.Adam(params, lr=cfg.fit_lr, betas=(0.9, 0.99), eps=1e-15)
    half = cfg.fit_points // 2
    for _ in range(cfg.fit_steps):
        uniform = uniform_ball(half, field.bound, rng).to(device)
        near = near_surface_points(grid, cfg.fit_points - half, rng).to(device)
        x = torch.cat([uniform, near])
        d, grad = field.sdf_with_gradient(x)
        loss = (d - grid.sample(x)).abs().mean() + cfg.eikonal_weight * ((grad[:half].norm(dim=-1) - 1) ** 2).mean()
        if albedo_fn is not None:
            with torch.no_grad():
                target = albedo_fn(near)
            loss = loss + cfg.albedo_weight * ((field.albedo(near) - target) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        yield float(loss.detach())


def sdf_field_from_density(
    density_field,
    sdf_config: SDFFieldConfig | None = None,
    init: SDFInitConfig | None = None,
    rng: torch.Generator | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    viewpoints: np.ndarray | None = None,
) -> tuple[SDFField, SDFGrid]:
    """A new SDFField (on the density field's device, same bound) fitted to the density field's cleaned solid
    (``viewpoints``: see sdf_grid_from_density)."""
    init = (init or SDFInitConfig()).validate()
    bound = float(density_field.bound)
    sdf_config = sdf_config or SDFFieldConfig(bound=bound)
    if sdf_config.bound != bound:
        raise ValueError(f"SDFFieldConfig.bound is {sdf_config.bound} but the density field's bound is {bound}")
    device = next(density_field.parameters()).device

    def density(points):
        with torch.no_grad():
            return density_field.density(points.to(device))

    def albedo(points):
        with torch.no_grad():
            return density_field(points.to(device))[1]

    grid = sdf_grid_from_density(density, bound, init, viewpoints)
    field = SDFField(sdf_config, rng=rng).to(device)
    fit_sdf_field(field, grid, init, albedo, rng, progress)
    return field, grid
