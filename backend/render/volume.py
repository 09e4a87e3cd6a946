"""Volume rendering of a density field (Mildenhall et al. 2020; DreamFusion's shading), in plain PyTorch.

Symbols (docs/notation.md): t is reserved for the diffusion timestep, so a distance along a ray is ``s`` (code:
``ray_dist``); the field's volume density is written density(x) here (the NeRF paper's sigma, which is reserved for
the noise schedule sigma_t); compositing alpha is ``opacity``.

For a ray r(s) = o + s d (d unit) through the bound sphere ||x|| <= R (R = field.bound), [s_n, s_f] is the ray's
chord: the roots of ||o + s d||^2 = R^2, s_n clamped at 0. Rays that miss the sphere are never sampled.

Samples. Stratified: [s_n, s_f] is cut into S equal bins and each sample is drawn uniformly in its bin from ``rng``
(bin midpoints when ``rng`` is None, so a render without an rng is deterministic). Importance
(``RenderSettings.num_importance`` = S_f > 0): a coarse pass without gradients gives weights on the bins; S_f more
distances are drawn from the piecewise-constant pdf p_i = weight_i / sum_j weight_j by inverse transform of its CDF,
merged with the stratified ones and sorted, and the fine pass renders all S + S_f samples.

Quadrature. Sample i stands for the interval between the midpoints to its neighbours (s_n and s_f at the ends), of
length delta_i (these add up to s_f - s_n; with bin midpoints they are the bins). With the optical depth of the
interval D_i = density_i delta_i:
    opacity_i = 1 - exp(-D_i),   transmittance_i = prod_{j<i} (1 - opacity_j) = exp(-sum_{j<i} D_j),
    weight_i = transmittance_i opacity_i,
    opacity = sum_i weight_i,   rgb = sum_i weight_i c_i + (1 - opacity) c_bg(d),
    depth = sum_i weight_i s_i / opacity   (expected distance along the ray, normalised by the weights;
                                            opacity is clamped at 1e-6 and missed rays read 0),
    normal = sum_i weight_i n_i            (world frame, not renormalised: its length is about the opacity).
c_i is the sample's colour under the shading model (render/shading.py), computed per sample before compositing.

Empty-space skipping: only samples inside the bound sphere exist at all, and when the field carries an occupancy
grid (``field.occupancy``, fields/occupancy.py) only samples in occupied cells are evaluated; the grid refreshes
itself every few training renders.

Normals n_i = -normalize(grad density(x_i)). ``normal_method="auto"`` takes them in closed form from fields that
offer ``forward_with_gradient`` (DensityField: same gather as the density, first-order autograd only, about 1.5x an
albedo render); other fields use central finite differences (six density probes per sample), evaluated only for
samples whose detached weight exceeds ``normal_weight_threshold`` (the rest keep n = 0, i.e. ambient light only).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..fields.base import NORMAL_METHODS, normals_from_density
from .cameras import Cameras
from .shading import SHADINGS, shade

RENDER_NORMAL_METHODS = ("auto", "analytic") + NORMAL_METHODS


@dataclass(frozen=True)
class RenderSettings:
    """How to render, apart from the scene (field, cameras, background, lights) and the random draws (``rng``).

    Attributes:
        shading: "albedo", "lambertian" or "textureless" (render/shading.py).
        num_samples: S, stratified samples per ray.
        num_importance: S_f, extra samples per ray from the coarse pass's weights (0 = none).
        ambient: l_a of DreamFusion's shading; the diffuse light is 1 - ambient (0.1 / 0.9 as threestudio).
        need_normal: also return composited world normals for albedo renders (lit renders always do).
        normal_method: "auto" (closed form when the field offers ``forward_with_gradient``, else finite
            differences), "analytic", "finite_difference" (step ``normal_eps``, world units) or "autograd".
        normal_weight_threshold: finite-difference normals only for samples whose weight exceeds this.
        chunk_rays: rays per chunk (bounds memory for large renders without gradients).
    """

    shading: str = "albedo"
    num_samples: int = 48
    num_importance: int = 0
    ambient: float = 0.1
    need_normal: bool = False
    normal_method: str = "auto"
    normal_eps: float = 1e-2
    normal_weight_threshold: float = 1e-4
    chunk_rays: int = 65536

    def __post_init__(self) -> None:
        if self.shading not in SHADINGS:
            raise ValueError(f"shading {self.shading!r} is unknown; use one of {SHADINGS}")
        if self.normal_method not in RENDER_NORMAL_METHODS:
            raise ValueError(f"normal_method {self.normal_method!r} is unknown; use one of {RENDER_NORMAL_METHODS}")
        if self.num_samples < 1 or self.num_importance < 0:
            raise ValueError(
                f"num_samples={self.num_samples}, num_importance={self.num_importance}; use >= 1 and >= 0 samples"
            )

    @property
    def lit(self) -> bool:
        return self.shading != "albedo"

    def with_overrides(self, **overrides) -> RenderSettings:
        """A copy with some settings replaced; an unknown name is an error that lists the known ones."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"render() got unknown setting(s) {unknown}; RenderSettings has {sorted(known)}")
        return dataclasses.replace(self, **overrides) if overrides else self


