"""Metrics for text-to-3D assets: ScaleDreamer's R@1 and similarity over surrounding views, a volumetric geometry
score against the toy world's ground-truth SDF, and diversity across seeds.

R@1 and similarity (ScaleDreamer, Sec. 4 / evaluation_amortized.py): for an asset made from prompt y_i, render views
v = 1..V all around it, score every view against every prompt of the evaluated prompt set {y_1..y_P} (a (V, P)
matrix S), then

    R@1(i) = 1/V sum_v [argmax_p S[v, p] == i],        Sim(i) = 1/V sum_v S[v, i],

averaged over views and then over prompts. The papers use CLIP's cosine; here S comes from the toy-world scorer.
Views span several elevations, top-down included: from the side alone a cylinder passes for a cube.

Geometry: volumetric IoU between the asset's occupancy and the ground truth's, after normalising each to its
centroid c and RMS radius r (both rotation invariant) and taking the best rotation R_z(theta) about the vertical axis:

    IoU = max_theta |A(c_A + r_A R_z(theta) u) & B(c_B + r_B u)| / |A(...) | B(...)|   over a grid of u.

Diversity: the mean pairwise distance between different seeds' renders of the same prompt from the same cameras
(the toy analogue of FSD's cross-seed FID): RMS pixel distance, or the distance of scorer features.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..render.cameras import Cameras

# ------------------------------------------------------------------------------------------------------------------
# Views


def evaluation_cameras(
    n_azimuth: int = 8,
    elevations: tuple[float, ...] = (0.0, 20.0, 45.0, 80.0),
    distance: float = 2.75,
    fov: float = 45.0,
    azimuth_offset: float = 0.0,
    device="cpu",
) -> Cameras:
    """Views all around an asset: ``n_azimuth`` evenly spaced azimuths at each elevation (degrees).

    80 degrees is the "top-down" ring (exactly 90 makes the Z-up look-at frame degenerate). Rows are ordered
    elevation-major: row k is elevation k // n_azimuth, azimuth k % n_azimuth.
    """
    if n_azimuth < 1 or not elevations:
        raise ValueError("evaluation_cameras: need n_azimuth >= 1 and at least one elevation")
    if any(not -89.0 <= e <= 89.0 for e in elevations):
        raise ValueError(f"evaluation_cameras: elevations {elevations} must lie within -89..89 degrees")
    az = torch.arange(n_azimuth, dtype=torch.float32) * (360.0 / n_azimuth) + azimuth_offset
    az = (az + 180.0) % 360.0 - 180.0
    el = torch.tensor(elevations, dtype=torch.float32)
    elevation = el.repeat_interleave(n_azimuth)
    azimuth = az.repeat(len(elevations))
    n = elevation.shape[0]
    return Cameras(elevation, azimuth, torch.full((n,), float(distance)), torch.full((n,), float(fov))).to(device)


# ------------------------------------------------------------------------------------------------------------------
# R@1 and similarity


def _as_targets(target, n: int) -> torch.Tensor:
    targets = torch.as_tensor(target, dtype=torch.long)
    return targets.expand(n) if targets.ndim == 0 else targets


def r_at_1(scores: torch.Tensor, target) -> float:
    """Fraction of rows (views) whose best-scoring prompt is ``target``.

    scores: (V, P) similarity of each view to each prompt; target: the true prompt's column (an int) or one per row
    (V,). Ties go to the lowest column (torch.argmax), so a constant score matrix only counts for column 0.
    """
    if scores.ndim != 2:
        raise ValueError(f"r_at_1: scores must be (views, prompts), got shape {tuple(scores.shape)}")
    targets = _as_targets(target, scores.shape[0])
    if ((targets < 0) | (targets >= scores.shape[1])).any():
        raise ValueError(f"r_at_1: target {target} outside the {scores.shape[1]} prompts")
    return (scores.argmax(1) == targets).float().mean().item()


def similarity(scores: torch.Tensor, target) -> float:
    """Mean over rows (views) of the score of the true prompt: ScaleDreamer's Sim."""
    if scores.ndim != 2:
        raise ValueError(f"similarity: scores must be (views, prompts), got shape {tuple(scores.shape)}")
    targets = _as_targets(target, scores.shape[0])
    return scores.gather(1, targets[:, None]).mean().item()


# ------------------------------------------------------------------------------------------------------------------
# Occupancy grids


