"""UV unwrapping (xatlas) and albedo texture baking.

Conventions (the same as ``Mesh``): UV origin at the bottom-left of the image, texture row 0 at the top. Texel
(row r, column c) of a K x K texture (K = ``texture_size``) has its centre at

    u = (c + 1/2) / K,        v = 1 - (r + 1/2) / K,

so in "pixel coordinates" p = (u K - 1/2, (1 - v) K - 1/2) texel centres are the integer points (c, r).

Baking. Each triangle (a, b, c) is rasterised in pixel coordinates: a texel centre p is inside when its barycentric
coordinates

    w_b = ((p - a) x (c - a)) / ((b - a) x (c - a)),   w_c = ((b - a) x (p - a)) / ((b - a) x (c - a)),
    w_a = 1 - w_b - w_c

are all >= 0 (x is the 2D cross product). The texel's 3D point is w_a A + w_b B + w_c C with A, B, C the triangle's
world positions, and its colour is albedo_fn there. Seams are then padded: ``padding`` times, every empty texel with
at least one filled 8-neighbour takes the mean of those neighbours, so bilinear lookups and mipmaps near chart borders
do not bleed the background in.

A mesh that brings its own UV layout (an artist's object: one (u, v) per triangle corner) is baked into it as it is
(``bake_corner_uvs``): no unwrap, and the vertices are split only along the layout's seams (``split_corner_uvs``).

xatlas is slow on big, smooth meshes (a 100 k-face marching-cubes mesh took minutes with its default chart options;
limiting a chart's area to 1/256 of the mesh area brings that to seconds) and it has open segmentation-fault bugs on
some inputs (jpcy/xatlas#151, microsoft/TRELLIS#329). So by default it runs in a child Python process: a crash
becomes a ``TextureBakeError`` that says to use vertex colours (texture_size=0), not a dead worker. The child is
long-lived (mesh.unwrap_worker: one per process, restarted after a crash), so a bake does not pay its start.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from .extract import _infer_device, albedo_to_uint8, evaluate_points
from .types import Mesh
from .unwrap_worker import WORKER_SCRIPT, MultipleAtlases, UnwrapChildDied
from .unwrap_worker import worker as unwrap_worker


class TextureBakeError(RuntimeError):
    """UV unwrapping or baking failed; the message says what to change (usually: texture_size=0, vertex colours)."""


XATLAS_MISSING = (
    "Texture baking needs the 'xatlas' package for UV unwrapping, and it is not installed. "
    "Run `pip install xatlas`, or ask for vertex colours only (texture_size=0)."
)


@dataclass(frozen=True)
class UnwrapConfig:
    """xatlas options.

    Attributes:
        max_chart_area_fraction: a chart's area is at most this fraction of the mesh's surface area (xatlas
            ChartOptions.max_chart_area); small charts keep xatlas fast on dense marching-cubes meshes. 0 = no limit.
        max_iterations: xatlas chart growing/seeding iterations (ChartOptions.max_iterations; more = better charts,
            slower).
        atlas_padding: texels between charts asked of the packer (PackOptions.padding).
        isolate: run xatlas in a child process so that its crashes cannot take this process down.
    """

    max_chart_area_fraction: float = 1.0 / 256.0
    max_iterations: int = 1
    atlas_padding: int = 2
    isolate: bool = True


class BakedTexture(NamedTuple):
    uvs: np.ndarray  # (N', 2) float32, origin bottom-left
    vertices: np.ndarray  # (N', 3) float32, the input vertices split along UV seams
    faces: np.ndarray  # (M, 3) int32 into the split vertices
    texture: np.ndarray  # (size, size, 3) uint8, row 0 at the top


# The child process (mesh.unwrap_worker): long-lived, one unwrap per request on its stdin, answered on its stdout.
# Exit code 3 = xatlas missing. Only numpy and xatlas are imported (fast start).
_CHILD = WORKER_SCRIPT


def xatlas_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("xatlas") is not None


def unwrap_uv(
    vertices: np.ndarray, faces: np.ndarray, size: int, config: UnwrapConfig = UnwrapConfig()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xatlas unwrap. Returns (vmapping (N',) index of each new vertex in ``vertices``, faces' (M, 3) int32 into the
    new vertices, uvs (N', 2) float32 in [0, 1])."""
    if not xatlas_available():
        raise ImportError(XATLAS_MISSING)
    positions = np.ascontiguousarray(vertices, np.float32)
    indices = np.ascontiguousarray(faces, np.uint32)
    a, b, c = (positions[indices[:, k]].astype(np.float64) for k in range(3))
    total_area = 0.5 * float(np.linalg.norm(np.cross(b - a, c - a), axis=1).sum())
    opts = dict(
        max_iterations=np.int64(config.max_iterations),
        max_chart_area=np.float64(config.max_chart_area_fraction * total_area),
        resolution=np.int64(size),
        padding=np.int64(config.atlas_padding),
    )
    if config.isolate:
        vmapping, new_faces, uvs = _unwrap_in_child(positions, indices, opts)
    else:
        vmapping, new_faces, uvs = _unwrap_here(positions, indices, opts)
    return vmapping.astype(np.int64), new_faces.astype(np.int32), uvs.astype(np.float32)


