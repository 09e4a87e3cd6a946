"""run_job: a JobSpec in, a stream of protocol events out, result files on disk.

The server's worker and `dreamstill generate` both call this; it knows nothing of ZeroMQ or Blender. Bad input and
expected failures become ``Failed`` events with a code and a message a person can act on; files already written
(checkpoints, intermediate meshes) are left in place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from dreamstill.protocol import Cancelled, Done, Failed, JobEvent, JobSpec, JobSpecError, MeshUpdate, Progress

from .images import contact_sheet, save_png

CHECKPOINT_NAME = "checkpoint.pt"


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


def write_views(optimizer, path: Path, n: int = 4, size: int = 128) -> Path:
    """The contact sheet: n views around the asset at 20 degrees elevation, albedo, on the background."""
    from ..render.cameras import orbit_cameras

    out = optimizer.render(orbit_cameras(n, elevation=20.0), size, size)
    images = [(img.clamp(0, 1) * 255).round().byte().cpu().numpy() for img in out.rgb]
    return save_png(contact_sheet(images), path)


def run_job(
    spec: JobSpec,
    out_dir: Path,
    cancel: Callable[[], bool] | None = None,
    resume: bool = False,
    output_path: Path | None = None,
    prior=None,
) -> Iterator[JobEvent]:
    """Run one job to completion, yielding Progress / Preview / MeshUpdate and finally Done, Failed or Cancelled.

    out_dir holds the checkpoint (when spec.checkpoint_every > 0) and, unless ``output_path`` is given, the result
    ``asset.<format>`` with its contact sheet ``asset_views.png``. ``resume`` continues from out_dir's checkpoint.
    """
    started = time.perf_counter()
    try:
        spec.validate()
    except JobSpecError as err:
        yield Failed("bad_spec", str(err))
        return
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        yield Failed("unwritable_output", f"cannot create output folder {out_dir}: {err}; choose a writable path")
        return
    output_path = Path(output_path) if output_path else out_dir / f"asset.{spec.output_format}"

    if spec.mode == "instant":
        yield from _run_instant(spec, output_path, started)
        return

    from ..priors import PriorNotFoundError
    from .optimize import AssetOptimizer

    try:
        optimizer = AssetOptimizer(spec, prior=prior)
    except PriorNotFoundError as err:
        yield Failed("missing_weights", str(err))
        return
    except (KeyError, ValueError) as err:  # unknown method option, bad method settings
        yield Failed("bad_spec", str(err))
        return

    checkpoint = out_dir / CHECKPOINT_NAME
    if resume and checkpoint.exists():
        optimizer.load_checkpoint(checkpoint)

    for event in optimizer.run(cancel):
        yield event
        if isinstance(event, Progress):
            step = event.step
            if spec.checkpoint_every and step % spec.checkpoint_every == 0:
                optimizer.save_checkpoint(checkpoint)
            if spec.mesh_every and step % spec.mesh_every == 0 and step < spec.steps:
                update = _try_mesh(optimizer, step, final=False)
                if update is not None:
                    yield update
    if optimizer.step < spec.steps:
        if spec.checkpoint_every:
            optimizer.save_checkpoint(checkpoint)
        yield Cancelled(optimizer.step)
        return

    from ..mesh import EmptyFieldError, export_mesh

    try:
        mesh = optimizer.extract_mesh()
    except EmptyFieldError as err:
        yield Failed("empty_field", str(err))
        return
    yield mesh_update(mesh, optimizer.step, final=True)
    try:
        files = [str(p) for p in _as_list(export_mesh(mesh, output_path, spec.output_format))]
        files.append(str(write_views(optimizer, output_path.with_name(output_path.stem + "_views.png"))))
    except OSError as err:
        yield Failed("unwritable_output", f"cannot write {output_path}: {err}; choose a writable path")
        return
    yield Done(
        files=files,
        seconds=time.perf_counter() - started,
        metrics={"seconds_per_step": optimizer.seconds_per_step, "warnings": optimizer.warnings},
    )


def _try_mesh(optimizer, step: int, final: bool) -> MeshUpdate | None:
    """An intermediate mesh; early in a run the field may still be empty, which is not an error."""
    from ..mesh import EmptyFieldError

    try:
        return mesh_update(
            optimizer.extract_mesh(resolution=min(64, optimizer.spec.mesh_grid), texture_size=0), step, final
        )
    except EmptyFieldError:
        return None


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _run_instant(spec: JobSpec, output_path: Path, started: float) -> Iterator[JobEvent]:
    from ..generators.instant import run_instant

    yield from run_instant(spec, output_path, started)
