"""A field to a mesh with its appearance: marching cubes, decimation to a face budget, then a baked UV texture or,
failing that, vertex colours. Written as a generator of phase names so a job can report each phase as it starts."""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

import torch

Result = TypeVar("Result")


def mesh_phase_names(texture_size: int, max_faces: int | None) -> list[str]:
    """The phases ``field_mesh_phases`` runs, in order: "mesh", then "decimate" and "bake" when they apply."""
    return ["mesh"] + (["decimate"] if max_faces else []) + (["bake"] if texture_size else [])


def run_phases(phases: Generator[str, None, Result]) -> Result:
    """Run a phase generator to the end without reporting anything; its return value."""
    while True:
        try:
            next(phases)
        except StopIteration as stop:
            return stop.value


def field_mesh_phases(
    field, device, resolution: int, texture_size: int, max_faces: int | None, warnings: list[str] | None
) -> Generator[str, None, object]:
    """Yield each phase's name as it starts (``mesh_phase_names``), return the mesh.

    Marching cubes of ``field.density`` with vertex colours from its albedo, quadric decimation to ``max_faces``
    (None keeps every face), and a baked UV texture when texture_size > 0. A failed bake (xatlas missing or crashing)
    or a missing decimation package keeps what it has and adds a warning, so the job still returns its asset. Raises
    mesh.EmptyFieldError for an empty field."""
    from ..mesh import TextureBakeError, bake_texture, decimate, extract_mesh

    def density(points):
        with torch.no_grad():
            return field.density(points.to(device)).float().cpu()

    def albedo(points):
        with torch.no_grad():
            return field(points.to(device))[1].float().cpu()

    yield "mesh"
    mesh = extract_mesh(density, field.bound, resolution=resolution, albedo_fn=albedo)
    if max_faces:
        yield "decimate"
        try:
            mesh = decimate(mesh, max_faces, albedo)
        except ImportError as err:
            if warnings is not None:
                warnings.append(str(err))
    if texture_size:
        yield "bake"
        try:
            mesh = bake_texture(mesh, albedo, size=texture_size)
        except TextureBakeError as err:
            if warnings is not None:
                warnings.append(f"texture bake failed, kept vertex colours: {err}")
    return mesh


def field_to_mesh(
    field, device, resolution: int, texture_size: int, warnings: list[str] | None = None, max_faces: int | None = None
):
    """``field_mesh_phases`` run to the end: the mesh, without reporting phases."""
    return run_phases(field_mesh_phases(field, device, resolution, texture_size, max_faces, warnings))
