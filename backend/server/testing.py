"""Stand-in job runners with the signature of ``jobs.run_job``, for tests and the protocol benchmark.

They live in the package (not in tests/) because the worker is a *spawned* process: its runner must be importable
by name. Behaviour is steered through ``spec.options`` (all optional):

    fake_step_s      seconds slept per step (default 0.01)
    fake_vertices    vertex count of the streamed meshes (default 4: a tetrahedron)
    fake_file_bytes  size of the result file (default 1000), content seeded by spec.seed
    fake_crash_at    raise RuntimeError at this step      fake_oom_at   raise a CUDA-style out-of-memory error
    fake_exit_at     os._exit(3) at this step (a crash no Python code sees)
    fake_ignore_cancel  never look at the cancel callback
    fake_fill_at, fake_fill_bytes  at this step write up to this many bytes into ../filler.bin (fills a small disk)

With ``spec.checkpoint_every`` it writes ``checkpoint.pt`` (the step, as text) every that many steps and when
cancelled, and ``resume=True`` continues after the checkpoint's step (Done.metrics["resumed_from"]).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from dreamstill.protocol import Cancelled, Done, MeshUpdate, Preview, Progress


def fake_mesh(step: int, count: int, seed: int = 0, final: bool = False) -> MeshUpdate:
    """A mesh with ``count`` vertices (>= 4): points on a sphere, faces (i, i+1, i+2), colours from the seed."""
    count = max(4, int(count))
    rng = np.random.default_rng(seed)
    vertices = rng.standard_normal((count, 3)).astype(np.float32)
    vertices /= np.linalg.norm(vertices, axis=1, keepdims=True)
    index = np.arange(count - 2, dtype=np.int32)
    faces = np.stack([index, index + 1, index + 2], axis=1)
    colors = rng.integers(0, 256, (count, 3), dtype=np.uint8)
    return MeshUpdate(step=step, vertices=vertices, faces=faces, vertex_colors=colors, final=final)


def fake_textured_mesh(mesh, step: int, final: bool = False) -> MeshUpdate:
    """A texture job's update on an input mesh (protocol.InputMesh): one vertex per face corner (the input's
    positions), its faces in the input's order, the input's corner UVs (else face j's corners at (j mod 8) / 8),
    and an 8 x 8 texture of grey level ``step``."""
    m = mesh.face_count
    vertices = mesh.vertices[mesh.faces.ravel()]
    faces = np.arange(3 * m, dtype=np.int32).reshape(m, 3)
    if mesh.uvs is not None:
        uvs = mesh.uvs.reshape(-1, 2)
    else:
        uvs = np.repeat(((np.arange(m) % 8 + 0.5) / 8).astype(np.float32), 3)[:, None].repeat(2, axis=1)
    texture = np.full((8, 8, 3), step % 256, dtype=np.uint8)
    return MeshUpdate(step=step, vertices=vertices, faces=faces, uvs=uvs, texture=texture, final=final)


def result_bytes(seed: int, size: int) -> bytes:
    """The fake result file's content: deterministic in (seed, size)."""
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def _fill(path: Path, size: int) -> None:
    """Write up to ``size`` bytes to ``path``; a full disk just ends the file early."""
    try:
        with open(path, "wb") as f:
            for _ in range(0, size, 4096):
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass


def fake_runner(spec, out_dir, cancel=None, resume=False, input_mesh=None):
    """Steps, previews and meshes as ``spec.options`` say (module docstring). With an ``input_mesh`` (texture and
    refine jobs) its meshes are ``fake_textured_mesh`` of it and Done's metrics name its counts."""
    opts = spec.options
    step_s = float(opts.get("fake_step_s", 0.01))
    vertices = int(opts.get("fake_vertices", 4))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / "checkpoint.pt"
    first = int(checkpoint.read_text()) + 1 if resume and checkpoint.exists() else 1
    started = time.perf_counter()
    for step in range(first, spec.steps + 1):
        if cancel is not None and cancel() and not opts.get("fake_ignore_cancel"):
            if spec.checkpoint_every:
                checkpoint.write_text(str(step - 1))
            yield Cancelled(step - 1)
            return
        time.sleep(step_s)
        if step == opts.get("fake_fill_at"):
            _fill(out_dir.parent / "filler.bin", int(opts.get("fake_fill_bytes", 0)))
        if step == opts.get("fake_crash_at"):
            raise RuntimeError(f"fake crash at step {step}")
        if step == opts.get("fake_oom_at"):
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (fake)")
        if step == opts.get("fake_exit_at"):
            os._exit(3)
        elapsed = time.perf_counter() - started
        yield Progress(
            step=step, total=spec.steps, loss=1.0 / step, eta_s=elapsed / step * (spec.steps - step), elapsed_s=elapsed
        )
        if spec.preview_every and step % spec.preview_every == 0:
            rgba = np.full((8, 8, 4), step % 256, dtype=np.uint8)
            yield Preview(step=step, rgba=rgba)
        if spec.mesh_every and step % spec.mesh_every == 0:
            yield _fake_update(step, vertices, spec.seed, input_mesh)
        if spec.checkpoint_every and step % spec.checkpoint_every == 0:
            checkpoint.write_text(str(step))
    yield _fake_update(spec.steps, vertices, spec.seed, input_mesh, final=True)
    path = out_dir / f"asset.{spec.output_format}"
    path.write_bytes(result_bytes(spec.seed, int(opts.get("fake_file_bytes", 1000))))
    metrics = {"fake": True, "resumed_from": first - 1}
    if input_mesh is not None:
        metrics.update(input_vertices=input_mesh.vertex_count, input_faces=input_mesh.face_count)
        metrics["input_uvs"] = input_mesh.uvs is not None
    yield Done(files=[str(path)], seconds=time.perf_counter() - started, metrics=metrics)


def _fake_update(step: int, vertices: int, seed: int, input_mesh, final: bool = False) -> MeshUpdate:
    if input_mesh is not None:
        return fake_textured_mesh(input_mesh, step, final)
    return fake_mesh(step, vertices, seed, final)


FAKE_JOB_FLAGS = ["--steps", "4", "--preview-every", "1", "--option", "fake_step_s=0.01", "--quiet"]  # CLI tests
FAKE_RUNNER = "dreamstill.backend.server.testing:fake_runner"


def fake_spec(steps: int = 5, seed: int = 0, preview_every: int = 0, mesh_every: int = 0, **options):
    """A JobSpec for the fake runner: ``options`` are its fake_* settings (fake_step_s defaults to 0.01)."""
    from dreamstill.protocol import JobSpec

    checkpoint_every = options.pop("checkpoint_every", 0)
    options.setdefault("fake_step_s", 0.01)
    return JobSpec(
        prompt="a red cube",
        steps=steps,
        seed=seed,
        preview_every=preview_every,
        mesh_every=mesh_every,
        checkpoint_every=checkpoint_every,
        options=options,
    )


_SERVE = """
import resource, sys
limit = int(sys.argv[1])
if limit:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
from dreamstill.backend.server.commands import main
sys.exit(main(sys.argv[2:]))
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_server(store: Path, *extra: str, fd_limit: int = 0, log_path: Path | None = None):
    """`dreamstill serve` with the fake runner in a subprocess on a free loopback port: (Popen, address).

    ``fd_limit`` sets RLIMIT_NOFILE (soft = hard) before the server starts; ``extra`` are more serve flags."""
    import subprocess
    import sys

    address = f"tcp://127.0.0.1:{free_port()}"
    argv = [sys.executable, "-c", _SERVE, str(fd_limit), "serve", "--bind", address, "--store", str(store)]
    argv += ["--runner", FAKE_RUNNER, *extra]
    out = open(log_path, "w") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115 - child keeps it
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ)), address


def wait_until_up(address: str, timeout_s: float = 60.0, **client_kwargs):
    """A connected Client once the server at ``address`` answers a ping (ServerUnavailable after timeout_s)."""
    from dreamstill.protocol.client import Client, ServerUnavailable

    deadline = time.monotonic() + timeout_s
    while True:
        client = Client(address, timeout_s=3, **client_kwargs)
        try:
            client.ping()
            return client
        except ServerUnavailable:
            client.close()
            if time.monotonic() > deadline:
                raise
