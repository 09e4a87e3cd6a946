"""A mesh file as the input of a texture or refine job (``dreamstill generate --input-mesh FILE``).

trimesh reads it (a scene's parts are concatenated with their transforms, untouched otherwise: ``process=False``
keeps every vertex and face as the file has them). The result is in the backend's frame, Z up: .glb / .gltf / .obj
are Y up by convention and turned back exactly as ``mesh.export`` turned them (x, z, -y) -> (x, y, z); .ply, .stl
and .off are read as they are. UVs, when the file has them per vertex, become one (u, v) per triangle corner, the
way Blender sends them. (trimesh keeps a glTF primitive's UVs only when the primitive has a material; without one
the mesh is read without UVs and a texture job unwraps it.)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dreamstill.protocol import InputMesh

from .export import Z_UP_TO_Y_UP

Y_UP_SUFFIXES = (".glb", ".gltf", ".obj")
SUFFIXES = (*Y_UP_SUFFIXES, ".ply", ".stl", ".off")


def load_input_mesh(path: str | os.PathLike) -> InputMesh:
    """The mesh in ``path`` as an InputMesh (Z up); FileNotFoundError or ValueError saying what to change."""
    import trimesh

    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise ValueError(f"input mesh {path}: cannot read {path.suffix or 'a file without a suffix'}; use one of "
                         f"{', '.join(SUFFIXES)}")  # fmt: skip
    if not path.is_file():
        raise FileNotFoundError(f"input mesh {path} does not exist; give the path of a {', '.join(SUFFIXES)} file")
    try:
        loaded = trimesh.load(str(path), process=False)
    except Exception as err:  # noqa: BLE001 - any parser failure is the file's fault
        raise ValueError(f"input mesh {path} could not be read ({err.__class__.__name__}: {err})") from None
    geom = loaded.to_geometry() if isinstance(loaded, trimesh.Scene) else loaded
    if not isinstance(geom, trimesh.Trimesh) or len(geom.faces) == 0:
        raise ValueError(f"input mesh {path} holds no triangles (points or lines only?); export the surface")
    vertices = np.asarray(geom.vertices, np.float64)
    if path.suffix.lower() in Y_UP_SUFFIXES:
        vertices = vertices @ Z_UP_TO_Y_UP  # the inverse of the export's rotation (orthogonal: R^-1 = R^T)
    faces = np.asarray(geom.faces, np.int64)
    uv = getattr(geom.visual, "uv", None)
    uvs = None
    if uv is not None and np.shape(uv) == (len(vertices), 2):
        uvs = np.asarray(uv, np.float32)[faces]
    try:
        return InputMesh(vertices, faces, uvs)
    except ValueError as err:
        raise ValueError(f"input mesh {path}: {err}") from None


__all__ = ["SUFFIXES", "load_input_mesh"]