@dataclass
class Occupancy:
    """A solid as a voxel grid: ``grid`` (R, R, R) float in {0, 1} (or [0, 1]), indexed [x, y, z], sampling the box
    [lo, hi]^3 at cell centres. ``sample(points)`` interpolates it trilinearly (outside the box: empty)."""

    grid: torch.Tensor
    lo: float
    hi: float

    @property
    def resolution(self) -> int:
        return self.grid.shape[0]

    def centres(self) -> torch.Tensor:
        """(R^3, 3) cell centres, in the grid's [x, y, z] order."""
        return _grid_points(self.lo, self.hi, self.resolution)

    def sample(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) world points -> (N,) occupancy in [0, 1]."""
        # Normalised coordinates such that cell centres map to align_corners=False positions.
        u = (points - self.lo) / (self.hi - self.lo) * 2.0 - 1.0
        # grid_sample reads (x, y, z) as (W, H, D): store the volume as [z, y, x].
        vol = self.grid.permute(2, 1, 0)[None, None].float()
        out = F.grid_sample(
            vol, u.view(1, -1, 1, 1, 3).float(), mode="bilinear", padding_mode="zeros", align_corners=False
        )
        return out.view(-1)

    def moments(self) -> tuple[torch.Tensor, float, float, float]:
        """(centroid (3,), RMS radius r, max horizontal radius / r, max |dz| / r) of the occupied cells."""
        pts = self.centres()
        w = self.grid.reshape(-1).float()
        mass = w.sum()
        if mass <= 0:
            raise ValueError("the occupancy grid is empty")
        c = (pts * w[:, None]).sum(0) / mass
        d = pts - c
        r = ((d.pow(2).sum(1) * w).sum() / mass).sqrt().item()
        occ = w > 0.5
        rho = d[occ, :2].norm(dim=1).max().item() if occ.any() else 0.0
        dz = d[occ, 2].abs().max().item() if occ.any() else 0.0
        return c, max(r, 1e-6), rho / max(r, 1e-6), dz / max(r, 1e-6)

    @property
    def volume(self) -> float:
        cell = (self.hi - self.lo) / self.resolution
        return self.grid.float().sum().item() * cell**3


def _grid_points(lo: float, hi: float, res: int) -> torch.Tensor:
    step = (hi - lo) / res
    ax = lo + (torch.arange(res, dtype=torch.float32) + 0.5) * step
    x, y, z = torch.meshgrid(ax, ax, ax, indexing="ij")
    return torch.stack([x, y, z], -1).view(-1, 3)


def occupancy_from_sdf(sdf, lo: float = -1.6, hi: float = 1.6, resolution: int = 64, chunk: int = 65536) -> Occupancy:
    """Occupancy {sdf < 0} of a signed distance function ``sdf((N, 3)) -> (N,)`` on a grid over [lo, hi]^3."""
    pts = _grid_points(lo, hi, resolution)
    with torch.no_grad():
        vals = torch.cat([sdf(pts[i : i + chunk]).reshape(-1).float() for i in range(0, pts.shape[0], chunk)])
    return Occupancy((vals < 0).float().view(resolution, resolution, resolution), lo, hi)


def _parity_inside(tri: torch.Tensor, axis: int, centres_1d: torch.Tensor, jitter: tuple[float, float]) -> torch.Tensor:
    """Inside test by ray parity along ``axis``: cast a ray through every column of the grid, count surface crossings
    above each cell centre; odd = inside. tri: (M, 3, 3). Returns (R, R, R) bool indexed [x, y, z]."""
    res = centres_1d.shape[0]
    others = [a for a in range(3) if a != axis]
    a2 = tri[:, :, others]  # (M, 3, 2) projected triangle
    h = tri[:, :, axis]  # (M, 3) heights along the ray
    step = (centres_1d[1] - centres_1d[0]).item() if res > 1 else 1.0
    u = centres_1d + jitter[0] * step
    v = centres_1d + jitter[1] * step
    counts = torch.zeros(res, res, res + 1)
    p0, p1, p2 = a2[:, 0], a2[:, 1], a2[:, 2]
    e1, e2 = p1 - p0, p2 - p0
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok = det.abs() > 1e-12
    p0, e1, e2, det, h = p0[ok], e1[ok], e2[ok], det[ok], h[ok]
    # Columns each triangle can hit: its bounding box in the projected plane.
    lo_uv = torch.minimum(torch.minimum(p0, p0 + e1), p0 + e2)
    hi_uv = torch.maximum(torch.maximum(p0, p0 + e1), p0 + e2)
    iu0 = torch.searchsorted(u, lo_uv[:, 0].contiguous())
    iu1 = torch.searchsorted(u, hi_uv[:, 0].contiguous(), right=True)
    iv0 = torch.searchsorted(v, lo_uv[:, 1].contiguous())
    iv1 = torch.searchsorted(v, hi_uv[:, 1].contiguous(), right=True)
    nu, nv = (iu1 - iu0).clamp(min=0), (iv1 - iv0).clamp(min=0)
    n_pairs = nu * nv
    total = int(n_pairs.sum())
    if total == 0:
        return torch.zeros(res, res, res, dtype=torch.bool)
    tri_idx = torch.repeat_interleave(torch.arange(n_pairs.shape[0]), n_pairs)
    start = torch.cumsum(n_pairs, 0) - n_pairs
    local = torch.arange(total) - start[tri_idx]
    cu = iu0[tri_idx] + local // nv[tri_idx].clamp(min=1)
    cv = iv0[tri_idx] + local % nv[tri_idx].clamp(min=1)
    pu, pv = u[cu], v[cv]
    q0 = pu - p0[tri_idx, 0]
    q1 = pv - p0[tri_idx, 1]
    d = det[tri_idx]
    wb = (q0 * e2[tri_idx, 1] - q1 * e2[tri_idx, 0]) / d
    wc = (e1[tri_idx, 0] * q1 - e1[tri_idx, 1] * q0) / d
    wa = 1 - wb - wc
    hit = (wa >= 0) & (wb >= 0) & (wc >= 0)
    hh = h[tri_idx]
    zhit = wa * hh[:, 0] + wb * hh[:, 1] + wc * hh[:, 2]
    cu, cv, zhit = cu[hit], cv[hit], zhit[hit]
    k = torch.searchsorted(centres_1d, zhit.contiguous())  # the crossing lies above cells 0..k-1
    flat = counts.view(-1)
    flat.index_add_(0, (cu * res + cv) * (res + 1) + k, torch.ones_like(zhit))
    # crossings above cell j = sum over k > j of counts[..., k]
    above = counts.flip(-1).cumsum(-1).flip(-1)[..., 1:]
    inside = above.remainder(2) > 0.5  # (R_u, R_v, R_axis)
    # back to [x, y, z] order
    perm = {0: (2, 0, 1), 1: (0, 2, 1), 2: (0, 1, 2)}[axis]
    return inside.permute(*perm)


def _surface_cells(tri: torch.Tensor, lo: float, hi: float, resolution: int) -> torch.Tensor:
    """(R, R, R) bool: the cells a triangle passes through, from points on every triangle spaced at most half a cell
    apart (a barycentric grid of k + 1 points a side, k from the longest edge)."""
    cell = (hi - lo) / resolution
    longest = (tri - tri.roll(1, dims=1)).norm(dim=-1).max().item()
    k = max(1, min(16, math.ceil(longest / (0.5 * cell))))
    ij = torch.tensor([(i, j) for i in range(k + 1) for j in range(k + 1 - i)], dtype=torch.float32) / k
    bary = torch.cat([ij, 1 - ij.sum(1, keepdim=True)], 1)  # (P, 3)
    cells = torch.zeros(resolution**3, dtype=torch.bool)
    for chunk in tri.split(max(1, 2_000_000 // len(bary))):
        pts = torch.einsum("pk,mkd->mpd", bary, chunk).reshape(-1, 3)
        idx = ((pts - lo) / cell).floor().long().clamp(0, resolution - 1)
        cells[(idx[:, 0] * resolution + idx[:, 1]) * resolution + idx[:, 2]] = True
    return cells.view(resolution, resolution, resolution)


def occupancy_from_mesh(
    vertices, faces, resolution: int = 64, lo: float | None = None, hi: float | None = None
) -> Occupancy:
    """Voxelise a triangle mesh as the solid its outer surface encloses.

    A cell is inside when the ray-parity test says so along at least two of the three axes (a majority vote that
    forgives a small hole or a ray grazing an edge), or when it lies in a cavity of the surface's own cells (what
    scipy's binary_fill_holes fills): a distilled field often has an inner shell as well as the outer one, which
    parity alone counts as a hollow, so a solid octahedron scored IoU 0.07. The box defaults to the mesh's bounding
    cube padded by 10 %."""
    from scipy.ndimage import binary_fill_holes

    v = torch.as_tensor(vertices, dtype=torch.float32)
    f = torch.as_tensor(faces, dtype=torch.long)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(
            f"occupancy_from_mesh: need vertices (N, 3) and faces (M, 3), got {tuple(v.shape)}, {tuple(f.shape)}"
        )
    if f.shape[0] == 0:
        raise ValueError("occupancy_from_mesh: the mesh has no faces")
    if lo is None or hi is None:
        vmin, vmax = v.min().item(), v.max().item()
        pad = 0.1 * (vmax - vmin) + 1e-3
        lo, hi = vmin - pad, vmax + pad
    tri = v[f]  # (M, 3, 3)
    ax = lo + (torch.arange(resolution, dtype=torch.float32) + 0.5) * (hi - lo) / resolution
    votes = torch.zeros(resolution, resolution, resolution)
    for axis, jit in zip(range(3), [(0.123, 0.317), (0.271, 0.089), (0.197, 0.413)]):
        votes += _parity_inside(tri, axis, ax, jit).float()
    surface = _surface_cells(tri, lo, hi, resolution)
    cavity = torch.from_numpy(binary_fill_holes(surface.numpy())) & ~surface
    return Occupancy(((votes >= 2) | cavity).float(), lo, hi)


def _rotation_z(theta: float) -> torch.Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Alignment:
    """How a prediction was laid onto the truth for the IoU: a predicted point x corresponds to the true point

        x' = c_truth + r_truth R_z(theta)^T (x - c_pred) / r_pred

    (centroids c, RMS radii r, the best rotation theta about Z). ``iou`` is the volumetric IoU at that pose."""

    iou: float
    theta: float
    pred_centre: torch.Tensor
    pred_radius: float
    truth_centre: torch.Tensor
    truth_radius: float

    def to_truth(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) predicted points in the truth's frame."""
        rot = _rotation_z(self.theta).to(points)
        u = (points - self.pred_centre.to(points)) / self.pred_radius
        return self.truth_centre.to(points) + self.truth_radius * (u @ rot)


