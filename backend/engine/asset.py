"""The Asset protocol: what every 3D asset offers to the code that finishes, scores or shows it.

Implemented by the per-prompt optimizer (engine.AssetOptimizer), the instant generator's asset
(generators.instant.InstantAsset) and eval's ground-truth and saved assets. ``jobs.finish`` turns any Asset into
its mesh, texture, files and events; eval scores any Asset. ``FieldAsset`` is the implementation for a density
field (``field(x) -> (density, albedo)``, ``field.density``, ``field.bound``) and its background.

``mesh.extract_mesh`` is the low-level marching cubes of a density function; ``Asset.to_mesh`` is the asset's
finished mesh (with its appearance, decimated, optionally textured).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Protocol, runtime_checkable

import torch

from ..mesh.types import Mesh
from ..render import RenderOutput, RenderSettings, render
from ..render.cameras import Cameras
from .meshing import field_mesh_phases, mesh_phase_names, run_phases


@runtime_checkable
class Asset(Protocol):
    device: torch.device
    warnings: list[str]  # things a person should know about the result (a failed bake, a missing package, ...)

    def render(self, cameras: Cameras, height: int, width: int, shading: str = "albedo") -> RenderOutput:
        """Images of the asset from ``cameras`` (no gradients): rgb (B, H, W, 3) over its background, opacity."""
        ...

    def to_mesh(self, resolution: int, texture_size: int = 0, max_faces: int | None = None) -> Mesh:
        """Its surface as a triangle mesh from a ``resolution``^3 grid, decimated to ``max_faces`` (None: all), with
        a baked texture_size^2 UV texture when texture_size > 0, else vertex colours. Raises mesh.EmptyFieldError
        when there is no surface."""
        ...


class FieldAsset:
    """A density field and its background as an Asset: no-grad renders at ``output_settings``, marching cubes with
    vertex colours, decimation and a baked texture (engine.meshing).

    ``mesh_phases`` is the same mesh as ``to_mesh`` but announces each phase first ("mesh", "decimate", "bake"), so a
    job can report them while they run.
    """

    def __init__(self, field, background, device: torch.device, output_settings: RenderSettings):
        self.field, self.background, self.device = field, background, torch.device(device)
        self.output_settings = output_settings
        self.warnings: list[str] = []

    @torch.no_grad()
    def render(self, cameras: Cameras, height: int, width: int, shading: str = "albedo") -> RenderOutput:
        return render(
            self.field, cameras.to(self.device), height, width, self.background, self.output_settings, shading=shading
        )

    mesh_phase_names = staticmethod(mesh_phase_names)  # (texture_size, max_faces) -> the names mesh_phases yields

    def mesh_phases(
        self, resolution: int, texture_size: int = 0, max_faces: int | None = None
    ) -> Generator[str, None, Mesh]:
        return field_mesh_phases(self.field, self.device, resolution, texture_size, max_faces, self.warnings)

    def to_mesh(self, resolution: int, texture_size: int = 0, max_faces: int | None = None) -> Mesh:
        return run_phases(self.mesh_phases(resolution, texture_size, max_faces))