@dataclass
class RenderOutput:
    """Images are (B, H, W, C), channels last. weights and ray_dist are per sample (B, H, W, S), zero on missed rays."""

    rgb: torch.Tensor  # (B, H, W, 3), composited over the background
    opacity: torch.Tensor  # (B, H, W, 1)
    depth: torch.Tensor  # (B, H, W, 1)
    normal: torch.Tensor | None  # (B, H, W, 3) world normals, when shading is lit or need_normal
    weights: torch.Tensor  # (B, H, W, S) compositing weights weight_i, for regularisers (e.g. distortion, entropy)
    ray_dist: torch.Tensor  # (B, H, W, S) sample distances s_i along the rays
    n_evaluated: int = 0  # field evaluations of the rendering pass (after skipping)


# --- ray geometry and sampling ---------------------------------------------------------------------------------


def ray_sphere_intersect(origins: torch.Tensor, dirs: torch.Tensor, radius: float):
    """Chord of unit-direction rays through the sphere ||x|| = radius: (near, far, hit), near clamped at 0."""
    b = (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - radius * radius
    disc = b * b - c
    root = disc.clamp_min(0).sqrt()
    near = (-b - root).clamp_min(0)
    far = -b + root
    hit = (disc > 0) & (far > near)
    return near, far, hit


def stratified_samples(near: torch.Tensor, far: torch.Tensor, n: int, rng: torch.Generator | None = None):
    """(R,), (R,) -> (R, n) distances, one per equal bin: uniform in the bin from ``rng``, else its midpoint."""
    r = near.shape[0]
    if rng is None:
        u = torch.full((r, n), 0.5, device=near.device, dtype=near.dtype)
    else:
        u = torch.rand(r, n, generator=rng, device=rng.device).to(near.device, near.dtype)
    i = torch.arange(n, device=near.device, dtype=near.dtype)
    return near[:, None] + (far - near)[:, None] * (i + u) / n


def interval_edges(ray_dist: torch.Tensor, near: torch.Tensor, far: torch.Tensor) -> torch.Tensor:
    """(R, S) sorted sample distances -> (R, S + 1) edges: s_n, midpoints between neighbours, s_f."""
    mids = 0.5 * (ray_dist[:, 1:] + ray_dist[:, :-1])
    return torch.cat([near[:, None], mids, far[:, None]], -1)


def sample_pdf(
    edges: torch.Tensor, weights: torch.Tensor, n: int, rng: torch.Generator | None = None, eps: float = 1e-5
) -> torch.Tensor:
    """Inverse-CDF samples of the piecewise-constant pdf proportional to ``weights`` (R, S) on ``edges`` (R, S + 1).

    u is stratified like the coarse samples (midpoints (k + 1/2)/n without an rng). A small eps keeps rays with
    zero weight sampling uniformly. Returns (R, n) distances, sorted, detached.
    """
    padded = weights.detach() + eps
    pdf = padded / padded.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), pdf.cumsum(-1)], -1).clamp(max=1.0)  # (R, S + 1)
    r = weights.shape[0]
    k = torch.arange(n, device=weights.device, dtype=weights.dtype)
    if rng is None:
        u = ((k + 0.5) / n).expand(r, n)
    else:
        u = (k + torch.rand(r, n, generator=rng, device=rng.device).to(weights)) / n
    u = u.contiguous()
    hi = torch.searchsorted(cdf, u, right=True).clamp(1, cdf.shape[-1] - 1)
    lo = hi - 1
    c0, c1 = cdf.gather(-1, lo), cdf.gather(-1, hi)
    e0, e1 = edges.gather(-1, lo), edges.gather(-1, hi)
    span = c1 - c0
    frac = torch.where(span > 0, (u - c0) / span.clamp_min(1e-12), torch.zeros_like(u)).clamp(0, 1)
    return (e0 + frac * (e1 - e0)).detach()


