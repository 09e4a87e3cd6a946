"""run_job: a JobSpec in, a stream of protocol events out, result files on disk.

The server's worker and `dreamstill generate` both call this. Bad input and expected failures become ``Failed``
events with a code and a message a person can act on; files already written (checkpoints, intermediate meshes) are
left in place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

from dreamstill.protocol import Failed, InputMesh, JobEvent, JobSpec, JobSpecError, check_mesh_for_mode

from .instant_job import run_instant_job
from .optimize_job import run_optimize_job
from .texture_job import run_mesh_job


def run_job(
    spec: JobSpec,
    out_dir: Path,
    cancel: Callable[[], bool] | None = None,
    resume: bool = False,
    output_path: Path | None = None,
    prior=None,
    input_mesh: InputMesh | None = None,
) -> Iterator[JobEvent]:
    """Run one job to completion, yielding Progress / Preview / MeshUpdate and finally Done, Failed or Cancelled.

    out_dir holds the checkpoint (when spec.checkpoint_every > 0) and, unless ``output_path`` is given, the result
    ``asset.<format>`` with its contact sheet ``asset_views.png``. ``resume`` continues a per-prompt job from out_dir's
    checkpoint. ``prior``: an already loaded Prior for a per-prompt job (tests, benchmarks), else loaded by name.
    ``input_mesh``: the mesh a texture or refine job works on (those modes need one, the others take none).
    """
    started = time.perf_counter()  # the spec was validated when it was made (JobSpec.__post_init__)
    try:
        check_mesh_for_mode(spec.mode, input_mesh is not None)
    except JobSpecError as err:
        yield Failed("bad_spec", str(err))
        return
    if spec.output_format.startswith("usd"):
        from ..mesh.usd import usd_available

        if not usd_available():
            yield Failed(
                "missing_dependency", f"{spec.output_format} output needs usd-core: pip install 'dreamstill[usd]'"
            )
            return
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        yield Failed("unwritable_output", f"cannot create output folder {out_dir}: {err}; choose a writable path")
        return
    output_path = Path(output_path) if output_path else out_dir / f"asset.{spec.output_format}"
    if input_mesh is not None:
        yield from run_mesh_job(spec, out_dir, output_path, started, input_mesh, cancel, resume, prior)
        return
    runner = run_instant_job if spec.mode == "instant" else run_optimize_job
    yield from runner(spec, out_dir, output_path, started, cancel=cancel, resume=resume, prior=prior)
