"""A triangle mesh drawn from render.cameras' pinhole cameras: z-buffer rasterization and lit shading, in PyTorch on
the CPU, for contact sheets of the mesh a job exports (no GPU rasterizer, pyrender or embree on these machines;
rendering the field instead takes minutes at 256 px). Same camera model and pixel convention as ``Cameras.rays``.

Projection. A world point p seen by a camera with rotation R = [right, up, back] and position e has camera
coordinates q = R^T (p - e); it lies at depth d = -q_z in front of the camera and at the continuous pixel position
    x = W/2 + f q_x / d,    y = H/2 - f q_y / d,    f = H / (2 tan(fov / 2)),
so pixel (row j, column i) has its centre at (i + 1/2, j + 1/2), as the rays of ``Cameras.rays``.

Rasterization. Each triangle facing the camera is tested at the pixel centres of its bounding box with its edge
functions; a centre inside has screen barycentric coordinates (b_0, b_1, b_2), the perspective-correct ones are
    w_k = (b_k / d_k) / sum_m (b_m / d_m)
and its depth 1 / sum_m (b_m / d_m). The nearest triangle per pixel wins (z-buffer).

Shading (render/shading.py's model, DreamFusion's): c = rho (ambient + (1 - ambient) max(0, n . l)) with n the
interpolated smooth vertex normal and l a key light from above the camera, over a white background; "geometry"
draws rho = grey (the shape alone: what betrays pits and lumps), "texture" rho = the baked texture at the
interpolated UV (or the interpolated vertex colours). Images are drawn at ``supersample`` times the size and
averaged down (anti-aliasing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cameras import Cameras, fov_to_focal
from .shading import lambertian

MESH_SHADINGS = ("geometry", "texture")
GEOMETRY_GREY = 0.8


@dataclass
class Fragments:
    """Per pixel of an (H, W) image: the visible face (-1 for the background) and its perspective-correct
    barycentric weights (H, W, 3)."""

    face: torch.Tensor
    weights: torch.Tensor


def project(vertices: torch.Tensor, cameras: Cameras, k: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel positions (N, 2) as (x, y), depths (N,)) of world points in camera k's size x size image."""
    c2w = cameras.c2w[k]
    q = (vertices - c2w[:3, 3]) @ c2w[:3, :3]
    depth = -q[:, 2]
    f = fov_to_focal(float(cameras.fov[k]), size)
    safe = depth.clamp_min(1e-6)
    xy = torch.stack([0.5 * size + f * q[:, 0] / safe, 0.5 * size - f * q[:, 1] / safe], -1)
    return xy, depth


