"""Forward + backward time of the default volume renderer (DensityField, 4 views, 32x32, 48 samples per ray).

    python benchmarks/render_speed.py [--threads 1] [--reps 16] [--size 32] [--views 4] [--samples 48]

Prints min and median wall-clock and process CPU time per render+backward for albedo and lambertian shading. On a
shared machine the CPU-time minimum is the steadier figure (wall time includes waiting for other processes).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dreamstill.backend.fields import Background, DensityField
from dreamstill.backend.render import render, sample_cameras


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 keeps torch's default)")
    ap.add_argument("--reps", type=int, default=16)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--samples", type=int, default=48)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    field = DensityField(rng=torch.Generator().manual_seed(0)).to(dev)
    background = Background().to(dev)
    cams = sample_cameras(args.views, torch.Generator().manual_seed(0)).to(dev)
    print(
        f"device {dev}, threads {torch.get_num_threads()}, {args.views} views {args.size}x{args.size}, "
        f"{args.samples} samples/ray"
    )
    for shading in ("albedo", "lambertian"):
        wall, cpu, evaluated = [], [], 0
        for rep in range(args.reps + 2):
            g = torch.Generator(dev).manual_seed(rep)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            out = render(
                field, cams, args.size, args.size, background, shading=shading, num_samples=args.samples, rng=g
            )
            out.rgb.mean().backward()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if rep >= 2:  # the first calls refresh the occupancy grid and warm the allocator
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            evaluated = out.n_evaluated
        ms = lambda v: f"{1e3 * v:.1f} ms"  # noqa: E731
        print(
            f"{shading:10s} wall min {ms(min(wall))} median {ms(statistics.median(wall))} | "
            f"cpu min {ms(min(cpu))} median {ms(statistics.median(cpu))} | "
            f"{evaluated} of {args.views * args.size * args.size * args.samples} samples evaluated, "
            f"occupied cells {field.occupancy.occupied_fraction:.2f}"
        )


if __name__ == "__main__":
    main()
