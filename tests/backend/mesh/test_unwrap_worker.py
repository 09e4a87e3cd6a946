"""The long-lived unwrap child: answers request after request with the in-process unwrap's result, and a crash
fails one request only (the next one gets a new child)."""

import numpy as np
import pytest
import trimesh

from dreamstill.backend.mesh import texture as tex
from dreamstill.backend.mesh.unwrap_worker import WORKER_SCRIPT, UnwrapChildDied, UnwrapWorker

pytest.importorskip("xatlas")

# A child that segfaults when asked to unwrap a mesh of exactly 3 vertices, and serves every other request.
CRASH_ON_THREE = WORKER_SCRIPT.replace(
    "    atlas = xatlas.Atlas()\n",
    "    if len(d['positions']) == 3:\n        import os, signal\n        os.kill(os.getpid(), signal.SIGSEGV)\n"
    "    atlas = xatlas.Atlas()\n",
)
OPTS = dict(max_iterations=np.int64(1), max_chart_area=np.float64(0.0), resolution=np.int64(64), padding=np.int64(2))


@pytest.fixture(scope="module")
def sphere():
    mesh = trimesh.creation.icosphere(subdivisions=2)
    return np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.uint32)


def test_one_child_answers_every_request_as_the_in_process_unwrap(sphere):
    positions, indices = sphere
    worker = UnwrapWorker(WORKER_SCRIPT)
    try:
        first = worker.unwrap(positions, indices, OPTS)
        pid = worker.proc.pid
        second = worker.unwrap(positions, indices, OPTS)
        assert worker.proc.pid == pid  # the same child, still alive
        here = tex._unwrap_here(positions, indices, OPTS)
        for a, b, c in zip(first, second, here):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)
    finally:
        worker.close()


def test_a_crash_fails_that_request_and_the_next_gets_a_new_child(sphere):
    positions, indices = sphere
    worker = UnwrapWorker(CRASH_ON_THREE)
    try:
        worker.unwrap(positions, indices, OPTS)
        pid = worker.proc.pid
        triangle = np.eye(3, dtype=np.float32)
        with pytest.raises(UnwrapChildDied) as died:
            worker.unwrap(triangle, np.array([[0, 1, 2]], np.uint32), OPTS)
        assert died.value.returncode == -11  # SIGSEGV
        vmapping, faces, uvs = worker.unwrap(positions, indices, OPTS)
        assert worker.proc.pid != pid and len(faces) == len(indices) and uvs.min() >= 0 and uvs.max() <= 1
    finally:
        worker.close()


def test_a_missing_xatlas_is_exit_code_3():
    worker = UnwrapWorker("import sys; sys.exit(3)")
    with pytest.raises(UnwrapChildDied) as died:
        worker.unwrap(np.eye(3, dtype=np.float32), np.array([[0, 1, 2]], np.uint32), OPTS)
    assert died.value.returncode == 3


def test_prestart_starts_the_child_that_then_serves_the_first_request(sphere):
    from dreamstill.backend.mesh import unwrap_worker

    script = WORKER_SCRIPT + "\n# a script of its own, so this test has a worker of its own\n"
    try:
        unwrap_worker.prestart(script)
        started = unwrap_worker.worker(script).proc
        assert started is not None and started.poll() is None
        unwrap_worker.worker(script).unwrap(*sphere, OPTS)
        assert unwrap_worker.worker(script).proc is started
    finally:
        unwrap_worker.worker(script).close()
        unwrap_worker._WORKERS.pop(script, None)


def test_close_ends_the_child(sphere):
    worker = UnwrapWorker(WORKER_SCRIPT)
    worker.unwrap(*sphere, OPTS)
    proc = worker.proc
    worker.close()
    assert proc.returncode == 0 and worker.proc is None
