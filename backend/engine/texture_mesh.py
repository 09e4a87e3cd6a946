"""The meshes of a texture or refine job (engine/texture.py), as generators of phase names like engine/meshing.py.

Texture mode: the input mesh itself, vertices and faces as they came, in the input's frame. Its appearance is the
field's albedo a(k (v - c)) (the field frame, fields/mesh_sdf.MeshFrame) baked into the mesh's own per-corner UVs
(mesh/texture.bake_corner_uvs), or into an xatlas unwrap of it ("unwrap") when it has none; the only vertices added
are the copies a UV seam needs. texture_size = 0 gives vertex colours at the input vertices.

Refine mode: marching cubes of d_theta at level 0 (mesh/cleanup.py: watertight inside the box, welded, small holes
filled, outward), quadric decimation to the face budget, an xatlas bake, then the inverse frame v = x / k + c.

A failed unwrap or bake (xatlas missing or crashing) keeps vertex colours and adds a warning, as engine/meshing.py
does, so the job still returns its asset.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import numpy as np
import torch

from ..mesh.extract import albedo_to_uint8, evaluate_points
from ..mesh.texture import TextureBakeError, UnwrapConfig, bake_corner_uvs, unwrap_uv
from ..mesh.types import Mesh
from .meshing import run_phases

LIVE_RESOLUTION = 64  # marching-cubes grid of a refine job's intermediate meshes
SMALL_MESH_FACES = 20_000  # below this, xatlas grows charts without an area limit (fewer seams on artist meshes)


def field_albedo(asset) -> Callable[[torch.Tensor], torch.Tensor]:
    """a(x) for field-frame points (N, 3) -> (N, 3) in [0, 1] on the CPU."""

    def albedo(points: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return asset.field.albedo(points.to(asset.device)).float().cpu()

    return albedo


def mesh_albedo(asset) -> Callable[[torch.Tensor], torch.Tensor]:
    """a(k (v - c)) for points v (N, 3) in the input mesh's frame."""
    centre = torch.tensor(asset.frame.centre, dtype=torch.float64)
    albedo = field_albedo(asset)

    def at_mesh_points(points: torch.Tensor) -> torch.Tensor:
        return albedo(((points.double() - centre) * asset.frame.scale).float())

    return at_mesh_points


def _colours(fn, vertices: np.ndarray) -> np.ndarray:
    return albedo_to_uint8(
        evaluate_points(fn, np.ascontiguousarray(vertices, np.float32), 65536, torch.device("cpu"), "albedo")
    )


def mesh_phase_names(asset, texture_size: int, max_faces: int | None) -> list[str]:
    """The phases ``mesh_phases`` announces, in order."""
    if asset.texturing:
        if not texture_size:
            return []
        return (["unwrap"] if asset.corner_uvs is None else []) + ["bake"]
    return ["mesh"] + (["decimate"] if max_faces else []) + (["bake"] if texture_size else [])


def mesh_phases(asset, resolution: int, texture_size: int, max_faces: int | None) -> Generator[str, None, Mesh]:
    """Yield each phase's name as it starts, return the mesh in the input's frame (module docstring)."""
    if asset.texturing:
        return (yield from _textured_input(asset, texture_size))
    return (yield from _refined_surface(asset, resolution, texture_size, max_faces))


def live_mesh(asset, texture_size: int) -> Mesh:
    """An intermediate mesh: the input with a ``texture_size`` bake (texture), or an untextured 64^3 surface."""
    if asset.texturing:
        return run_phases(_textured_input(asset, texture_size))
    return run_phases(_refined_surface(asset, LIVE_RESOLUTION, 0, None))


def unwrap_corners(vertices: np.ndarray, faces: np.ndarray, size: int) -> np.ndarray:
    """(M, 3, 2) per-corner UVs of an xatlas unwrap of the mesh, in the faces' own order."""
    config = UnwrapConfig(max_chart_area_fraction=0.0 if len(faces) <= SMALL_MESH_FACES else 1.0 / 256.0)
    vmapping, new_faces, uvs = unwrap_uv(vertices, faces, size, config)
    if not np.array_equal(vmapping[new_faces], faces):
        raise TextureBakeError("xatlas returned the triangles in another order; export with vertex colours instead")
    return uvs[new_faces]


def _textured_input(asset, texture_size: int) -> Generator[str, None, Mesh]:
    mesh, albedo = asset.input_mesh, mesh_albedo(asset)
    plain = Mesh(mesh.vertices, mesh.faces, vertex_colors=_colours(albedo, mesh.vertices))
    if not texture_size:
        return plain
    try:
        if asset.corner_uvs is None:
            yield "unwrap"
            asset.corner_uvs = unwrap_corners(mesh.vertices, mesh.faces, texture_size)
        yield "bake"
        baked = bake_corner_uvs(mesh.vertices, mesh.faces, asset.corner_uvs, albedo, size=texture_size)
    except (TextureBakeError, ImportError) as err:
        asset.warnings.append(f"texture bake failed, kept vertex colours: {err}")
        return plain
    return Mesh(baked.vertices, baked.faces, uvs=baked.uvs, texture=baked.texture)


def _refined_surface(asset, resolution: int, texture_size: int, max_faces: int | None) -> Generator[str, None, Mesh]:
    from ..mesh import bake_texture, decimate
    from ..mesh.cleanup import clean_mesh, marching_cubes_sdf, sdf_grid, weld

    field, albedo = asset.field, field_albedo(asset)

    def sdf(points):
        with torch.no_grad():
            return field.sdf(points.to(asset.device)).float().cpu()

    yield "mesh"
    mesh, _ = clean_mesh(marching_cubes_sdf(sdf_grid(sdf, field.bound, resolution), field.bound), None)
    if max_faces:
        yield "decimate"
        try:
            mesh = weld(decimate(mesh, max_faces))  # quadric decimation leaves duplicate vertices
        except ImportError as err:
            asset.warnings.append(str(err))
    mesh = mesh.copy(vertex_colors=_colours(albedo, mesh.vertices))
    if texture_size:
        yield "bake"
        try:
            mesh = bake_texture(mesh, albedo, size=texture_size)
        except (TextureBakeError, ImportError) as err:
            asset.warnings.append(f"texture bake failed, kept vertex colours: {err}")
    return mesh.copy(vertices=asset.frame.to_mesh(mesh.vertices))


__all__ = ["field_albedo", "live_mesh", "mesh_albedo", "mesh_phase_names", "mesh_phases", "unwrap_corners"]
