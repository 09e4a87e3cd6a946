"""Mesh arrays in both directions between the protocol and Blender, without bpy (tests import it on its own).

Incoming: a streamed ``MeshUpdate`` (triangles over shared vertices; colours and UVs per vertex) becomes the flat
arrays that ``foreach_set`` takes, :func:`mesh_arrays`:

    co           (3N,)  float32   vertex positions x0 y0 z0 x1 ...
    loop_vertex  (3M,)  int32     the vertex of each face corner ("loop"): the faces array flattened
    loop_start   (M,)   int32     first loop of polygon j: 3 j (every polygon is a triangle)
    corner_uv    (6M,)  float32   the UV of each loop, uv[faces[j, k]], as Blender stores UVs per loop
    colors       (4N,)  float32   RGBA in 0..1 from uint8 RGB, alpha 1

Outgoing: an artist's mesh read from Blender (vertices, its loop triangles, the UV of each loop when it has a UV map)
becomes the arrays that travel to the backend, :func:`outgoing_mesh`, checked against the protocol's limits: a request
from a client may carry at most ``protocol.wire.MAX_REQUEST_BYTES`` in all, and a mesh at most
``MAX_MESH_VERTICES`` vertices and ``MAX_MESH_FACES`` faces. A mesh over them raises :class:`MeshTooLarge`, whose text
is written for the panel: how big the mesh is, what fits, and how to get there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .proto import protocol

# What a request may carry besides the mesh arrays: the JSON header with the JobSpec (a prompt is at most 1000
# characters; a spec's JSON is about 1 kB) and the array descriptions.
HEADER_ALLOWANCE = 64 * 1024
VERTEX_BYTES = 3 * 4  # float32 x, y, z
FACE_BYTES = 3 * 4  # int32 corner vertex indices
FACE_UV_BYTES = 3 * 2 * 4  # float32 (u, v) at each of the 3 corners


@dataclass
class MeshArrays:
    """What ``live.apply_mesh`` hands to ``foreach_set`` (see the module docstring for the layout)."""

    co: np.ndarray
    loop_vertex: np.ndarray
    loop_start: np.ndarray
    corner_uv: np.ndarray | None = None
    colors: np.ndarray | None = None

    @property
    def vertex_count(self) -> int:
        return len(self.co) // 3

    @property
    def face_count(self) -> int:
        return len(self.loop_start)


def mesh_arrays(vertices, faces, vertex_colors=None, uvs=None) -> MeshArrays:
    """The foreach_set arrays of a triangle mesh: vertices (N, 3), faces (M, 3) indices into them, optional
    vertex_colors (N, 3) uint8 and uvs (N, 2) per vertex. ValueError when a face or array does not fit the vertices."""
    vertices = np.ascontiguousarray(vertices, dtype=np.float32).reshape(-1, 3)
    faces = np.ascontiguousarray(faces, dtype=np.int32).reshape(-1, 3)
    n, m = len(vertices), len(faces)
    if m and (faces.min() < 0 or faces.max() >= n):
        bad = int(faces.max()) if faces.max() >= n else int(faces.min())
        raise ValueError(f"a face refers to vertex {bad} but the mesh has {n} vertices")
    colors = corner_uv = None
    if vertex_colors is not None and n:
        rgb = np.asarray(vertex_colors)
        if rgb.ndim != 2 or rgb.shape[0] != n or rgb.shape[1] < 3:
            raise ValueError(f"vertex colours must be ({n}, 3), one per vertex; got {rgb.shape}")
        rgba = np.ones((n, 4), dtype=np.float32)
        rgba[:, :3] = rgb[:, :3].astype(np.float32) / 255.0
        colors = rgba.ravel()
    if uvs is not None and m:
        uv = np.asarray(uvs, dtype=np.float32)
        if uv.shape != (n, 2):
            raise ValueError(f"UVs must be ({n}, 2), one per vertex; got {uv.shape}")
        corner_uv = np.ascontiguousarray(uv[faces.ravel()]).ravel()
    return MeshArrays(
        co=vertices.ravel(),
        loop_vertex=faces.ravel(),
        loop_start=np.arange(0, 3 * m, 3, dtype=np.int32),
        corner_uv=corner_uv,
        colors=colors,
    )


# ---------------------------------------------------------------------------------------------- outgoing
class MeshTooLarge(ValueError):
    """A mesh that cannot travel to the backend; the text says what to change."""


# A mesh ready for the wire: the protocol's InputMesh (vertices (N, 3) float32, faces (M, 3) int32, uvs (M, 3, 2)
# float32 per corner or None), which Client.submit(spec, mesh=...) sends as array frames.
OutgoingMesh = protocol.InputMesh


def mesh_bytes(vertex_count: int, face_count: int, with_uvs: bool) -> int:
    """Bytes of a mesh on the wire: 12 per vertex, 12 per triangle, and 24 more per triangle with UVs."""
    return vertex_count * VERTEX_BYTES + face_count * (FACE_BYTES + (FACE_UV_BYTES if with_uvs else 0))


def mesh_budget(max_request_bytes: int | None = None) -> int:
    """Bytes a mesh may take in one request: the request limit less the allowance for its header."""
    limit = protocol.wire.MAX_REQUEST_BYTES if max_request_bytes is None else max_request_bytes
    return limit - HEADER_ALLOWANCE


def outgoing_mesh(
    co, tri_vertices, tri_loops=None, loop_uvs=None, *, name: str = "the mesh", max_request_bytes: int | None = None
) -> OutgoingMesh:
    """The wire arrays of a Blender mesh: ``co`` vertex positions (N*3 or (N, 3)), ``tri_vertices`` its loop
    triangles' vertex indices (M*3), and when it has a UV map ``tri_loops`` the loop of each triangle corner (M*3)
    with ``loop_uvs`` the UV of each loop (L*2). Raises MeshTooLarge (over the protocol's limits) or ValueError."""
    vertices = np.ascontiguousarray(co, dtype=np.float32).reshape(-1, 3)
    faces = np.ascontiguousarray(tri_vertices, dtype=np.int32).reshape(-1, 3)
    n, m = len(vertices), len(faces)
    if m == 0:
        raise ValueError(f"{name} has no faces to send; select a mesh object with faces")
    if faces.min() < 0 or faces.max() >= n:
        raise ValueError(f"{name}: a triangle refers to vertex {int(faces.max())} but the mesh has {n} vertices")
    if not np.isfinite(vertices).all():
        raise ValueError(f"{name} has vertices that are not finite numbers (NaN or infinity); fix or delete them")
    uvs = None
    if loop_uvs is not None and tri_loops is not None:
        per_loop = np.asarray(loop_uvs, dtype=np.float32).reshape(-1, 2)
        loops = np.asarray(tri_loops, dtype=np.int64).reshape(m, 3)
        if loops.min() < 0 or loops.max() >= len(per_loop):
            raise ValueError(f"{name}: a triangle refers to loop {int(loops.max())} but the UV map has {len(per_loop)}")
        uvs = np.ascontiguousarray(per_loop[loops])
    check_mesh_limits(n, m, uvs is not None, name=name, max_request_bytes=max_request_bytes)
    return OutgoingMesh(vertices, faces, uvs)


def _size_text(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 1024:.1f} KiB"


def check_mesh_limits(
    vertex_count: int, face_count: int, with_uvs: bool, *, name: str = "the mesh", max_request_bytes: int | None = None
) -> None:
    """MeshTooLarge, naming the sizes and what to change, when a mesh of this size cannot travel in one request."""
    max_vertices, max_faces = protocol.messages.MAX_MESH_VERTICES, protocol.messages.MAX_MESH_FACES
    if vertex_count > max_vertices or face_count > max_faces:
        raise MeshTooLarge(
            f"{name} has {vertex_count:,} vertices and {face_count:,} triangles; the protocol carries at most "
            f"{max_vertices:,} vertices and {max_faces:,} triangles. Decimate it (Decimate modifier) first"
        )
    budget, size = mesh_budget(max_request_bytes), mesh_bytes(vertex_count, face_count, with_uvs)
    if size <= budget:
        return
    per_face = size / face_count  # with its share of the vertices, which decimation thins out alike
    fits = int(budget // per_face)
    ratio = max(0.01, np.floor(100 * fits / face_count) / 100)
    uv_note = " with its UVs" if with_uvs else ""
    raise MeshTooLarge(
        f"{name} is too large to send: {face_count:,} triangles take {_size_text(size)}{uv_note}, and one "
        f"request to the backend carries at most {_size_text(budget)} (about {fits:,} such triangles). "
        f"Decimate it (Decimate modifier, ratio {ratio:.2f} or lower) and try again"
    )
