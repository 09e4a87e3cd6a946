"""Instant mode: prompt -> .glb with a trained generator, end to end, the generator's load timed apart.

    python benchmarks/instant_latency.py [--generator builtin] [--device cpu] [--threads 2] [--prompts 8] [--repeat 1]

For each prompt it times the whole job as `dreamstill generate PROMPT --generator G -o OUT.glb` runs it (text
encoding, one forward pass, marching cubes, decimation, texture bake, .glb written, contact sheet) and prints the
median and the slowest, the CPU seconds of the job (this process and its children, e.g. the unwrap child: on a
shared, loaded machine the wall time inflates and the CPU time does not), and the median time of each phase (from the
job's own Progress events). The load (prior + generator weights, once per process or server) is printed separately.
"""

from __future__ import annotations

import argparse
import os
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


def cpu_seconds() -> float:
    """CPU seconds of this process, its ended children (os.times) and its live ones (psutil, when installed)."""
    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    try:
        import psutil
    except ImportError:
        return total
    for child in psutil.Process().children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def phase_seconds(events, total: float) -> dict[str, float]:
    """Seconds from each Progress phase's announcement to the next one's (the last phase runs to ``total``)."""
    from dreamstill.protocol import Progress

    marks = [(e.phase, e.elapsed_s) for e in events if isinstance(e, Progress)]
    ends = [t for _, t in marks[1:]] + [total]
    return {phase: end - start for (phase, start), end in zip(marks, ends)}


def run_prompts(args, extra: dict, out_dir: Path):
    """(wall seconds, CPU seconds, phase seconds) of every job; exits on a failed job."""
    from dreamstill.backend.jobs import run_job
    from dreamstill.protocol import Done, Failed, JobSpec

    rows = []
    for r in range(args.repeat):
        for i, prompt in enumerate(PROMPTS[: args.prompts]):
            spec = JobSpec(prompt=prompt, mode="instant", generator=args.generator, **extra)
            c0, t0 = cpu_seconds(), time.perf_counter()
            events = list(run_job(spec, out_dir / f"w{r}_{i}", output_path=out_dir / f"a{r}_{i}.glb"))
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
            if not isinstance(events[-1], Done):
                msg = events[-1].message if isinstance(events[-1], Failed) else events[-1]
                raise SystemExit(f"{prompt!r}: {msg}")
            rows.append((wall, cpu, phase_seconds(events, wall)))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", default="builtin")
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--prompts", type=int, default=len(PROMPTS))
    ap.add_argument("--repeat", type=int, default=1, help="passes over the prompts")
    ap.add_argument("--mesh-resolution", type=int, default=None, help="default: JobSpec's")
    ap.add_argument(
        "--texture-size", type=int, default=None, help="default: JobSpec's (an instant draft bakes at most 512)"
    )
    ap.add_argument("--max-faces", type=int, default=None, help="default: JobSpec's (an instant draft: 5,000)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from dreamstill.backend.generators.instant import load_generator
    from dreamstill.protocol import JobSpec

    start = time.perf_counter()
    load_generator(args.generator, args.device)
    load_s = time.perf_counter() - start
    names = (
        ("mesh_resolution", args.mesh_resolution),
        ("texture_size", args.texture_size),
        ("max_faces", args.max_faces),
    )
    extra = {k: v for k, v in names if v is not None}
    rows = run_prompts(args, extra, Path(tempfile.mkdtemp(prefix="instant_")))
    spec = JobSpec(prompt=PROMPTS[0], mode="instant", generator=args.generator, **extra)
    walls, cpus = [w for w, _, _ in rows], [c for _, c, _ in rows]
    print(
        f"torch threads {torch.get_num_threads()}, mesh resolution {spec.mesh_grid}, texture {spec.bake_size} px, "
        f"max faces {spec.face_budget}"
    )
    print(f"load (prior + generator, once per process): {load_s:.2f} s")
    print(f"prompt -> .glb over {len(rows)} jobs: median {statistics.median(walls):.2f} s, slowest {max(walls):.2f} s")
    print(f"CPU seconds per job (process + children): median {statistics.median(cpus):.2f}, most {max(cpus):.2f}")
    phases = list(rows[0][2])
    print("median per phase: " + ", ".join(f"{p} {statistics.median(r[2][p] for r in rows):.3f} s" for p in phases))
    return 0


if __name__ == "__main__":
    sys.exit(main())
