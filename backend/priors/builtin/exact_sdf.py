"""Exact signed distances of the toy world's primitives and scenes, for measuring geometry against the truth.

``world.primitive_sdf`` is exact for the sphere, cube, cylinder, torus and capsule. Two are exact only where the
renderer needs them (outside and on the surface; safe for sphere tracing), and stay so there so that renders, and
the prior and scorer trained on them, do not change:

* the cone: the 2D distance to its profile triangle in the (rho, z) half-plane counts the triangle's edge on the axis
  as surface, so inside, near the axis, it gives -rho instead of the distance to the real surface (0 on the axis);
  here the inside distance is to the base and the slanted side only;
* the pyramid and the octahedron: the planes' bound max_i (n_i . x - o_i), exact inside and on the surface but smaller
  than the distance outside near an edge or a vertex.

Geometry metrics need the distance itself and its gradient: here a convex polyhedron's signed distance is

    phi(x) = max_i (n_i . x - o_i)                       inside (x in every half-space),
    phi(x) = min_f dist(x, face f)                        outside,

with each face a triangle (the pyramid's square base is two). A scene's objects are placed as in ``world``
(phi_k(x) = s_k phi_shape((x - c_k) / s_k)) and their union is phi(x) = min_k phi_k(x), exact outside the union and
inside it as long as the objects do not overlap (the world's objects touch at most).
"""

from __future__ import annotations

import functools

import torch

from . import world as W


def _triangle_distance(p: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """Unsigned distance from points p (N, 3) to triangles tri (T, 3, 3): (N, T).

    The nearest point of a triangle is the projection onto its plane when that falls inside (all barycentric
    coordinates >= 0), else the nearest point of one of its three edges.
    """
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]  # (T, 3)
    n = torch.linalg.cross(b - a, c - a)
    n = n / n.norm(dim=-1, keepdim=True)
    q = p[:, None, :] - a  # (N, T, 3)
    height = (q * n).sum(-1)  # signed distance to the plane
    foot = q - height[..., None] * n  # projection, relative to a
    inside = torch.ones_like(height, dtype=torch.bool)
    for u, v in ((a, b), (b, c), (c, a)):  # the foot is on the inner side of every edge
        side = torch.linalg.cross((v - u).expand_as(foot), foot + (a - u), dim=-1)
        inside &= (side * n).sum(-1) >= 0
    edge = None
    for u, v in ((a, b), (b, c), (c, a)):
        e = v - u
        w = p[:, None, :] - u
        k = ((w * e).sum(-1) / (e * e).sum(-1)).clamp(0, 1)
        d = (w - k[..., None] * e).norm(dim=-1)
        edge = d if edge is None else torch.minimum(edge, d)
    return torch.where(inside, height.abs(), edge)


