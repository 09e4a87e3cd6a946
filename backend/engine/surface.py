"""Prototype of the surface stage: density field -> SDF field -> geometry refinement -> texture -> clean light mesh.

threestudio's coarse -> geometry -> texture recipe (Magic3D, ProlificDreamer, Fantasia3D) on this project's pieces,
with a VolSDF field (fields/sdf.py) instead of DMTet so the existing volume renderer draws it on a CPU:

  1. density stage   today's AssetOptimizer for ``density_steps`` (the prompt's coarse shape and colour);
  2. SDF init        the density field's solid at its silhouette level, floaters dropped, pits and tunnels narrower
                     than ~2 close_radius closed, as a signed distance fitted by an SDFField (fields/sdf_init.py);
  3. geometry stage  distillation on lit renders of the SDF field (lambertian with the albedo, some textureless) with
                     beta annealed from beta_start to beta_end, plus eikonal, normal-smoothness and orientation
                     regularizers (fields/regularizers.py); geometry and albedo both learn;
  4. texture stage   the geometry frozen, the albedo alone distilled on albedo and lambertian renders;
  5. mesh            d on a grid, its solid repaired as at the SDF init (mesh/voxels.py: the largest part per object
                     of the prompt, tunnels and pits narrower than ~2 close_radius closed, voids filled), marching
                     cubes at level 0 (watertight inside the box), clean-up (mesh/cleanup.py: welding, small holes
                     filled, outward faces), quadric decimation to ``max_faces``, a ``texture_size`` px UV bake of
                     the albedo, export.

One distillation method instance serves every stage (its state, e.g. VSD's LoRA, carries over) unless
``method_options`` asks the surface stages for other settings; each stage passes its own step and length as the
method's (step, total_steps), so timestep schedules restart per stage. The lead will
move this into the refactored engine (one Asset protocol); until then ``run_surface_prototype`` is the entry point.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from dreamstill.protocol import JobSpec

from ..distill.base import DistillInput, surrogate_loss
from ..fields.hashgrid import HashGridConfig
from ..fields.regularizers import eikonal_loss, normal_smoothness_loss, orientation_loss
from ..fields.sdf import SDFField, SDFFieldConfig
from ..fields.sdf_init import SDFInitConfig, sdf_field_from_density, uniform_ball
from ..render import render, sample_light_positions
from ..render.cameras import Cameras, sample_cameras

ProgressFn = Callable[[str, int, int, float], None]


@dataclass
class SurfaceStageConfig:
    """Settings of stages 2-5 (the density stage takes the JobSpec's)."""

    geometry_steps: int = 180
    texture_steps: int = 60
    geometry_lr: float = 3e-4  # Adam on the distance's hash grid and MLP (1e-3 and up: pits and bubbles come back)
    albedo_lr: float = 1e-2
    # Laplace scale of the density (world units), annealed geometrically over the geometry stage. The rendered
    # silhouette sits ~beta ln(sqrt(pi R / 2 beta) / ln 2) outside the zero level of a part of radius R, and SDS
    # matches the silhouette, so a large beta shrinks thin parts: 0.04 -> 0.015 took a torus from IoU 0.83 to 0.61
    beta_start: float = 0.01
    beta_end: float = 0.005
    num_samples: int = 48
    num_importance: int = 16
    textureless_probability: float = 0.25  # share of geometry-stage renders without albedo; the rest lambertian
    texture_lambertian_probability: float = 0.5  # share of texture-stage renders lit; the rest albedo
    # regularizer weights are relative to the SDS surrogate loss (0.5 ||grad||^2 ~ 1e4 per view at guidance 100), so
    # they are large, as threestudio's (eikonal 1000, normal consistency 10000)
    eikonal_weight: float = 100.0
    eikonal_points: int = 4096
    normal_smoothness_weight: float = 2000.0
    normal_smoothness_jitter: float = 0.04  # world units
    normal_smoothness_power: float = 1.0  # 1: total variation (keeps edges); 2: squared (rounds edges over time)
    smoothness_points: int = 2048
    orientation_weight: float = 10.0
    # distillation options for stages 3-4 on top of the JobSpec's (e.g. {"max_step_percent": 0.5}, Magic3D's refine
    # range); empty = the density stage's method instance itself (its state, e.g. VSD's LoRA, carries over)
    method_options: dict = field(default_factory=dict)
    init: SDFInitConfig = field(default_factory=lambda: SDFInitConfig(close_radius=0.12))
    # closing radius of the final SDF grid repair (world units): only tunnels and pits the geometry stage opened;
    # a repaired patch takes the voxel distance transform's blocky surface, so this stays small
    final_close_radius: float = 0.04
    # the distance's hash grid stops at 64 cells per side: the prior sees 32 px renders (~0.07 world units a
    # pixel), and finer levels only gave the distillation room to punch pits and bubbles (see the module docstring)
    sdf: SDFFieldConfig = field(
        default_factory=lambda: SDFFieldConfig(
            grid=HashGridConfig(n_levels=6, max_resolution=64),
            albedo_grid=HashGridConfig(n_levels=6, max_resolution=64),
        )
    )
    mesh_resolution: int = 128
    max_faces: int = 20_000
    texture_size: int = 1024
    max_hole_edges: int = 64


def objects_in_prompt(prompt: str) -> int:
    """How many separate objects the prompt asks for: 2 for a toy-world composition ("... next to ...", "... on top
    of ..."), else 1 (free-form prompts are taken as one object)."""
    from ..priors.builtin.world import parse_prompt

    try:
        return len(parse_prompt(prompt).objects)
    except ValueError:
        return 1


class SurfaceStage:
    """Stages 3 and 4 on an SDF field, sharing the density stage's prior, method, background and rngs."""

    def __init__(self, optimizer, sdf_field: SDFField, config: SurfaceStageConfig):
        self.base, self.field, self.config = optimizer, sdf_field, config
        self.spec: JobSpec = optimizer.spec
        self.prior, self.method = optimizer.prior, optimizer.method
        if config.method_options:
            from ..distill import make_method

            options = {**self.spec.options, **config.method_options}
            self.method = make_method(self.spec.method, self.prior, guidance=self.spec.guidance, **options)
        self.camera_rng, self.noise_rng = optimizer.camera_rng, optimizer.noise_rng
        self.reg_rng = torch.Generator().manual_seed(self.spec.seed + 2)

    # --- one rendered, distilled step ------------------------------------------------------------------------------
    def _cameras(self) -> Cameras:
        s = self.spec
        return sample_cameras(
            s.batch_size, self.camera_rng, s.elevation_range, s.azimuth_range, s.distance_range, s.fov_range
        ).to(self.base.device)

    def _pick(self, p: float, if_true: str, otherwise: str) -> str:
        return if_true if torch.rand((), generator=self.camera_rng).item() < p else otherwise

    def _render(self, cams: Cameras, shading: str):
        lights = None if shading == "albedo" else sample_light_positions(cams, self.camera_rng)
        res = self.base.resolution
        cfg = self.config
        return render(
            self.field,
            cams,
            res,
            res,
            self.base.background,
            shading=shading,
            light_positions=lights,
            num_samples=cfg.num_samples,
            num_importance=cfg.num_importance,
            rng=self.noise_rng,
        )

    def _distill_loss(self, out, cams: Cameras, step: int, total: int) -> torch.Tensor:
        z = self.prior.encode_images(out.rgb.permute(0, 3, 1, 2))
        opacity = F.interpolate(out.opacity.permute(0, 3, 1, 2), size=z.shape[-2:], mode="bilinear")
        result = self.method.gradient(
            DistillInput(
                z=z,
                cond=self.base._text_for(cams),
                uncond=self.base.uncond,
                step=step,
                total_steps=total,
                rng=self.noise_rng,
                camera=cams.as_condition(),
                opacity=opacity.detach(),
            )
        )
        return surrogate_loss(z, result.grad)

    # --- regularizers ----------------------------------------------------------------------------------------------
    def _surface_points(self, out, cams: Cameras, n: int) -> torch.Tensor:
        """Up to n points where opaque rays (opacity > 0.5) meet the surface: o + depth * v."""
        res = self.base.resolution
        origins, dirs = cams.rays(res, res)
        hit = out.opacity[..., 0].detach() > 0.5
        pts = (origins + out.depth.detach() * dirs)[hit]
        if len(pts) > n:
            pts = pts[torch.randperm(len(pts), generator=self.reg_rng)[:n].to(pts.device)]
        return pts

    def _regularizers(self, out, cams: Cameras) -> torch.Tensor:
        cfg, device = self.config, self.base.device
        loss = torch.zeros((), device=device)
        if cfg.eikonal_weight > 0:
            x = uniform_ball(cfg.eikonal_points, self.field.bound, self.reg_rng).to(device)
            loss = loss + cfg.eikonal_weight * eikonal_loss(self.field.sdf_with_gradient(x)[1])
        if cfg.normal_smoothness_weight > 0:
            x = self._surface_points(out, cams, cfg.smoothness_points)
            if len(x):
                smooth = normal_smoothness_loss(
                    self.field.normals, x, cfg.normal_smoothness_jitter, self.reg_rng, cfg.normal_smoothness_power
                )
                loss = loss + cfg.normal_smoothness_weight * smooth
        if cfg.orientation_weight > 0 and out.normal is not None:
            _, dirs = cams.rays(self.base.resolution, self.base.resolution)
            normals = F.normalize(out.normal, dim=-1, eps=1e-12)
            loss = loss + cfg.orientation_weight * orientation_loss(out.opacity[..., 0].detach(), normals, dirs)
        return loss

    # --- the two stages --------------------------------------------------------------------------------------------
    def run_geometry(self, progress: ProgressFn | None = None) -> None:
        cfg = self.config
        params = [{"params": self.field.geometry_parameters(), "lr": cfg.geometry_lr}]
        params.append({"params": self.field.albedo_parameters(), "lr": cfg.albedo_lr})
        opt = torch.optim.Adam(params, betas=(0.9, 0.99), eps=1e-15)
        total = cfg.geometry_steps
        for step in range(total):
            frac = step / max(1, total - 1)
            self.field.set_beta(cfg.beta_start * (cfg.beta_end / cfg.beta_start) ** frac)  # geometric annealing
            cams = self._cameras()
            out = self._render(cams, self._pick(cfg.textureless_probability, "textureless", "lambertian"))
            loss = self._distill_loss(out, cams, step, total) + self._regularizers(out, cams)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if progress is not None:
                progress("geometry", step + 1, total, float(loss.detach()))

    def run_texture(self, progress: ProgressFn | None = None) -> None:
        cfg = self.config
        self.field.freeze_geometry()
        opt = torch.optim.Adam(self.field.albedo_parameters(), lr=cfg.albedo_lr, betas=(0.9, 0.99), eps=1e-15)
        total = cfg.texture_steps
        for step in range(total):
            cams = self._cameras()
            out = self._render(cams, self._pick(cfg.texture_lambertian_probability, "lambertian", "albedo"))
            loss = self._distill_loss(out, cams, step, total)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if progress is not None:
                progress("texture", step + 1, total, float(loss.detach()))


# --- the mesh ----------------------------------------------------------------------------------------------------


def surface_mesh(sdf_field: SDFField, config: SurfaceStageConfig, n_objects: int, warnings: list[str]):
    """Marching cubes of d, clean-up, decimation, bake. Returns (mesh, report of the undecimated and final mesh)."""
    from ..mesh import TextureBakeError, bake_texture, decimate
    from ..mesh.cleanup import clean_mesh, marching_cubes_sdf, sdf_grid, topology, weld
    from ..mesh.extract import albedo_to_uint8, evaluate_points
    from ..mesh.voxels import repair_sdf_grid

    device = next(sdf_field.parameters()).device

    def sdf(points):
        with torch.no_grad():
            return sdf_field.sdf(points.to(device)).float().cpu()

    def albedo(points):
        with torch.no_grad():
            return sdf_field.albedo(points.to(device)).float().cpu()

    bound, res = sdf_field.bound, config.mesh_resolution
    values, changed = repair_sdf_grid(
        sdf_grid(sdf, bound, res), 2 * bound / (res - 1), n_objects, config.final_close_radius
    )
    raw = marching_cubes_sdf(values, bound)
    mesh, report = clean_mesh(raw, keep_components=n_objects, max_hole_edges=config.max_hole_edges)
    report = {"repaired_voxels": changed, "marching_cubes_faces": raw.num_faces, **report}
    try:
        mesh = decimate(mesh, config.max_faces, albedo)
    except ImportError as err:
        warnings.append(str(err))
    mesh = weld(mesh)  # quadric decimation leaves duplicate vertices along collapsed edges
    colors = evaluate_points(albedo, mesh.vertices, 65536, torch.device("cpu"), "albedo")
    mesh = mesh.copy(vertex_colors=albedo_to_uint8(colors))  # the fallback if the bake fails
    report["final"] = topology(mesh).as_dict()
    if config.texture_size:
        try:
            mesh = bake_texture(mesh, albedo, size=config.texture_size)
        except TextureBakeError as err:
            warnings.append(f"texture bake failed, kept vertex colours: {err}")
    return mesh, report


# --- the whole prototype -----------------------------------------------------------------------------------------


def print_progress(every: int = 10) -> ProgressFn:
    """A progress callback that prints stage, step, loss and the stage's elapsed time every ``every`` steps."""
    started: dict[str, float] = {}

    def report(stage: str, step: int, total: int, loss: float) -> None:
        t0 = started.setdefault(stage, time.perf_counter())
        if step % every == 0 or step == total:
            spent = time.perf_counter() - t0
            remaining = spent / step * (total - step)
            print(f"[{stage}] {step}/{total} loss {loss:.4g} {spent:.0f}s (eta {remaining:.0f}s)", file=sys.stderr)

    return report


@contextmanager
def _timed(seconds: dict[str, float], name: str):
    """Record the block's wall time as seconds[name] and its CPU time as seconds[name + "_cpu"]."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    seconds[name], seconds[f"{name}_cpu"] = time.perf_counter() - wall, time.process_time() - cpu


def _density_stage(spec: JobSpec, steps: int, prior, progress: ProgressFn, checkpoint: str | Path | None):
    """Today's AssetOptimizer for ``steps`` steps, or loaded from ``checkpoint`` when that file exists (and saved
    there when it does not)."""
    from .optimize import AssetOptimizer

    base = AssetOptimizer(replace(spec, steps=steps), prior=prior)
    if checkpoint is not None and Path(checkpoint).exists():
        base.load_checkpoint(Path(checkpoint))
    for event in base.run():
        if hasattr(event, "loss"):
            progress("density", event.step, steps, event.loss)
    if checkpoint is not None and not Path(checkpoint).exists():
        base.save_checkpoint(Path(checkpoint))
    return base


def run_surface_prototype(
    spec: JobSpec,
    out_path: str | Path,
    density_steps: int,
    geometry_steps: int,
    texture_steps: int,
    config: SurfaceStageConfig | None = None,
    prior=None,
    progress: ProgressFn | None = None,
    density_checkpoint: str | Path | None = None,
) -> dict:
    """Run stages 1-5 for ``spec`` and write the asset to ``out_path`` (.glb/.obj/.ply). Returns a report: seconds
    per stage, the mesh topology before and after decimation, the files and warnings.

    ``density_checkpoint``: when the file exists, the density stage is loaded from it instead of run (for trying
    surface settings on one density field); otherwise the density stage is run and saved there.
    """
    from ..mesh import export_mesh

    cfg = replace(config or SurfaceStageConfig(), geometry_steps=geometry_steps, texture_steps=texture_steps)
    progress = progress or print_progress()
    seconds: dict[str, float] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    with _timed(seconds, "density"):
        base = _density_stage(spec, density_steps, prior, progress, density_checkpoint)

    n_objects = objects_in_prompt(spec.prompt)
    with _timed(seconds, "init"):
        init = replace(cfg.init, keep_components=n_objects)
        sdf_cfg = replace(cfg.sdf, bound=float(base.field.bound), beta=cfg.beta_start)
        rng = torch.Generator().manual_seed(spec.seed + 3)
        sdf_field, _ = sdf_field_from_density(base.field, sdf_cfg, init, rng, lambda s, n, v: progress("init", s, n, v))
    stage = SurfaceStage(base, sdf_field, cfg)
    with _timed(seconds, "geometry"):
        stage.run_geometry(progress)
    with _timed(seconds, "texture"):
        stage.run_texture(progress)
    warnings: list[str] = []
    with _timed(seconds, "mesh"):
        mesh, report = surface_mesh(sdf_field, cfg, n_objects, warnings)
        files = export_mesh(mesh, out_path)
    seconds["total"] = time.perf_counter() - t0
    seconds["total_cpu"] = time.process_time() - c0  # what a shared machine's load does not inflate
    return {
        "seconds": seconds,
        "mesh": report,
        "files": files,
        "warnings": warnings,
        "objects": n_objects,
        "stage": stage,
        "density": base,
    }
