"""Mesh extraction (marching cubes), UV unwrapping and texture baking, and export (glb/obj/ply)."""

from .extract import auto_threshold, extract_mesh
from .types import EmptyFieldError, ExtractedMesh, Mesh

__all__ = ["EmptyFieldError", "ExtractedMesh", "Mesh", "auto_threshold", "extract_mesh"]
