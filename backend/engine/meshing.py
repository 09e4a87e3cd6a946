"""A field to a mesh with its appearance: marching cubes, decimation to a face budget, smooth vertex normals, then a
baked UV texture or, failing that, vertex colours. Written as a generator of phase names so a job can report each
phase as it starts.

The density field's mesh is here (``field_mesh_phases``); the surface stage's signed-distance mesh, with its repair
and clean-up, is in engine/surface_mesh.py and shares the decimation and appearance steps below.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
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


def field_functions(field, device, distance: str = "density") -> tuple[Callable, Callable]:
    """(values, albedo): no-grad CPU float functions of (N, 3) points for a field, ``distance`` naming the scalar
    ("density" for a density field, "sdf" for a signed-distance field)."""
    scalar = getattr(field, distance)

    def values(points):
        with torch.no_grad():
            return scalar(points.to(device)).float().cpu()

    def albedo(points):
        with torch.no_grad():
            return field(points.to(device))[1].float().cpu()

    return values, albedo


def decimate_or_warn(mesh, max_faces: int, albedo: Callable, warnings: list[str] | None):
    """Quadric decimation to ``max_faces`` (mesh.decimate); without the package, the mesh as it is and a warning."""
    from ..mesh import decimate

    try:
        return decimate(mesh, max_faces, albedo)
    except ImportError as err:
        if warnings is not None:
            warnings.append(str(err))
        return mesh


def appearance_phases(mesh, albedo: Callable, texture_size: int, warnings: list[str] | None):
    """Smooth vertex normals and vertex colours from ``albedo``, then (phase "bake", when texture_size > 0) a baked
    UV texture that keeps the normals across its seams; a failed bake keeps the vertex colours and warns."""
    from ..mesh import TextureBakeError, bake_texture
    from ..mesh.cleanup import follow_split, with_smooth_normals
    from ..mesh.extract import albedo_to_uint8, evaluate_points

    if mesh.vertex_colors is None:
        colors = evaluate_points(albedo, mesh.vertices, 65536, torch.device("cpu"), "albedo")
        mesh = mesh.copy(vertex_colors=albedo_to_uint8(colors))
    mesh = with_smooth_normals(mesh)
    if texture_size:
        yield "bake"
        try:
            mesh = follow_split(mesh, bake_texture(mesh, albedo, size=texture_size))
        except TextureBakeError as err:
            if warnings is not None:
                warnings.append(f"texture bake failed, kept vertex colours: {err}")
    return mesh


def field_mesh_phases(
    field, device, resolution: int, texture_size: int, max_faces: int | None, warnings: list[str] | None
) -> Generator[str, None, object]:
    """Yield each phase's name as it starts (``mesh_phase_names``), return the mesh.

    Marching cubes of ``field.density`` with vertex colours from its albedo, quadric decimation to ``max_faces``
    (None keeps every face), smooth vertex normals, and a baked UV texture when texture_size > 0. A failed bake
    (xatlas missing or crashing) or a missing decimation package keeps what it has and adds a warning, so the job
    still returns its asset. Raises mesh.EmptyFieldError for an empty field."""
    from ..mesh import extract_mesh

    density, albedo = field_functions(field, device)
    yield "mesh"
    mesh = extract_mesh(density, field.bound, resolution=resolution, albedo_fn=albedo)
    if max_faces:
        yield "decimate"
        mesh = decimate_or_warn(mesh, max_faces, albedo, warnings)
    return (yield from appearance_phases(mesh, albedo, texture_size, warnings))


def field_to_mesh(
    field, device, resolution: int, texture_size: int, warnings: list[str] | None = None, max_faces: int | None = None
):
    """``field_mesh_phases`` run to the end: the mesh, without reporting phases."""
    return run_phases(field_mesh_phases(field, device, resolution, texture_size, max_faces, warnings))