def align_occupancy(pred: Occupancy, truth: Occupancy, n_angles: int = 36, resolution: int = 48) -> Alignment:
    """Normalise centroid and RMS radius, and find the rotation about Z that maximises the volumetric IoU.

    Raises ValueError when the prediction is empty. Symmetric in its arguments up to the rotation search grid.
    """
    if pred.grid.sum() <= 0:
        raise ValueError("the predicted occupancy is empty: nothing to align")
    cp, rp, rho_p, dz_p = pred.moments()
    ct, rt, rho_t, dz_t = truth.moments()
    half = 1.05 * max(rho_p, rho_t, dz_p, dz_t) + 2.0 / resolution
    # an offset of a fraction of a cell keeps sample points off faces that align with either voxel grid
    u = _grid_points(-half, half, resolution) + torch.tensor([0.31, 0.23, 0.37]) * (2 * half / resolution)
    b = truth.sample(ct + rt * u) >= 0.5

    def iou_at(theta: float) -> float:
        a = pred.sample(cp + rp * (u @ _rotation_z(theta).T)) >= 0.5
        union = (a | b).sum().item()
        return (a & b).sum().item() / union if union else 0.0

    # a coarse search over the full turn, then a finer one around the best angle
    step = 2 * math.pi / n_angles
    coarse_theta, best = max(((k * step, iou_at(k * step)) for k in range(n_angles)), key=lambda p: p[1])
    best_theta = coarse_theta
    for j in range(-4, 5):
        if j:
            value = iou_at(coarse_theta + j * step / 8)
            if value > best:
                best, best_theta = value, coarse_theta + j * step / 8
    return Alignment(best, best_theta, cp, rp, ct, rt)


def geometry_iou(pred: Occupancy, truth: Occupancy, n_angles: int = 36, resolution: int = 48) -> float:
    """Volumetric IoU after normalising centroid and RMS radius, maximised over ``n_angles`` rotations about Z.

    Returns 0 when the prediction is empty. Symmetric in its arguments up to the rotation search grid.
    """
    if pred.grid.sum() <= 0:
        return 0.0
    return align_occupancy(pred, truth, n_angles, resolution).iou


# ------------------------------------------------------------------------------------------------------------------
# Diversity across seeds


def pairwise_diversity(x: torch.Tensor) -> float:
    """Mean pairwise distance between seeds. x: (S, V, ...) renders (or features) of one prompt, same V cameras per
    seed. Distance between seeds s, s': the RMS difference over every element, i.e. sqrt(mean (x_s - x_s')^2).
    NaN with fewer than two seeds."""
    if x.shape[0] < 2:
        return float("nan")
    flat = x.reshape(x.shape[0], -1).float()
    d = [((flat[i] - flat[j]).pow(2).mean().sqrt()).item() for i, j in itertools.combinations(range(flat.shape[0]), 2)]
    return sum(d) / len(d)
