"""Instant mode: prompt -> .glb with a trained generator, end to end, the generator's load timed apart.

    python benchmarks/instant_latency.py [--generator builtin] [--device cpu] [--threads 2] [--prompts 8]

For each prompt it times the whole job as `dreamstill generate PROMPT --generator G -o OUT.glb` runs it (text
encoding, one forward pass, marching cubes, texture bake, .glb written, contact sheet) and prints the median and the
slowest, then the same split into stages for one prompt. The load (prior + generator weights, once per process or
server) is printed separately.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

PROMPTS = (
    "a red cube",
    "a green cone next to a yellow torus",
    "a blue sphere",
    "a pink cone on top of a green cylinder",
    "a purple torus",
    "a cyan cube next to a red pyramid",
    "an orange capsule",
    "a yellow sphere on top of a purple cube",
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", default="builtin")
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--prompts", type=int, default=len(PROMPTS))
    ap.add_argument("--mesh-resolution", type=int, default=None, help="default: JobSpec's")
    ap.add_argument("--texture-size", type=int, default=None, help="default: JobSpec's")
    ap.add_argument("--max-faces", type=int, default=None, help="default: JobSpec's (instant: 10,000)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from dreamstill.backend.generators.instant import InstantAsset, load_generator
    from dreamstill.backend.jobs import run_job
    from dreamstill.protocol import Done, Failed, JobSpec

    start = time.perf_counter()
    load_generator(args.generator, args.device)
    load_s = time.perf_counter() - start
    extra = {
        k: v
        for k, v in (
            ("mesh_resolution", args.mesh_resolution),
            ("texture_size", args.texture_size),
            ("max_faces", args.max_faces),
        )
        if v is not None
    }
    out_dir = Path(tempfile.mkdtemp(prefix="instant_"))
    times = []
    for i, prompt in enumerate(PROMPTS[: args.prompts]):
        spec = JobSpec(prompt=prompt, mode="instant", generator=args.generator, **extra)
        start = time.perf_counter()
        events = list(run_job(spec, out_dir / f"w{i}", output_path=out_dir / f"a{i}.glb"))
        times.append(time.perf_counter() - start)
        if not isinstance(events[-1], Done):
            msg = events[-1].message if isinstance(events[-1], Failed) else events[-1]
            print(f"{prompt!r}: {msg}", file=sys.stderr)
            return 1
    spec = JobSpec(prompt=PROMPTS[0], mode="instant", generator=args.generator, **extra)
    t0 = time.perf_counter()
    asset = InstantAsset(spec)
    t1 = time.perf_counter()
    mesh = asset.to_mesh(spec.mesh_grid, spec.texture_size, spec.face_budget)
    t2 = time.perf_counter()
    print(
        f"device {asset.device}, torch threads {torch.get_num_threads()}, mesh resolution {spec.mesh_grid}, "
        f"texture {spec.texture_size}, max faces {spec.face_budget}"
    )
    print(f"load (prior + generator, once per process): {load_s:.2f} s")
    print(
        f"prompt -> .glb over {len(times)} prompts: median {statistics.median(times):.2f} s, slowest {max(times):.2f} s"
    )
    print(
        f"stages for {PROMPTS[0]!r}: text + forward {t1 - t0:.3f} s, mesh + texture {t2 - t1:.3f} s "
        f"({len(mesh.vertices)} vertices)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
