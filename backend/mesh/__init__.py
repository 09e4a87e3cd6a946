"""Mesh extraction (marching cubes), UV unwrapping and texture baking, and export (glb/obj/ply/usd).

mesh = extract_mesh(field.density, bound, resolution=128, albedo_fn=field.albedo)   # may raise EmptyFieldError
mesh = decimate(mesh, 10_000, field.albedo)                                          # quadric decimation
mesh = bake_mesh(mesh, field.albedo, size=512)                                       # uvs + texture
export_mesh(mesh, "out/asset.glb")                                                   # or .obj / .ply
"""

from .export import FORMATS, export_mesh, glb_bytes_of, load_mesh, resolve_format
from .extract import extract_mesh, silhouette_threshold
from .simplify import decimate, decimation_available
from .texture import (
    BakedTexture,
    TextureBakeError,
    UnwrapConfig,
    bake_corner_uvs,
    bake_mesh,
    bake_texture,
    xatlas_available,
)
from .types import EmptyFieldError, ExtractedMesh, Mesh

__all__ = [
    "FORMATS",
    "BakedTexture",
    "EmptyFieldError",
    "ExtractedMesh",
    "Mesh",
    "TextureBakeError",
    "UnwrapConfig",
    "bake_corner_uvs",
    "bake_mesh",
    "bake_texture",
    "decimate",
    "decimation_available",
    "export_mesh",
    "extract_mesh",
    "glb_bytes_of",
    "load_mesh",
    "resolve_format",
    "silhouette_threshold",
    "xatlas_available",
]
