"""Run the surface-stage prototype (backend/engine/surface.py) on toy-world prompts and print its geometry against the
ground truth, beside today's density-only asset (``--baseline``: AssetOptimizer for the JobSpec's steps, then
today's mesh extraction, as ``dreamstill generate`` does).

Figures per asset: faces, connected components, Euler number V - E + F of the welded mesh (the truth's: 2 per closed
sphere-like object, 0 for a torus), watertightness, geometry IoU against the true solid (eval.benchmark's rule, best
of 36 turns about Z), the mean distance from the mesh surface to the true surface |phi(x)| and the mean angle between
the mesh's face normals and grad phi (both over area-weighted surface samples, at the best turn about Z), and for
a cube the share of area within 15 degrees of a face direction (at the best turn about Z). Seconds per stage too.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD/.pkg python benchmarks/surface_probe.py "a red cube" --out out/probe \
        --density-steps 220 --geometry-steps 180 --texture-steps 60 [--baseline] [--set beta_end=0.01] [--json f]
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


def run_baseline(spec, out: Path) -> dict:
    """Today's default: the density field for spec.steps, then extract_mesh with the spec's texture and budget."""
    from dreamstill.backend.engine.optimize import AssetOptimizer
    from dreamstill.backend.engine.surface import print_progress
    from dreamstill.backend.mesh import export_mesh

    progress = print_progress(50)
    t0, c0 = time.perf_counter(), time.process_time()
    opt = AssetOptimizer(spec)
    for event in opt.run():
        if hasattr(event, "loss"):
            progress("baseline", event.step, spec.steps, event.loss)
    t_steps = time.perf_counter() - t0
    mesh = opt.extract_mesh()
    path = out / "baseline.glb"
    export_mesh(mesh, path)
    seconds = {"density": t_steps, "total": time.perf_counter() - t0, "total_cpu": time.process_time() - c0}
    return {"mesh": mesh, "seconds": seconds, "file": str(path)}


def parse_sets(pairs: list[str]) -> dict:
    from dreamstill.backend.engine.surface import SurfaceStageConfig

    known = {f.name: f.type for f in fields(SurfaceStageConfig)}
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in known or key in ("init", "sdf"):
            raise SystemExit(f"--set {key}: unknown; use one of {sorted(k for k in known if k not in ('init', 'sdf'))}")
        out[key] = float(value) if "." in value or "e" in value else int(value)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("prompt")
    p.add_argument("--out", default="out/surface_probe")
    p.add_argument("--method", default="sds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--density-steps", type=int, default=220)
    p.add_argument("--geometry-steps", type=int, default=180)
    p.add_argument("--texture-steps", type=int, default=60)
    p.add_argument("--baseline", action="store_true", help="also run today's default (JobSpec steps) for comparison")
    p.add_argument("--baseline-glb", help="score this existing density-only asset as the baseline instead")
    p.add_argument("--baseline-only", action="store_true", help="with --baseline-glb: score it and stop")
    p.add_argument("--density-checkpoint", help="reuse (or write) the density stage's checkpoint")
    p.add_argument("--close-radius", type=float, help="SDF init closing radius (world units)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="SurfaceStageConfig field")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)

    from dreamstill.backend.engine.surface import SurfaceStageConfig, run_surface_prototype
    from dreamstill.protocol import JobSpec

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = JobSpec(prompt=args.prompt, method=args.method, seed=args.seed).validate()
    result = {"prompt": args.prompt, "method": args.method, "seed": args.seed}
    if args.baseline_glb:
        from dreamstill.backend.mesh import load_mesh

        result["baseline"] = geometry_figures(load_mesh(args.baseline_glb), args.prompt)
        print("baseline", json.dumps(result["baseline"]), file=sys.stderr)
        if args.baseline_only:
            return finish(result, args.json)
    if args.baseline:
        base = run_baseline(spec, out)
        result["baseline"] = {"seconds": base["seconds"], **geometry_figures(base["mesh"], args.prompt)}
        print("baseline", json.dumps(result["baseline"]), file=sys.stderr)

    cfg = replace(SurfaceStageConfig(), **parse_sets(args.set))
    if args.close_radius is not None:
        cfg = replace(cfg, init=replace(cfg.init, close_radius=args.close_radius))
    slug = args.prompt.replace(" ", "_")
    report = run_surface_prototype(
        spec,
        out / f"{slug}.glb",
        args.density_steps,
        args.geometry_steps,
        args.texture_steps,
        cfg,
        density_checkpoint=args.density_checkpoint,
    )
    from dreamstill.backend.mesh import load_mesh

    exported = load_mesh(report["files"][0])
    result["surface"] = {
        "steps": [args.density_steps, args.geometry_steps, args.texture_steps],
        "settings": {k: v for k, v in vars(cfg).items() if k not in ("init", "sdf")},
        "seconds": report["seconds"],
        "mesh_report": report["mesh"],
        "warnings": report["warnings"],
        **geometry_figures(exported, args.prompt),
    }
    return finish(result, args.json)


def finish(result: dict, path: str | None) -> int:
    """Print the figures and keep them in ``path`` when given."""
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if path:
        Path(path).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