def composite_weights(density: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """weight_i = exp(-sum_{j<i} D_j) (1 - exp(-D_i)) with D_i = density_i delta_i, over the last axis."""
    optical_depth = density * delta
    transmittance = torch.exp(-(torch.cumsum(optical_depth, -1) - optical_depth))
    return transmittance * (1 - torch.exp(-optical_depth))


# --- the renderer ----------------------------------------------------------------------------------------------


@dataclass
class _Lighting:
    """Per-camera lights of a lit render: point-light positions (B, 3) or directions towards the light (B, 3)."""

    positions: torch.Tensor | None = None
    directions: torch.Tensor | None = None

    def towards_light(self, x: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
        """Unit vectors (M, 3) from points x (M, 3), seen by cameras ``cam`` (M,), towards their light."""
        if self.positions is not None:
            return torch.nn.functional.normalize(self.positions[cam] - x, dim=-1)
        return self.directions[cam]


@dataclass
class _Rays:
    """R rays through the bound sphere: origins, unit directions, chord [near, far] and the camera of each."""

    origins: torch.Tensor
    dirs: torch.Tensor
    near: torch.Tensor
    far: torch.Tensor
    cam: torch.Tensor


def _background_colors(background, dirs: torch.Tensor) -> torch.Tensor:
    if background is None:
        return torch.ones_like(dirs)
    if isinstance(background, torch.nn.Module) or callable(background):
        return background(dirs).to(dirs.dtype)
    color = torch.as_tensor(background, dtype=dirs.dtype, device=dirs.device)
    if color.numel() not in (1, 3):
        raise ValueError(f"background colour has {color.numel()} values; give 1 (grey) or 3 (RGB), or a Background")
    return color.expand_as(dirs) if color.numel() == 3 else color.reshape(1).expand_as(dirs)


def _per_camera(v, b: int, device, dtype, name: str) -> torch.Tensor:
    v = torch.as_tensor(v, dtype=dtype, device=device)
    if v.shape == (3,):
        v = v.expand(b, 3)
    if v.shape != (b, 3):
        raise ValueError(f"{name} has shape {tuple(v.shape)}; give (3,) or one row per camera ({b}, 3)")
    return v


def _resolve_occupancy(field, occupancy):
    if occupancy is False:
        return None
    if occupancy is None or occupancy is True:
        return getattr(field, "occupancy", None)
    return occupancy


def _resolve_normal_method(field, settings: RenderSettings) -> RenderSettings:
    """settings with "auto" replaced by what the field supports; "analytic" on a field without it is an error."""
    analytic = bool(getattr(field, "supports_analytic_gradient", False))
    if settings.normal_method == "analytic" and not analytic:
        raise ValueError("normal_method 'analytic' needs a field with forward_with_gradient; use 'auto'")
    if settings.normal_method == "auto":
        return dataclasses.replace(settings, normal_method="analytic" if analytic else "finite_difference")
    return settings


def _lighting(cameras: Cameras, light_dir, light_positions, b: int, device, dtype) -> _Lighting:
    """A point light per camera at ``light_positions``, else a directional light ``light_dir``, else a headlight."""
    if light_positions is not None:
        return _Lighting(positions=_per_camera(light_positions, b, device, dtype, "light_positions"))
    if light_dir is not None:
        direction = _per_camera(light_dir, b, device, dtype, "light_dir")
        return _Lighting(directions=torch.nn.functional.normalize(direction, dim=-1))
    return _Lighting(positions=cameras.position.to(device, dtype))


def render(
    field,
    cameras: Cameras,
    height: int,
    width: int,
    background=None,
    settings: RenderSettings | None = None,
    *,
    light_dir: torch.Tensor | None = None,
    light_positions: torch.Tensor | None = None,
    rng: torch.Generator | None = None,
    occupancy=None,
    **overrides,
) -> RenderOutput:
    """Render ``field`` (``field(x) -> (density, albedo)``, ``field.density``, ``field.bound``) from ``cameras``.

    background: None (white), an RGB triple / grey value, or a module mapping ray directions (B, H, W, 3) to colours.
    settings: a RenderSettings (default RenderSettings()); keyword ``overrides`` replace single settings
    (``render(field, cams, 64, 64, shading="lambertian", num_samples=96)``).
    Lit shadings use, in order of preference, a point light per camera at ``light_positions`` (B, 3) (see
    shading.sample_light_positions), a directional light ``light_dir`` ((3,) or (B, 3), pointing towards the light),
    or a point light at each camera (a headlight).
    rng: stratified jitter and importance draws; None renders deterministically (bin midpoints).
    occupancy: None uses ``field.occupancy`` when the field has one (refreshed automatically on renders with grad
    enabled), False disables skipping, or pass an OccupancyGrid.
    """
    settings = _resolve_normal_method(field, (settings or RenderSettings()).with_overrides(**overrides))
    if height < 1 or width < 1:
        raise ValueError(f"render size is {height}x{width}; use at least 1x1")
    origins, dirs = cameras.rays(height, width)  # (B, H, W, 3)
    b, device, dtype = origins.shape[0], origins.device, origins.dtype
    occ = _resolve_occupancy(field, occupancy)
    if occ is not None and torch.is_grad_enabled() and hasattr(occ, "maybe_update"):
        occ.maybe_update(field.density)
    lighting = _lighting(cameras, light_dir, light_positions, b, device, dtype) if settings.lit else None

    o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    near, far, hit = ray_sphere_intersect(o, d, float(field.bound))
    rays = hit.nonzero().squeeze(1)
    outs = {"rgb": [], "opacity": [], "depth": [], "normal": [], "weights": [], "ray_dist": []}
    n_eval = 0
    for sel in rays.split(max(1, settings.chunk_rays)):
        cam = torch.div(sel, height * width, rounding_mode="floor")
        chunk = _Rays(o[sel], d[sel], near[sel], far[sel], cam)
        res = _render_rays(field, chunk, occ, settings, lighting, rng)
        n_eval += res.pop("n_evaluated")
        for k, v in res.items():
            outs[k].append(v)

    def scatter(key: str, channels: int) -> torch.Tensor:
        full = torch.zeros(o.shape[0], channels, device=device, dtype=dtype)
        if rays.numel():
            full = full.index_copy(0, rays, torch.cat(outs[key]).reshape(-1, channels))
        return full.reshape(b, height, width, channels)

    opacity = scatter("opacity", 1)
    n_total = settings.num_samples + settings.num_importance
    return RenderOutput(
        rgb=scatter("rgb", 3) + (1 - opacity) * _background_colors(background, dirs),
        opacity=opacity,
        depth=scatter("depth", 1),
        normal=scatter("normal", 3) if settings.lit or settings.need_normal else None,
        weights=scatter("weights", n_total),
        ray_dist=scatter("ray_dist", n_total),
        n_evaluated=n_eval,
    )


def _sample_index(mask: torch.Tensor | None, r: int, s: int, device) -> torch.Tensor:
    """Flat indices (into R * S) of the samples to evaluate: the occupied ones, or all."""
    if mask is None:
        return torch.arange(r * s, device=device)
    return mask.reshape(-1).nonzero().squeeze(1)


def _density_only(field, pts: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    r, s = pts.shape[:2]
    idx = _sample_index(mask, r, s, pts.device)
    density_m = field.density(pts.reshape(-1, 3)[idx])
    return torch.zeros(r * s, device=pts.device, dtype=density_m.dtype).index_copy(0, idx, density_m).reshape(r, s)


def _sample_distances(field, rays: _Rays, occ, settings: RenderSettings, rng) -> torch.Tensor:
    """(R, S + S_f) sorted distances: stratified, plus importance samples from a coarse pass without gradients."""
    ray_dist = stratified_samples(rays.near, rays.far, settings.num_samples, rng)  # (R, S)
    if settings.num_importance > 0:
        with torch.no_grad():
            pts = rays.origins[:, None] + ray_dist[..., None] * rays.dirs[:, None]
            mask = occ.query(pts) if occ is not None else None
            edges = interval_edges(ray_dist, rays.near, rays.far)
            coarse_weights = composite_weights(_density_only(field, pts, mask), edges.diff(dim=-1))
            fine = sample_pdf(edges, coarse_weights, settings.num_importance, rng)
        ray_dist = torch.sort(torch.cat([ray_dist, fine], -1), -1).values
    return ray_dist


def _sample_normals(field, x, weight_m, grad_m, settings: RenderSettings) -> torch.Tensor:
    """n = -normalize(grad density) per evaluated sample: closed form, or finite differences where weight > threshold
    (n = 0 elsewhere)."""
    if settings.normal_method == "analytic":
        return -torch.nn.functional.normalize(grad_m, dim=-1, eps=1e-12)
    keep = (weight_m.detach()[:, 0] > settings.normal_weight_threshold).nonzero().squeeze(1)
    n_sel = normals_from_density(field.density, x[keep], settings.normal_method, settings.normal_eps)
    return torch.zeros(x.shape[0], 3, device=x.device, dtype=n_sel.dtype).index_copy(0, keep, n_sel)


def _render_rays(field, rays: _Rays, occ, settings: RenderSettings, lighting: _Lighting | None, rng) -> dict:
    """Render R rays. Only evaluated samples (index list ``idx``) carry colours and normals: their weighted sums go
    straight into per-ray accumulators, since a skipped sample has density 0 and so weight 0."""
    ray_dist = _sample_distances(field, rays, occ, settings, rng)
    r, s = ray_dist.shape
    delta = interval_edges(ray_dist, rays.near, rays.far).diff(dim=-1)
    pts = rays.origins[:, None] + ray_dist[..., None] * rays.dirs[:, None]  # (R, S, 3)
    mask = occ.query(pts) if occ is not None else None
    idx = _sample_index(mask, r, s, pts.device)  # (M,)
    ray = torch.div(idx, s, rounding_mode="floor")
    x = pts.reshape(-1, 3)[idx]

    want_normal = settings.lit or settings.need_normal
    grad_m = None
    if want_normal and settings.normal_method == "analytic":
        density_m, albedo_m, grad_m = field.forward_with_gradient(x)
    else:
        density_m, albedo_m = field(x)
    density = torch.zeros(r * s, device=pts.device, dtype=density_m.dtype).index_copy(0, idx, density_m).reshape(r, s)
    weights = composite_weights(density, delta)  # (R, S)
    weight_m = weights.reshape(-1).index_select(0, idx)[:, None]  # (M, 1)

    def accumulate(values: torch.Tensor) -> torch.Tensor:  # sum_i weight_i v_i per ray
        return torch.zeros(r, values.shape[-1], device=pts.device, dtype=values.dtype).index_add(
            0, ray, weight_m * values
        )

    out = {"weights": weights, "ray_dist": ray_dist, "n_evaluated": int(idx.numel())}
    normal_m = _sample_normals(field, x, weight_m, grad_m, settings) if want_normal else None
    if want_normal:
        out["normal"] = accumulate(normal_m)
    color_m = albedo_m
    if settings.lit:
        color_m = shade(
            settings.shading, albedo_m, normal_m, lighting.towards_light(x, rays.cam[ray]), settings.ambient
        )
    opacity = weights.sum(-1, keepdim=True)
    out["opacity"] = opacity
    out["rgb"] = accumulate(color_m)
    out["depth"] = (weights * ray_dist).sum(-1, keepdim=True) / opacity.clamp_min(1e-6)
    return out