def _unwrap_here(positions, indices, opts):
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(positions, indices)
    co = xatlas.ChartOptions()
    co.max_iterations = int(opts["max_iterations"])
    if float(opts["max_chart_area"]) > 0:
        co.max_chart_area = float(opts["max_chart_area"])
    po = xatlas.PackOptions()
    po.resolution = int(opts["resolution"])
    po.padding = int(opts["padding"])
    po.bilinear = True
    atlas.generate(co, po)
    if atlas.atlas_count != 1:
        raise TextureBakeError(f"xatlas packed the charts into {atlas.atlas_count} atlases; use a larger texture_size")
    return atlas[0]


def _unwrap_in_child(positions, indices, opts):
    try:
        return unwrap_worker(_CHILD).unwrap(positions, indices, opts)
    except MultipleAtlases:
        raise TextureBakeError("xatlas packed the charts into several atlases; use a larger texture_size") from None
    except UnwrapChildDied as died:
        if died.returncode == 3:
            raise ImportError(XATLAS_MISSING) from None
        how = (
            f"was killed by {signal.Signals(-died.returncode).name}"
            if died.returncode < 0 and -died.returncode in signal.valid_signals()
            else f"exited with code {died.returncode}"
        )
        raise TextureBakeError(
            f"UV unwrapping with xatlas {how} on this mesh ({len(positions)} vertices, {len(indices)} faces); "
            f"xatlas has known crashes on some meshes. Export with vertex colours instead (texture_size=0), "
            f"or change mesh_resolution. {died.stderr}"
        ) from None


