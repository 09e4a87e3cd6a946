"""Protocol benchmark: latency from submit to the first progress event, and mesh-message throughput on loopback.

    python benchmarks/protocol_bench.py [--vertices 1000000] [--repeats 5]

1. wire: a mesh message of N vertices (float32 positions, uint8 colours) and 2N faces (int32) sent DEALER -> ROUTER
   and ROUTER -> DEALER over tcp://127.0.0.1, timed from encode() to a fully checked decode() on the other side
   (the face-index scan included). Reports median seconds and MB/s.
2. server: a real Server with the fake runner (backend/server/testing.py, no torch): time from Client.submit() to
   the first Progress event with a warm worker (median), the same for the very first job (worker spawn included),
   and the time from submit to receiving a job's final N-vertex mesh through worker -> server -> client.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import zmq

from dreamstill.backend.server import Server, ServerConfig
from dreamstill.backend.server.testing import fake_mesh
from dreamstill.protocol import JobSpec, MeshUpdate, Progress
from dreamstill.protocol.client import Client
from dreamstill.protocol.messages import decode, encode

RUNNER = "dreamstill.backend.server.testing:fake_runner"


def wire(vertices: int, repeats: int) -> None:
    mesh = fake_mesh(1, vertices)
    mesh.faces = np.concatenate([mesh.faces, mesh.faces[:, ::-1]])  # ~2 faces per vertex, like a closed surface
    size = sum(np.asarray(f).nbytes if not isinstance(f, bytes) else len(f) for f in encode(mesh, job_id="j"))
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    for s in (router, dealer):
        s.setsockopt(zmq.LINGER, 1000)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer.connect(f"tcp://127.0.0.1:{port}")
    dealer.send(b"hello")
    ident, _ = router.recv_multipart()
    up, down = [], []
    for _ in range(repeats + 1):  # the first round warms up buffers
        t = time.perf_counter()
        dealer.send_multipart(encode(mesh, job_id="j"), copy=False)
        got = decode(router.recv_multipart(copy=False)[1:])
        up.append(time.perf_counter() - t)
        assert isinstance(got.payload, MeshUpdate) and len(got.payload.vertices) == vertices
        t = time.perf_counter()
        router.send_multipart([ident, *encode(mesh, job_id="j")], copy=False)
        got = decode(dealer.recv_multipart(copy=False))
        down.append(time.perf_counter() - t)
    ctx.destroy(1000)
    for name, times in (("client -> server", up[1:]), ("server -> client", down[1:])):
        med = statistics.median(times)
        print(
            f"wire  {vertices:>9,d}-vertex mesh ({size / 1e6:.1f} MB) {name}: median {med * 1e3:7.1f} ms  "
            f"{size / med / 1e9:5.2f} GB/s  (min {min(times) * 1e3:.1f} ms)"
        )


def server(vertices: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as store:
        config = ServerConfig(progress_interval_s=0, preview_interval_s=0, mesh_interval_s=0)
        t0 = time.perf_counter()
        with Server("tcp://127.0.0.1:*", store_dir=store, runner=RUNNER, config=config) as srv:
            with Client(srv.address, timeout_s=60) as client:

                def first_progress(spec):
                    t = time.perf_counter()
                    job = client.submit(spec)
                    for event in client.events(job, timeout_s=120):
                        if isinstance(event, Progress):
                            first = time.perf_counter() - t
                            break
                    for _ in client.events(job, timeout_s=120):
                        pass
                    return first

                quick = JobSpec(prompt="a red cube", steps=1, preview_every=0, options={"fake_step_s": 0.0})
                cold = first_progress(quick)
                print(
                    f"server  submit -> first progress, first job (worker start included): {cold * 1e3:8.1f} ms"
                    f"  ({time.perf_counter() - t0:.2f} s from server start)"
                )
                warm = [first_progress(quick) for _ in range(repeats)]
                print(
                    f"server  submit -> first progress, warm worker: median {statistics.median(warm) * 1e3:.2f} ms"
                    f"  (min {min(warm) * 1e3:.2f}, n={repeats})"
                )
                big = JobSpec(
                    prompt="a red cube",
                    steps=1,
                    preview_every=0,
                    options={"fake_step_s": 0.0, "fake_vertices": vertices},
                )
                times = []
                for _ in range(max(1, repeats // 2)):
                    t = time.perf_counter()
                    job = client.submit(big)
                    for event in client.events(job, timeout_s=300):
                        if isinstance(event, MeshUpdate):
                            times.append(time.perf_counter() - t)
                print(
                    f"server  submit -> final {vertices:,d}-vertex mesh at the client (generation in the worker "
                    f"included): median {statistics.median(times) * 1e3:.1f} ms"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vertices", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    wire(args.vertices, args.repeats)
    server(args.vertices, args.repeats)


if __name__ == "__main__":
    main()
