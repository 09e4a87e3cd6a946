"""Run one toy-world prompt through the real job path (jobs.run_job, as `dreamstill generate` does) and print the
exported asset's geometry against the ground truth, with the surface stage on (the default) or off (--no-surface).

Figures per asset: faces, connected components, Euler number V - E + F of the welded mesh (the truth's: 2 per closed
sphere-like object, 0 for a torus), watertightness, geometry IoU against the true solid (eval.benchmark's rule, best
of 36 turns about Z), the mean distance from the mesh surface to the true surface |phi(x)| and the mean angle between
the mesh's face normals and grad phi (both over area-weighted surface samples, at the best turn about Z), and for
a cube the share of area within 15 degrees of a face direction (at the best turn about Z). Seconds: wall and CPU
(process time: what a loaded machine does not inflate), per stage from the job's Progress events.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD/.pkg python benchmarks/surface_probe.py "a red cube" --out out/probe \
        [--steps 400] [--geometry-steps N] [--texture-steps N] [--no-surface] [--set beta_end=0.004] [--json f]

``--set KEY=VALUE`` tries an engine setting of the surface stage (engine.surface.SurfaceConfig; ``init.KEY`` and
``mesh.KEY`` for its SDF init and mesh settings) for this run only, without changing the defaults.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch


def truth_of(prompt: str):
    """(phi: (N, 3) torch -> (N,) signed distance, expected Euler number or None, the scene)."""
    from dreamstill.backend.priors.builtin import world

    scene = world.parse_prompt(prompt)
    euler = sum(0 if o.shape == "torus" else 2 for o in scene.objects) if not scene.is_composition else None
    return (lambda p: world.scene_sdf(scene, p)), euler, scene


def surface_samples(mesh, n: int, seed: int = 0):
    """(points (n, 3), unit face normals (n, 3)) area-weighted on the mesh."""
    rng = np.random.default_rng(seed)
    a, b, c = (mesh.vertices[mesh.faces[:, k]].astype(np.float64) for k in range(3))
    cross = np.cross(b - a, c - a)
    area = 0.5 * np.linalg.norm(cross, axis=1)
    face = rng.choice(len(area), size=n, p=area / area.sum())
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    pts = a[face] + u[:, None] * (b[face] - a[face]) + v[:, None] * (c[face] - a[face])
    normal = cross[face] / np.maximum(2 * area[face], 1e-30)[:, None]
    return pts, normal


def rotate_z(points: np.ndarray, degrees: float) -> np.ndarray:
    th = math.radians(degrees)
    rot = np.array([[math.cos(th), -math.sin(th), 0.0], [math.sin(th), math.cos(th), 0.0], [0.0, 0.0, 1.0]])
    return points @ rot.T


def distance_and_normal_angle(mesh, phi, n: int = 20000) -> tuple[float, float]:
    """Mean |phi| over surface samples and mean angle (degrees) between face normals and grad phi, best turn about
    Z (5-degree steps, chosen by the distance)."""
    pts, normals = surface_samples(mesh, n)
    best = (math.inf, math.nan)
    for deg in range(0, 360, 5):
        x = torch.tensor(rotate_z(pts, deg), dtype=torch.float32, requires_grad=True)
        d = phi(x)
        (g,) = torch.autograd.grad(d.sum(), x)
        dist = float(d.detach().abs().mean())
        if dist < best[0]:
            gn = torch.nn.functional.normalize(g, dim=-1).numpy()
            cos = np.clip(np.einsum("ij,ij->i", rotate_z(normals, deg), gn), -1, 1)
            best = (dist, float(np.degrees(np.arccos(cos)).mean()))
    return best


def geometry_figures(mesh, prompt: str) -> dict:
    from dreamstill.backend.eval.benchmark import ground_truth_occupancy
    from dreamstill.backend.eval.metrics import geometry_iou, occupancy_from_mesh
    from dreamstill.backend.mesh.cleanup import axis_aligned_area_share, topology, weld

    phi, euler, scene = truth_of(prompt)
    welded = weld(mesh)
    topo = topology(welded).as_dict()
    fig = {**topo, "truth_euler": euler, "euler_ok": None if euler is None else topo["euler"] == euler}
    fig["iou"] = geometry_iou(occupancy_from_mesh(welded.vertices, welded.faces, 48), ground_truth_occupancy(prompt))
    fig["surface_distance"], fig["normal_angle_deg"] = distance_and_normal_angle(welded, phi)
    if not scene.is_composition and scene.objects[0].shape == "cube":
        fig["axis_share_15deg"] = max(axis_aligned_area_share(welded, 15.0, deg) for deg in np.arange(0, 90, 1.0))
    return fig


def surface_config(pairs: list[str]):
    """engine.surface.SurfaceConfig with ``KEY=VALUE`` pairs applied (``init.KEY``, ``mesh.KEY`` for the nested
    settings); an unknown key stops with the known ones."""
    from dreamstill.backend.engine.surface import SurfaceConfig

    cfg = SurfaceConfig()
    for pair in pairs:
        key, _, text = pair.partition("=")
        part, _, name = key.rpartition(".")
        target = getattr(cfg, part) if part in ("init", "mesh") else cfg
        known = {f.name for f in fields(target)}
        if name not in known or (not part and name in ("init", "sdf", "mesh")):
            raise SystemExit(f"--set {key}: unknown; use one of {sorted(known)} (or init.KEY, mesh.KEY)")
        value = json.loads(text) if text not in ("None", "none") else None
        target = replace(target, **{name: value})
        cfg = replace(cfg, **{part: target}) if part else target
    return cfg


def run(spec, out: Path, cfg, density_checkpoint: str | None = None) -> dict:
    """run_job on ``spec`` with the surface stage's engine settings ``cfg``; the events' timings and the Done.
    ``density_checkpoint``: resume from this checkpoint of the density stage's last step when it exists, else save
    it there (the spec's checkpoint_every is the density stage's length)."""
    import shutil

    from dreamstill.backend.engine import optimize
    from dreamstill.backend.jobs import run_job
    from dreamstill.backend.jobs.optimize_job import CHECKPOINT_NAME
    from dreamstill.protocol import Done, Failed, Progress

    resume = bool(density_checkpoint) and Path(density_checkpoint).exists()
    if resume:
        shutil.copyfile(density_checkpoint, out / CHECKPOINT_NAME)

    class ProbeDefaults(optimize.EngineDefaults):  # this run's settings; the defaults stay as they are
        def __init__(self, **kwargs):
            super().__init__(**{"surface": cfg, **kwargs})

    optimize.EngineDefaults = ProbeDefaults
    t0, c0 = time.perf_counter(), time.process_time()
    stage_cpu: dict[str, float] = {}
    last, c_last, done = "start", c0, None
    for event in run_job(spec, out, output_path=out / "asset.glb", resume=resume):
        saved = density_checkpoint and not resume and not Path(density_checkpoint).exists()
        if saved and isinstance(event, Progress) and event.step > spec.stage_plan[0][1]:  # written after its step
            shutil.copyfile(out / CHECKPOINT_NAME, density_checkpoint)
        if isinstance(event, Progress):  # a step's event ends its step; a finishing phase's starts its phase
            now = time.process_time()
            owner = event.phase if event.optimizing else last
            stage_cpu[owner] = stage_cpu.get(owner, 0.0) + now - c_last
            last, c_last = event.phase, now
            if event.optimizing and (event.step % 50 == 0 or event.step == event.total):
                print(f"[{event.phase}] {event.step}/{event.total} loss {event.loss:.4g}", file=sys.stderr)
        elif isinstance(event, Failed):
            raise SystemExit(f"the job failed: {event.code}: {event.message}")
        elif isinstance(event, Done):
            done = event
    stage_cpu[last] = stage_cpu.get(last, 0.0) + time.process_time() - c_last
    seconds = {"total": time.perf_counter() - t0, "total_cpu": time.process_time() - c0}
    seconds.update({f"{k}_cpu": round(v, 1) for k, v in stage_cpu.items()})
    return {"seconds": seconds, "files": done.files, "warnings": done.metrics.get("warnings", [])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("prompt")
    p.add_argument("--out", default="out/surface_probe")
    p.add_argument("--method", default="sds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="JobSpec.steps (default: JobSpec's)")
    p.add_argument("--geometry-steps", type=int, default=0)
    p.add_argument("--texture-steps", type=int, default=0)
    p.add_argument("--no-surface", action="store_true", help="the density stage alone")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="SurfaceConfig setting (JSON)")
    p.add_argument(
        "--density-checkpoint",
        help="resume from this checkpoint of the density stage when it exists, else write it (for trying surface "
        "settings on one density field; the spec then checkpoints every density-stage length of steps)",
    )
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)

    from dreamstill.backend.mesh import load_mesh
    from dreamstill.protocol import JobSpec

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = JobSpec(
        prompt=args.prompt,
        method=args.method,
        seed=args.seed,
        surface=not args.no_surface,
        geometry_steps=args.geometry_steps,
        texture_steps=args.texture_steps,
        **({"steps": args.steps} if args.steps else {}),
    )
    if args.density_checkpoint:
        spec = replace(spec, checkpoint_every=spec.stage_plan[0][1])
    cfg = surface_config(args.set)
    report = run(spec, out, cfg, args.density_checkpoint)
    result = {
        "prompt": args.prompt,
        "method": args.method,
        "seed": args.seed,
        "stages": [list(s) for s in spec.stage_plan],
        "settings": args.set,
        **report,
        **geometry_figures(load_mesh(report["files"][0]), args.prompt),
    }
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
