"""The one way an asset becomes a job's result, for per-prompt and instant jobs alike: its mesh (``to_mesh``, with
decimation and a baked texture), the final MeshUpdate, the exported file(s), the contact sheet (the exported mesh,
textured and as bare geometry), and Done; or Failed
with ``empty_field`` (no surface) or ``unwritable_output`` (the files cannot be written). Each phase is announced as
Progress first (jobs.phases)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from dreamstill.protocol import Done, Failed, JobEvent, JobSpec, MeshUpdate

from ..engine.asset import Asset
from ..engine.images import contact_sheet, save_png
from ..mesh import EmptyFieldError, export_mesh
from ..render.cameras import orbit_cameras
from .phases import PhaseClock, asset_mesh_phases, mesh_phase_names

OUTPUT_PHASES = ["export", "views"]
VIEWS_SIZE = 256  # pixels a view of the contact sheet


def mesh_update(mesh, step: int, final: bool) -> MeshUpdate:
    """A backend Mesh as the protocol event (numpy arrays in the wire dtypes)."""
    return MeshUpdate(
        step=step,
        vertices=np.ascontiguousarray(mesh.vertices, np.float32),
        faces=np.ascontiguousarray(mesh.faces, np.int32),
        vertex_colors=None if mesh.vertex_colors is None else np.ascontiguousarray(mesh.vertex_colors, np.uint8),
        uvs=None if mesh.uvs is None else np.ascontiguousarray(mesh.uvs, np.float32),
        texture=None if mesh.texture is None else np.ascontiguousarray(mesh.texture, np.uint8),
        final=final,
    )


def write_views(mesh, path: Path, n: int = 4, size: int = VIEWS_SIZE) -> Path:
    """The contact sheet of the mesh as exported: n views around it at 20 degrees elevation, framed to fit, lit by a
    key light; the textured mesh in the top row, the geometry alone (grey, smooth normals) in the bottom row, so pits,
    lumps and holes show (render.raster)."""
    from ..render.raster import draw_mesh

    radius = float(np.linalg.norm(mesh.vertices, axis=1).max()) if mesh.num_vertices else 1.0
    fov = 45.0
    distance = max(radius, 1e-3) / math.sin(math.radians(0.5 * fov)) * 1.05
    cams = orbit_cameras(n, elevation=20.0, distance=distance, fov=fov)
    rows = torch.cat([draw_mesh(mesh, cams, size, "texture"), draw_mesh(mesh, cams, size, "geometry")])
    images = [(img.clamp(0, 1) * 255).round().byte().numpy() for img in rows]
    return save_png(contact_sheet(images, columns=n), path)


def finish_asset(
    asset: Asset,
    spec: JobSpec,
    output_path: Path,
    clock: PhaseClock,
    step: int,
    metrics: dict | None = None,
    views_size: int = VIEWS_SIZE,
) -> Iterator[JobEvent]:
    """Mesh, export and contact sheet of ``asset`` as events, ending in Done (files, seconds, metrics with the
    asset's warnings) or Failed. ``clock`` has planned these phases (``finish_phase_names``); ``step`` labels the
    final MeshUpdate (optimization steps done)."""
    try:
        mesh = yield from clock.announce(asset_mesh_phases(asset, spec))
    except EmptyFieldError as err:
        yield Failed("empty_field", str(err))
        return
    yield mesh_update(mesh, step, final=True)
    output_path = Path(output_path)
    try:
        yield clock.progress("export")
        files = [str(p) for p in export_mesh(mesh, output_path, spec.output_format)]
        yield clock.progress("views")
        files.append(str(write_views(mesh, output_path.with_name(output_path.stem + "_views.png"), size=views_size)))
    except OSError as err:
        yield Failed("unwritable_output", f"cannot write {output_path}: {err}; choose a writable path")
        return
    seconds = time.perf_counter() - clock.started
    warnings = prompt_warnings(spec) + list(asset.warnings)
    yield Done(files=files, seconds=seconds, metrics={**(metrics or {}), "warnings": warnings})


def prompt_warnings(spec: JobSpec) -> list[str]:
    """Warnings about the prompt itself: one outside the built-in prior's toy world (that prior, or a generator
    trained on it, turns such a prompt into an abstract blob)."""
    if spec.prior != "builtin":
        return []
    from ..priors.builtin.vocabulary import out_of_world_warning

    warning = out_of_world_warning(spec.prompt)
    return [] if warning is None else [warning]


def finish_phase_names(asset, spec: JobSpec) -> list[str]:
    """Every phase ``finish_asset`` announces for this asset (or its class) and spec, in order."""
    return mesh_phase_names(asset, spec) + OUTPUT_PHASES