def rasterize_uv(uvs: np.ndarray, faces: np.ndarray, size: int, batch: int = 1 << 22):
    """Which triangle covers each texel centre, and where.

    Returns (texel_index (K,) flat row-major indices into a size x size image, face_index (K,), bary (K, 3) float64
    barycentric weights of the face's corners). A texel inside several triangles (shared edges) appears once per
    triangle; later entries win when written in order.
    """
    px = np.empty((len(uvs), 2), np.float64)
    px[:, 0] = uvs[:, 0].astype(np.float64) * size - 0.5
    px[:, 1] = (1.0 - uvs[:, 1].astype(np.float64)) * size - 0.5
    tri = px[faces]  # (M, 3, 2)
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    den = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    x0 = np.clip(np.ceil(tri[:, :, 0].min(1)), 0, size - 1).astype(np.int64)
    x1 = np.clip(np.floor(tri[:, :, 0].max(1)), 0, size - 1).astype(np.int64)
    y0 = np.clip(np.ceil(tri[:, :, 1].min(1)), 0, size - 1).astype(np.int64)
    y1 = np.clip(np.floor(tri[:, :, 1].max(1)), 0, size - 1).astype(np.int64)
    nx = np.maximum(x1 - x0 + 1, 0)
    ny = np.maximum(y1 - y0 + 1, 0)
    nx[np.abs(den) < 1e-12] = 0  # degenerate in UV: covers no texel centre
    count = nx * ny
    texels, face_ids, barys = [], [], []
    ends = np.cumsum(count)
    start_face = 0
    while start_face < len(faces):
        # take faces until about `batch` candidate texels
        base = ends[start_face - 1] if start_face else 0
        stop = int(np.searchsorted(ends, base + batch, side="right"))
        stop = max(stop, start_face + 1)
        fid = np.arange(start_face, stop)
        cnt = count[fid]
        f = np.repeat(fid, cnt)
        if len(f):
            local = np.arange(len(f)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            col = x0[f] + local % nx[f]
            row = y0[f] + local // nx[f]
            pa, pb, pc = a[f], b[f], c[f]
            dx, dy = col - pa[:, 0], row - pa[:, 1]
            wb = (dx * (pc[:, 1] - pa[:, 1]) - dy * (pc[:, 0] - pa[:, 0])) / den[f]
            wc = ((pb[:, 0] - pa[:, 0]) * dy - (pb[:, 1] - pa[:, 1]) * dx) / den[f]
            wa = 1.0 - wb - wc
            eps = -1e-9
            inside = (wa >= eps) & (wb >= eps) & (wc >= eps)
            texels.append((row * size + col)[inside])
            face_ids.append(f[inside])
            barys.append(np.clip(np.stack([wa, wb, wc], axis=1)[inside], 0.0, 1.0))
        start_face = stop
    if not texels:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3))
    return np.concatenate(texels), np.concatenate(face_ids), np.concatenate(barys)