def _convex_polyhedron_sdf(p: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Exact signed distance to the convex solid bounded by ``triangles`` (T, 3, 3), wound counter-clockwise seen
    from outside: inside, max_f (n_f . (x - a_f)) (minus the distance to the nearest face plane); outside, the
    distance to the nearest face."""
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    n = torch.linalg.cross(b - a, c - a)
    n = n / n.norm(dim=-1, keepdim=True)
    plane = ((p[:, None, :] - a) * n).sum(-1).max(-1).values  # (N,)
    outside = _triangle_distance(p, triangles).min(-1).values
    return torch.where(plane > 0, outside, plane)


def polyhedron_triangles(shape: str) -> torch.Tensor:
    """The faces (T, 3, 3) of the pyramid or the octahedron at scale 1, counter-clockwise seen from outside."""
    return torch.tensor(_polyhedron_corners(shape), dtype=torch.float32)


@functools.cache
def _polyhedron_corners(shape: str) -> tuple:
    if shape == "pyramid":
        a, h = W.PYRAMID_HALF, W.PYRAMID_H
        apex = (0.0, 0.0, h)
        base = [(a, a, -h), (-a, a, -h), (-a, -a, -h), (a, -a, -h)]  # counter-clockwise seen from above
        sides = [(base[k], base[(k + 1) % 4], apex) for k in range(4)]
        bottom = [(base[0], base[2], base[1]), (base[0], base[3], base[2])]  # seen from below
        tris = sides + bottom
    elif shape == "octahedron":
        r = W.OCTA_R
        tris = []
        for sx in (1.0, -1.0):
            for sy in (1.0, -1.0):
                for sz in (1.0, -1.0):
                    x, y, z = (sx * r, 0.0, 0.0), (0.0, sy * r, 0.0), (0.0, 0.0, sz * r)
                    # (x, y, z) is counter-clockwise seen from outside when sx * sy * sz > 0
                    tris.append((x, y, z) if sx * sy * sz > 0 else (x, z, y))
    else:
        raise ValueError(f"{shape!r} is not a polyhedron of the toy world; the polyhedra are pyramid, octahedron")
    return tuple(tris)


def _cone_sdf(p: torch.Tensor) -> torch.Tensor:
    """In the (rho, z) half-plane: the distance to the base and slanted side segments, negative inside the profile."""
    rho, z = p[..., :2].norm(dim=-1), p[..., 2]
    (ax, ay), (bx, by), (cx, cy) = W._CONE_PROFILE  # base centre, base rim, apex
    base, _ = W._seg_dist2(rho, z, ax, ay, bx, by)
    side, _ = W._seg_dist2(rho, z, bx, by, cx, cy)
    inside = (z >= ay) & (z <= cy) & (rho <= bx * (cy - z) / (cy - ay))  # under the side, above the base
    d = torch.minimum(base, side).sqrt()
    return torch.where(inside, -d, d)


def exact_primitive_sdf(shape: str, points: torch.Tensor) -> torch.Tensor:
    """phi_shape(x) at scale 1, the exact signed distance for every shape: (N, 3) -> (N,)."""
    if shape == "cone":
        return _cone_sdf(points)
    if shape in ("pyramid", "octahedron"):
        return _convex_polyhedron_sdf(points, polyhedron_triangles(shape).to(points))
    return W.primitive_sdf(shape, points)


def object_sdfs(scene: W.Scene, points: torch.Tensor, band: float | None = None) -> torch.Tensor:
    """Exact signed distance of each of the scene's objects, placed: (N, 3) -> (N, K) for its K objects.

    With ``band``, the exact distance only where the world's own (a bound of it, exact on the surface) is within
    ``band`` of zero, and the world's elsewhere: the same sign everywhere and the same values near the surface, which
    is all marching cubes reads, at a fraction of the cost for the polyhedra."""
    out = []
    for pl in scene.placements():
        centre = torch.tensor(pl.centre, dtype=points.dtype, device=points.device)
        local = (points - centre) / pl.scale
        if band is None:
            out.append(pl.scale * exact_primitive_sdf(pl.shape, local))
            continue
        d = pl.scale * W.primitive_sdf(pl.shape, local)
        near = d.abs() < band
        d[near] = pl.scale * exact_primitive_sdf(pl.shape, local[near])
        out.append(d)
    return torch.stack(out, -1)


def exact_scene_sdf(scene: W.Scene, points: torch.Tensor) -> torch.Tensor:
    """The union's signed distance phi(x) = min_k phi_k(x): (N, 3) -> (N,)."""
    return object_sdfs(scene, points).min(-1).values


def scene_sdf_and_normal(scene: W.Scene, points: torch.Tensor, h: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """(phi (N,), grad phi / |grad phi| (N, 3)) of the union at ``points``, in float64.

    For an exact distance the gradient at x is the outward normal of the true surface at the point nearest x (it
    is constant along the segment between them), which is what a mesh normal at x is compared with. The gradient is
    taken by central differences of step ``h``: the distances are sqrt(...) of squared distances, whose autograd
    gradient is undefined on the surface itself, where phi is linear across it. Where the differences cancel (on a
    medial axis, a set of measure zero) the normal is 0."""
    x = points.detach().double()
    phi = exact_scene_sdf(scene, x)
    steps = h * torch.eye(3, dtype=x.dtype, device=x.device)
    grad = torch.stack([exact_scene_sdf(scene, x + e) - exact_scene_sdf(scene, x - e) for e in steps], -1)
    norm = grad.norm(dim=-1, keepdim=True)
    return phi, torch.where(norm > 0, grad / norm.clamp_min(1e-300), torch.zeros_like(grad))
