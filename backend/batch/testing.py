"""A stand-in for ``ray_runner.engine_runner`` in tests: a small valid asset at once, and a worker that dies.

It lives in the package (not in tests/) because Ray workers import the runner by name. Steered by ``spec.options``:

    fake_attempts_dir  folder where every attempt appends its process id to ``<asset stem>.attempts``
    fake_kill_once     text of an asset file name: the first attempt of that asset SIGKILLs its own worker
                       (what the kernel's OOM killer or a lost node looks like to Ray)
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np

from dreamstill.protocol import Done, Progress

TETRA_VERTICES = np.array([[0, 0, 1], [0.9, 0, -0.3], [-0.45, 0.8, -0.3], [-0.45, -0.8, -0.3]], np.float32)
TETRA_FACES = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]], np.int32)


def count_attempts(attempts_dir: Path, stem: str) -> list[int]:
    """The process ids that ran the asset ``stem``, in order."""
    path = Path(attempts_dir) / f"{stem}.attempts"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def fake_asset_runner(spec, work_dir: Path, output_path: Path):
    """Yield Progress then Done after writing a vertex-coloured tetrahedron (colour from the seed) and its views."""
    from PIL import Image

    from ..mesh import Mesh, export_mesh

    opts, output_path = spec.options, Path(output_path)
    started = time.perf_counter()
    if opts.get("fake_attempts_dir"):
        with open(Path(opts["fake_attempts_dir"]) / f"{output_path.stem}.attempts", "a") as f:
            f.write(f"{os.getpid()}\n")
        if opts.get("fake_kill_once") and opts["fake_kill_once"] in output_path.name:
            if len(count_attempts(opts["fake_attempts_dir"], output_path.stem)) == 1:
                os.kill(os.getpid(), signal.SIGKILL)
    yield Progress(step=spec.steps, total=spec.steps, loss=0.0, eta_s=0.0)
    color = np.random.default_rng(spec.seed).integers(0, 256, 3, dtype=np.uint8)
    mesh = Mesh(TETRA_VERTICES, TETRA_FACES, vertex_colors=np.tile(color, (4, 1)))
    files = export_mesh(mesh, output_path, spec.output_format)
    views = output_path.with_name(f"{output_path.stem}_views.png")
    Image.new("RGB", (32, 32), tuple(int(c) for c in color)).save(views)
    yield Done(files=[*files, str(views)], seconds=time.perf_counter() - started, metrics={})