def dilate(image: np.ndarray, filled: np.ndarray, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Grow the filled region of ``image`` (H, W, C) by ``iterations`` texels: each pass gives every empty texel with
    a filled 8-neighbour the mean of its filled 8-neighbours (all from the previous pass). Only the ring of texels
    about to grow is computed, gathered by flat index from a copy padded with one empty texel, in float32 (the
    texture is 8-bit in the end)."""
    from scipy.ndimage import binary_dilation

    h, w = filled.shape
    c = image.shape[2]
    H, W = h + 2, w + 2
    padded = np.zeros((H, W, c), np.float32)
    padded[1:-1, 1:-1] = image
    grown = np.zeros((H, W), bool)
    grown[1:-1, 1:-1] = filled
    inside = np.zeros((H, W), bool)
    inside[1:-1, 1:-1] = True
    flat, flat_filled = padded.reshape(-1, c), grown.reshape(-1)
    neighbours = np.array([-W - 1, -W, -W + 1, -1, 1, W - 1, W, W + 1])
    for _ in range(iterations):
        ring = np.flatnonzero((binary_dilation(grown, np.ones((3, 3), bool)) & ~grown & inside).reshape(-1))
        if len(ring) == 0:
            break
        around = ring[:, None] + neighbours  # (K, 8) flat indices, inside the padded image
        weight = flat_filled[around].astype(np.float32)
        flat[ring] = np.einsum("kn,knc->kc", weight, flat[around]) / weight.sum(1, keepdims=True)
        flat_filled[ring] = True
    return padded[1:-1, 1:-1].copy(), grown[1:-1, 1:-1].copy()


def bake_texture(
    vertices: np.ndarray | Mesh,
    faces: np.ndarray | Callable[[torch.Tensor], torch.Tensor],
    albedo_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    size: int = 512,
    padding: int = 4,
    chunk: int = 65536,
    device: torch.device | str | None = None,
    unwrap: UnwrapConfig = UnwrapConfig(),
    background: tuple[int, int, int] | None = None,
) -> BakedTexture | Mesh:
    """Unwrap (xatlas), rasterise in UV space, evaluate ``albedo_fn`` at the texels' 3D points, pad the seams.

    Returns BakedTexture(uvs, vertices', faces', texture): the mesh split along UV seams with per-vertex UVs (origin
    bottom-left) and a (size, size, 3) uint8 texture (row 0 at the top). Texels that no chart reaches, even after
    padding, get ``background`` (default: the mean baked colour, so mipmaps do not darken chart borders).

    Also accepts ``bake_texture(mesh, albedo_fn, size=...)`` with a ``Mesh`` and then returns a textured ``Mesh``
    (the same as ``bake_mesh``).
    """
    if isinstance(vertices, Mesh):
        if albedo_fn is not None or not callable(faces):
            raise TypeError("call bake_texture(mesh, albedo_fn, size=...) or bake_texture(vertices, faces, albedo_fn)")
        return bake_mesh(vertices, faces, size=size, padding=padding, chunk=chunk, device=device, unwrap=unwrap)
    if albedo_fn is None:
        raise TypeError("bake_texture(vertices, faces, albedo_fn): albedo_fn is missing")
    vmapping, new_faces, uvs, texture = _bake(
        vertices, faces, albedo_fn, size, padding, chunk, device, unwrap, background
    )
    return BakedTexture(uvs, np.ascontiguousarray(np.asarray(vertices, np.float32)[vmapping]), new_faces, texture)


def _check_bake_arguments(size: int, padding: int, faces: np.ndarray) -> None:
    if not 4 <= size <= 8192:
        raise ValueError(f"texture size must be in 4..8192 texels, got {size} (use texture_size=0 for vertex colours)")
    if padding < 0:
        raise ValueError(f"padding must be >= 0 texels, got {padding}")
    if len(faces) == 0:
        raise ValueError("cannot bake a texture for a mesh with no faces")


def _bake(vertices, faces, albedo_fn, size, padding, chunk, device, unwrap, background):
    vertices = np.asarray(vertices, np.float32)
    faces = np.asarray(faces, np.int64)
    _check_bake_arguments(size, padding, faces)
    vmapping, new_faces, uvs = unwrap_uv(vertices, faces, size, unwrap)
    new_vertices = vertices[vmapping]
    texture = paint_texture(
        uvs[new_faces], new_vertices[new_faces], albedo_fn, size, padding, chunk, device, background
    )
    return vmapping, new_faces, uvs, texture


def paint_texture(
    corner_uvs: np.ndarray,
    corner_points: np.ndarray,
    albedo_fn: Callable[[torch.Tensor], torch.Tensor],
    size: int,
    padding: int = 4,
    chunk: int = 65536,
    device: torch.device | str | None = None,
    background: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """The (size, size, 3) uint8 texture of triangles given by their corners' UVs (M, 3, 2) and 3D points (M, 3, 3):
    every texel centre inside a triangle in UV space takes albedo_fn at the point with the same barycentric
    coordinates in 3D, then the seams are padded (module docstring). A triangle whose UVs lie in another unit tile
    (u or v outside 0..1, as tiling UVs do) is moved by whole tiles, by the floor of its UV centroid, so it lands
    where a repeating texture lookup reads it."""
    corner_uvs = np.asarray(corner_uvs, np.float64)
    corner_points = np.asarray(corner_points, np.float64)
    device = torch.device(device) if device is not None else _infer_device(albedo_fn)
    m = len(corner_uvs)
    tiles = np.floor(corner_uvs.mean(axis=1, keepdims=True))
    flat_uvs = (corner_uvs - tiles).reshape(-1, 2).astype(np.float32)
    texel, face_id, bary = rasterize_uv(flat_uvs, np.arange(3 * m).reshape(m, 3), size)
    points = np.einsum("kc,kcd->kd", bary, corner_points[face_id]).astype(np.float32)
    albedo = evaluate_points(albedo_fn, points, chunk, device, "albedo_fn")
    if albedo.shape != (len(points), 3):
        raise ValueError(f"albedo_fn must return (N, 3) colours in [0, 1], got shape {albedo.shape}")
    image = np.zeros((size * size, 3), np.float32)
    filled = np.zeros(size * size, bool)
    image[texel] = np.clip(np.nan_to_num(albedo, nan=0.0), 0.0, 1.0)
    filled[texel] = True
    image, filled = dilate(image.reshape(size, size, 3), filled.reshape(size, size), padding)
    if background is None:
        fill = image[filled].mean(axis=0) if filled.any() else np.zeros(3)
    else:
        fill = np.asarray(background, np.float64) / 255.0
    image[~filled] = fill
    return albedo_to_uint8(image)


def split_corner_uvs(
    faces: np.ndarray, corner_uvs: np.ndarray, vertex_count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-corner UVs (M, 3, 2) as per-vertex ones: one vertex per distinct (vertex, uv) pair, so a vertex on a UV
    seam is split into as many copies as it has UVs there and every other vertex stays one. Vertices no face uses are
    kept, with uv (0, 0). Returns (vmapping (N',) the input vertex of each new one, in increasing order; faces
    (M, 3) int32 into the new vertices, the same triangles; uvs (N', 2) float32)."""
    faces = np.asarray(faces, np.int64)
    uv = np.asarray(corner_uvs, np.float32).reshape(-1, 2) + np.float32(0.0)  # -0.0 -> 0.0: one key per value
    rows = np.concatenate([faces.reshape(-1, 1), uv.view(np.int32).astype(np.int64)], axis=1)
    unused = np.setdiff1d(np.arange(vertex_count), faces.ravel())
    rows = np.concatenate([rows, np.stack([unused, np.zeros_like(unused), np.zeros_like(unused)], axis=1)])
    unique, inverse = np.unique(rows, axis=0, return_inverse=True)
    new_faces = inverse.reshape(-1)[: faces.size].reshape(-1, 3).astype(np.int32)
    uvs = np.ascontiguousarray(unique[:, 1:].astype(np.int32)).view(np.float32)
    return unique[:, 0].astype(np.int64), new_faces, uvs


def bake_corner_uvs(
    vertices: np.ndarray,
    faces: np.ndarray,
    corner_uvs: np.ndarray,
    albedo_fn: Callable[[torch.Tensor], torch.Tensor],
    size: int = 512,
    padding: int = 4,
    chunk: int = 65536,
    device: torch.device | str | None = None,
    background: tuple[int, int, int] | None = None,
) -> BakedTexture:
    """Bake ``albedo_fn`` into a mesh's OWN UV layout (M, 3, 2), one (u, v) per triangle corner as Blender keeps
    them: no unwrap, the triangles and their UVs unchanged. Returns BakedTexture(uvs, vertices', faces', texture)
    with the vertices split only along the layout's seams (``split_corner_uvs``)."""
    vertices = np.asarray(vertices, np.float32)
    faces = np.asarray(faces, np.int64)
    _check_bake_arguments(size, padding, faces)
    corner_uvs = np.asarray(corner_uvs, np.float32)
    if corner_uvs.shape != (len(faces), 3, 2):
        raise ValueError(f"corner UVs must be ({len(faces)}, 3, 2), one per triangle corner; got {corner_uvs.shape}")
    texture = paint_texture(corner_uvs, vertices[faces], albedo_fn, size, padding, chunk, device, background)
    vmapping, new_faces, uvs = split_corner_uvs(faces, corner_uvs, len(vertices))
    return BakedTexture(uvs, np.ascontiguousarray(vertices[vmapping]), new_faces, texture)


def bake_mesh(
    mesh: Mesh,
    albedo_fn: Callable[[torch.Tensor], torch.Tensor],
    size: int = 512,
    padding: int = 4,
    chunk: int = 65536,
    device: torch.device | str | None = None,
    unwrap: UnwrapConfig = UnwrapConfig(),
) -> Mesh:
    """``bake_texture`` on a Mesh: a new Mesh with uvs and texture (vertex colours, if any, follow the split)."""
    vmapping, new_faces, uvs, texture = _bake(
        mesh.vertices, mesh.faces, albedo_fn, size, padding, chunk, device, unwrap, None
    )
    colors = mesh.vertex_colors[vmapping] if mesh.vertex_colors is not None else None
    return Mesh(vertices=mesh.vertices[vmapping], faces=new_faces, vertex_colors=colors, uvs=uvs, texture=texture)


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Nearest-texel lookup of (K, 2) UVs (origin bottom-left) in a (H, W, C) texture with row 0 at the top."""
    h, w = texture.shape[:2]
    col = np.clip(np.floor(uv[:, 0] * w), 0, w - 1).astype(np.int64)
    row = np.clip(np.floor((1.0 - uv[:, 1]) * h), 0, h - 1).astype(np.int64)
    return texture[row, col]
