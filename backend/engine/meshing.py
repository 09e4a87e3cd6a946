"""A field to a mesh with its appearance: marching cubes, decimation to a face budget, then a baked UV texture or,
failing that, vertex colours."""

from __future__ import annotations

import torch


def field_to_mesh(
    field, device, resolution: int, texture_size: int, warnings: list[str] | None = None, max_faces: int | None = None
):
    """Marching cubes of ``field.density`` with vertex colours from its albedo, quadric decimation to ``max_faces``
    (None keeps every face), and a baked UV texture when texture_size > 0. A failed bake (xatlas missing or crashing)
    or missing decimation package keeps what it has and adds a warning, so the job still returns its asset. Raises
    mesh.EmptyFieldError for an empty field."""
    from ..mesh import TextureBakeError, bake_texture, decimate, extract_mesh

    def density(points):
        with torch.no_grad():
            return field.density(points.to(device)).float().cpu()

    def albedo(points):
        with torch.no_grad():
            return field(points.to(device))[1].float().cpu()

    mesh = extract_mesh(density, field.bound, resolution=resolution, albedo_fn=albedo)
    if max_faces:
        try:
            mesh = decimate(mesh, max_faces, albedo)
        except ImportError as err:
            if warnings is not None:
                warnings.append(str(err))
    if texture_size:
        try:
            mesh = bake_texture(mesh, albedo, size=texture_size)
        except TextureBakeError as err:
            if warnings is not None:
                warnings.append(f"texture bake failed, kept vertex colours: {err}")
    return mesh