def _candidates(tri: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(triangle index, pixel column, pixel row) of every pixel centre in each triangle's bounding box."""
    lo = torch.ceil(tri.amin(1) - 0.5).clamp(0, size - 1).long()  # (T, 2)
    hi = torch.floor(tri.amax(1) - 0.5).clamp(-1, size - 1).long()
    extent = (hi - lo + 1).clamp_min(0)  # (T, 2): columns, rows
    count = extent[:, 0] * extent[:, 1]
    index = torch.repeat_interleave(torch.arange(len(tri)), count)
    local = torch.arange(int(count.sum())) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    cols = extent[index, 0].clamp_min(1)
    return index, lo[index, 0] + local % cols, lo[index, 1] + torch.div(local, cols, rounding_mode="floor")


def rasterize(vertices: torch.Tensor, faces: torch.Tensor, cameras: Cameras, k: int, size: int) -> Fragments:
    """The visible face and weights at every pixel of camera k (front faces only: the mesh is closed or seen from
    outside)."""
    xy, depth = project(vertices, cameras, k, size)
    tri, d = xy[faces], depth[faces]  # (M, 3, 2), (M, 3)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]  # screen y points down: a front face has area < 0
    keep = ((area < 0) & (d > 1e-3).all(1)).nonzero().squeeze(1)
    index, px, py = _candidates(tri[keep], size)
    face = keep[index]
    p = torch.stack([px, py], -1).to(tri.dtype) + 0.5
    a, e1f, e2f, area_f = tri[face, 0], e1[face], e2[face], area[face]
    rel = p - a
    b1 = (rel[:, 0] * e2f[:, 1] - rel[:, 1] * e2f[:, 0]) / area_f
    b2 = (e1f[:, 0] * rel[:, 1] - e1f[:, 1] * rel[:, 0]) / area_f
    bary = torch.stack([1 - b1 - b2, b1, b2], -1)
    inside = (bary >= -1e-6).all(1)
    face, bary, pixel = face[inside], bary[inside], (py * size + px)[inside]
    inv = bary / d[face]  # b_k / d_k
    z = 1.0 / inv.sum(1)
    # nearest per pixel: sort by depth, then keep the first occurrence of each pixel (a stable sort by pixel)
    by_depth = torch.argsort(z)
    by_pixel = by_depth[torch.argsort(pixel[by_depth], stable=True)]
    first = torch.ones(len(by_pixel), dtype=torch.bool)
    first[1:] = pixel[by_pixel][1:] != pixel[by_pixel][:-1]
    win = by_pixel[first]
    out_face = torch.full((size * size,), -1, dtype=torch.long)
    out_w = torch.zeros(size * size, 3, dtype=tri.dtype)
    out_face[pixel[win]] = face[win]
    out_w[pixel[win]] = inv[win] * z[win, None]
    return Fragments(out_face.view(size, size), out_w.view(size, size, 3))


def key_light(cameras: Cameras, k: int) -> torch.Tensor:
    """Unit direction towards a light above, left of and behind camera k (a key light)."""
    c2w = cameras.c2w[k]
    right, up, back = c2w[:3, 0], c2w[:3, 1], c2w[:3, 2]
    return torch.nn.functional.normalize(-0.4 * right + 0.6 * up + 0.7 * back, dim=0)


def _albedo(mesh, fragments: Fragments, hit: torch.Tensor, shading: str) -> torch.Tensor:
    """(K, 3) albedo in [0, 1] at the K covered pixels."""
    if shading == "geometry" or (mesh.uvs is None and mesh.vertex_colors is None):
        return torch.full((int(hit.sum()), 3), GEOMETRY_GREY)
    corners = torch.from_numpy(mesh.faces).long()[fragments.face[hit]]  # (K, 3)
    w = fragments.weights[hit][..., None]
    if mesh.uvs is not None:
        from ..mesh.texture import sample_texture

        uv = (torch.from_numpy(mesh.uvs)[corners] * w).sum(1).numpy()
        return torch.from_numpy(sample_texture(mesh.texture, uv)).float() / 255
    return (torch.from_numpy(mesh.vertex_colors).float()[corners] * w).sum(1) / 255


def draw_mesh(mesh, cameras: Cameras, size: int, shading: str = "geometry", supersample: int = 2) -> torch.Tensor:
    """(B, size, size, 3) images in [0, 1] of a mesh.Mesh (module docstring), on white."""
    if shading not in MESH_SHADINGS:
        raise ValueError(f"mesh shading {shading!r} is unknown; use one of {MESH_SHADINGS}")
    from ..mesh.cleanup import smooth_vertex_normals

    vertices = torch.from_numpy(mesh.vertices).float()
    faces = torch.from_numpy(mesh.faces).long()
    normals = torch.from_numpy(mesh.normals if mesh.normals is not None else smooth_vertex_normals(mesh)).float()
    big = size * supersample
    images = []
    for k in range(len(cameras)):
        frags = rasterize(vertices, faces, cameras, k, big)
        hit = frags.face >= 0
        w = frags.weights[hit][..., None]
        n = torch.nn.functional.normalize((normals[faces[frags.face[hit]]] * w).sum(1), dim=-1)
        image = torch.ones(big, big, 3)
        image[hit] = lambertian(_albedo(mesh, frags, hit, shading), n, key_light(cameras, k), ambient=0.25)
        pooled = torch.nn.functional.avg_pool2d(image.permute(2, 0, 1)[None], supersample)
        images.append(pooled[0].permute(1, 2, 0))
    return torch.stack(images)
