"""Volume rendering of a density field (Mildenhall et al. 2020; DreamFusion's shading), in plain PyTorch.

For a ray r(t) = o + t d (d unit) through the bound sphere ||x|| <= R (R = field.bound), [t_n, t_f] is the ray's
chord: the roots of ||o + t d||^2 = R^2, t_n clamped at 0. Rays that miss the sphere are never sampled.

Samples. Stratified: [t_n, t_f] is cut into S equal bins and each sample is drawn uniformly in its bin from
``generator`` (bin midpoints when ``generator`` is None, so a render without a generator is deterministic).
Importance (``num_importance`` > 0): a coarse pass without gradients gives weights w_i on the bins; S_f more distances
are drawn from the piecewise-constant pdf p_i = w_i / sum_j w_j by inverse transform of its CDF, merged with the
stratified ones and sorted, and the fine pass renders all S + S_f samples.

Quadrature. Sample i stands for the interval between the midpoints to its neighbours (t_n and t_f at the ends), of
length delta_i (these add up to t_f - t_n; with bin midpoints they are the bins). With tau_i = sigma_i delta_i:
    alpha_i = 1 - exp(-tau_i),   T_i = prod_{j<i} (1 - alpha_j) = exp(-sum_{j<i} tau_j),   w_i = T_i alpha_i,
    opacity = sum_i w_i,   rgb = sum_i w_i c_i + (1 - opacity) c_bg(d),
    depth = sum_i w_i t_i / opacity   (expected distance along the ray, normalised by the weights;
                                       opacity is clamped at 1e-6 and missed rays read 0),
    normal = sum_i w_i n_i            (world frame, not renormalised: its length is about the opacity).
c_i is the sample's colour under the shading model (render/shading.py), computed per sample before compositing.

Empty-space skipping: only samples inside the bound sphere exist at all, and when the field carries an occupancy
grid (``field.occupancy``, fields/occupancy.py) only samples in occupied cells are evaluated; the grid refreshes
itself every few training renders.

Normals n_i = -normalize(grad sigma(x_i)). ``normal_method="auto"`` takes them in closed form from fields that offer
``forward_with_gradient`` (DensityField: same gather as the density, first-order autograd only, about 1.5x an albedo
render); other fields use central finite differences (six density probes per sample), evaluated only for samples
whose detached weight exceeds ``normal_weight_threshold`` (the rest keep n = 0, i.e. ambient light only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..fields.base import NORMAL_METHODS, normals_from_density
from .cameras import Cameras
from .shading import SHADINGS, shade

RENDER_NORMAL_METHODS = ("auto", "analytic") + NORMAL_METHODS


@dataclass
class RenderOutput:
    """Images are (B, H, W, C), channels last. weights and t are per sample (B, H, W, S), zero on missed rays."""

    rgb: torch.Tensor  # (B, H, W, 3), composited over the background
    opacity: torch.Tensor  # (B, H, W, 1)
    depth: torch.Tensor  # (B, H, W, 1)
    normal: torch.Tensor | None  # (B, H, W, 3) world normals, when shading is lit or need_normal
    weights: torch.Tensor  # (B, H, W, S) compositing weights w_i, for regularisers (e.g. distortion, entropy)
    t: torch.Tensor  # (B, H, W, S) sample distances along the rays
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


def stratified_samples(near: torch.Tensor, far: torch.Tensor, n: int, generator: torch.Generator | None = None):
    """(R,), (R,) -> (R, n) distances, one per equal bin: uniform in the bin from ``generator``, else its midpoint."""
    r = near.shape[0]
    if generator is None:
        u = torch.full((r, n), 0.5, device=near.device, dtype=near.dtype)
    else:
        u = torch.rand(r, n, generator=generator, device=generator.device).to(near.device, near.dtype)
    i = torch.arange(n, device=near.device, dtype=near.dtype)
    return near[:, None] + (far - near)[:, None] * (i + u) / n


def interval_edges(t: torch.Tensor, near: torch.Tensor, far: torch.Tensor) -> torch.Tensor:
    """(R, S) sorted samples -> (R, S + 1) edges: t_n, midpoints between neighbours, t_f."""
    mids = 0.5 * (t[:, 1:] + t[:, :-1])
    return torch.cat([near[:, None], mids, far[:, None]], -1)


def sample_pdf(
    edges: torch.Tensor, weights: torch.Tensor, n: int, generator: torch.Generator | None = None, eps: float = 1e-5
) -> torch.Tensor:
    """Inverse-CDF samples of the piecewise-constant pdf proportional to ``weights`` (R, S) on ``edges`` (R, S + 1).

    u is stratified like the coarse samples (midpoints (k + 1/2)/n without a generator). A small eps keeps rays with
    zero weight sampling uniformly. Returns (R, n) distances, sorted, detached.
    """
    w = weights.detach() + eps
    pdf = w / w.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), pdf.cumsum(-1)], -1).clamp(max=1.0)  # (R, S + 1)
    r = weights.shape[0]
    k = torch.arange(n, device=weights.device, dtype=weights.dtype)
    if generator is None:
        u = ((k + 0.5) / n).expand(r, n)
    else:
        u = (k + torch.rand(r, n, generator=generator, device=generator.device).to(weights)) / n
    u = u.contiguous()
    hi = torch.searchsorted(cdf, u, right=True).clamp(1, cdf.shape[-1] - 1)
    lo = hi - 1
    c0, c1 = cdf.gather(-1, lo), cdf.gather(-1, hi)
    e0, e1 = edges.gather(-1, lo), edges.gather(-1, hi)
    span = c1 - c0
    frac = torch.where(span > 0, (u - c0) / span.clamp_min(1e-12), torch.zeros_like(u)).clamp(0, 1)
    return (e0 + frac * (e1 - e0)).detach()


def composite_weights(sigma: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """w_i = exp(-sum_{j<i} sigma_j delta_j) (1 - exp(-sigma_i delta_i)), over the last axis."""
    tau = sigma * delta
    transmittance = torch.exp(-(torch.cumsum(tau, -1) - tau))
    return transmittance * (1 - torch.exp(-tau))


# --- the renderer ----------------------------------------------------------------------------------------------


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


def render(
    field,
    cameras: Cameras,
    height: int,
    width: int,
    background=None,
    shading: str = "albedo",
    light_dir: torch.Tensor | None = None,
    light_positions: torch.Tensor | None = None,
    ambient: float = 0.1,
    num_samples: int = 48,
    num_importance: int = 0,
    generator: torch.Generator | None = None,
    need_normal: bool = False,
    normal_method: str = "auto",
    normal_eps: float = 1e-2,
    normal_weight_threshold: float = 1e-4,
    occupancy=None,
    chunk_rays: int = 65536,
) -> RenderOutput:
    """Render ``field`` (``field(x) -> (sigma, albedo)``, ``field.density``, ``field.bound``) from ``cameras``.

    background: None (white), an RGB triple / grey value, or a module mapping ray directions (B, H, W, 3) to colours.
    shading: "albedo", "lambertian" or "textureless" (render/shading.py). The light is, in order of preference, a
    point light per camera at ``light_positions`` (B, 3) (see shading.sample_light_positions), a directional light
    ``light_dir`` ((3,) or (B, 3), pointing towards the light), or a point light at each camera (a headlight).
    ambient: l_a of DreamFusion's shading; the diffuse light is 1 - ambient (0.1 / 0.9 as threestudio).
    generator: stratified jitter and importance draws; None renders deterministically (bin midpoints).
    need_normal: also return composited world normals for albedo renders (lit renders always do).
    normal_method: "auto" (closed form when the field offers ``forward_with_gradient``, else finite differences),
    "analytic", "finite_difference" (step ``normal_eps``) or "autograd".
    occupancy: None uses ``field.occupancy`` when the field has one (refreshed automatically on renders with grad
    enabled), False disables skipping, or pass an OccupancyGrid.
    chunk_rays: rays per chunk (bounds memory for large renders without gradients).
    """
    if shading not in SHADINGS:
        raise ValueError(f"shading {shading!r} is unknown; use one of {SHADINGS}")
    if normal_method not in RENDER_NORMAL_METHODS:
        raise ValueError(f"normal_method {normal_method!r} is unknown; use one of {RENDER_NORMAL_METHODS}")
    analytic = bool(getattr(field, "supports_analytic_gradient", False))
    if normal_method == "analytic" and not analytic:
        raise ValueError("normal_method 'analytic' needs a field with forward_with_gradient; use 'auto'")
    if normal_method == "auto":
        normal_method = "analytic" if analytic else "finite_difference"
    if height < 1 or width < 1:
        raise ValueError(f"render size is {height}x{width}; use at least 1x1")
    if num_samples < 1 or num_importance < 0:
        raise ValueError(f"num_samples={num_samples}, num_importance={num_importance}; use >= 1 and >= 0 samples")

    origins, dirs = cameras.rays(height, width)  # (B, H, W, 3)
    b = origins.shape[0]
    device, dtype = origins.device, origins.dtype
    lit = shading != "albedo"
    want_normal = lit or need_normal
    n_total = num_samples + num_importance

    occ = _resolve_occupancy(field, occupancy)
    if occ is not None and torch.is_grad_enabled() and hasattr(occ, "maybe_update"):
        occ.maybe_update(field.density)

    # light per camera: either positions (point lights) or directions
    light_pos = light_dir_cam = None
    if lit:
        if light_positions is not None:
            light_pos = _per_camera(light_positions, b, device, dtype, "light_positions")
        elif light_dir is not None:
            light_dir_cam = torch.nn.functional.normalize(_per_camera(light_dir, b, device, dtype, "light_dir"), dim=-1)
        else:
            light_pos = cameras.position.to(device, dtype)

    o = origins.reshape(-1, 3)
    d = dirs.reshape(-1, 3)
    near, far, hit = ray_sphere_intersect(o, d, float(field.bound))
    rays = hit.nonzero().squeeze(1)
    n_rays = o.shape[0]

    outs = {"rgb": [], "opacity": [], "depth": [], "normal": [], "weights": [], "t": []}
    n_eval = 0
    for sel in rays.split(max(1, chunk_rays)):
        cam = torch.div(sel, height * width, rounding_mode="floor")
        res = _render_rays(
            field,
            o[sel],
            d[sel],
            near[sel],
            far[sel],
            cam,
            occ,
            shading,
            want_normal,
            light_pos,
            light_dir_cam,
            ambient,
            num_samples,
            num_importance,
            generator,
            normal_method,
            normal_eps,
            normal_weight_threshold,
        )
        n_eval += res.pop("n_evaluated")
        for k, v in res.items():
            outs[k].append(v)

    def scatter(key: str, channels: int) -> torch.Tensor:
        full = torch.zeros(n_rays, channels, device=device, dtype=dtype)
        if rays.numel():
            full = full.index_copy(0, rays, torch.cat(outs[key]).reshape(-1, channels))
        return full.reshape(b, height, width, channels)

    opacity = scatter("opacity", 1)
    rgb_fg = scatter("rgb", 3)
    bg = _background_colors(background, dirs)
    rgb = rgb_fg + (1 - opacity) * bg
    return RenderOutput(
        rgb=rgb,
        opacity=opacity,
        depth=scatter("depth", 1),
        normal=scatter("normal", 3) if want_normal else None,
        weights=scatter("weights", n_total),
        t=scatter("t", n_total),
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
    sigma_m = field.density(pts.reshape(-1, 3)[idx])
    return torch.zeros(r * s, device=pts.device, dtype=sigma_m.dtype).index_copy(0, idx, sigma_m).reshape(r, s)


def _render_rays(
    field,
    o,
    d,
    near,
    far,
    cam,
    occ,
    shading,
    want_normal,
    light_pos,
    light_dir_cam,
    ambient,
    num_samples,
    num_importance,
    generator,
    normal_method,
    normal_eps,
    normal_weight_threshold,
) -> dict:
    """Render R rays. Only evaluated samples (index list ``idx``) carry colours and normals: their weighted sums go
    straight into per-ray accumulators, since a skipped sample has sigma = 0 and so weight 0."""
    t = stratified_samples(near, far, num_samples, generator)  # (R, S)
    if num_importance > 0:
        with torch.no_grad():
            pts = o[:, None] + t[..., None] * d[:, None]
            mask = occ.query(pts) if occ is not None else None
            edges = interval_edges(t, near, far)
            w = composite_weights(_density_only(field, pts, mask), edges.diff(dim=-1))
            t_fine = sample_pdf(edges, w, num_importance, generator)
        t = torch.sort(torch.cat([t, t_fine], -1), -1).values
    r, s = t.shape
    delta = interval_edges(t, near, far).diff(dim=-1)
    pts = o[:, None] + t[..., None] * d[:, None]  # (R, S, 3)
    mask = occ.query(pts) if occ is not None else None
    idx = _sample_index(mask, r, s, pts.device)  # (M,)
    ray = torch.div(idx, s, rounding_mode="floor")
    x = pts.reshape(-1, 3)[idx]

    analytic = want_normal and normal_method == "analytic"
    if analytic:
        sigma_m, albedo_m, grad_m = field.forward_with_gradient(x)
    else:
        sigma_m, albedo_m = field(x)
    sigma = torch.zeros(r * s, device=pts.device, dtype=sigma_m.dtype).index_copy(0, idx, sigma_m).reshape(r, s)
    weights = composite_weights(sigma, delta)  # (R, S)
    w_m = weights.reshape(-1).index_select(0, idx)[:, None]  # (M, 1)

    def accumulate(values: torch.Tensor) -> torch.Tensor:  # sum_i w_i v_i per ray
        return torch.zeros(r, values.shape[-1], device=pts.device, dtype=values.dtype).index_add(0, ray, w_m * values)

    out = {"weights": weights, "t": t, "n_evaluated": int(idx.numel())}
    normal_m = None
    if analytic:
        normal_m = -torch.nn.functional.normalize(grad_m, dim=-1, eps=1e-12)
    elif want_normal:
        keep = (w_m.detach()[:, 0] > normal_weight_threshold).nonzero().squeeze(1)
        n_sel = normals_from_density(field.density, x[keep], normal_method, normal_eps)
        normal_m = torch.zeros(x.shape[0], 3, device=x.device, dtype=n_sel.dtype).index_copy(0, keep, n_sel)
    if want_normal:
        out["normal"] = accumulate(normal_m)

    if shading == "albedo":
        color_m = albedo_m
    else:
        if light_pos is not None:
            light = torch.nn.functional.normalize(light_pos[cam[ray]] - x, dim=-1)
        else:
            light = light_dir_cam[cam[ray]]
        color_m = shade(shading, albedo_m, normal_m, light, ambient)

    opacity = weights.sum(-1, keepdim=True)
    out["opacity"] = opacity
    out["rgb"] = accumulate(color_m)
    out["depth"] = (weights * t).sum(-1, keepdim=True) / opacity.clamp_min(1e-6)
    return out
