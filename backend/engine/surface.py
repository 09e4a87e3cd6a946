"""The surface stage of per-prompt optimization: after the density steps the asset continues as a signed distance
(fields/sdf.py, VolSDF), first refining its geometry, then its texture; threestudio's coarse -> geometry -> texture
recipe (Magic3D, ProlificDreamer, Fantasia3D) on this project's volume renderer, so it runs on a CPU.

The stages are JobSpec.stage_plan: ("density", d), ("geometry", g), ("texture", x) steps. AssetOptimizer runs one
step loop over all of them; entering a stage swaps what the loop uses (``SurfaceStages.enter``):

  geometry  SDF init: the solid the JobSpec's cameras see of the density field (all but the space some camera sees
            in front of the depth where its rendered opacity reaches SDFInitConfig.carve_opacity), floaters dropped,
            pits and tunnels narrower than ~2 close_radius closed (each object of "X next to Y" on its own),
            cavities filled, as a signed distance fitted by an SDFField (fields/sdf_init.py); a density stage with
            no surface starts the SDF from a ball instead, with a warning.
            Then the optimizer: Adam on the distance (geometry_lr) and the albedo (albedo_lr); the shading: lit
            renders, ``textureless_probability`` of them without albedo; renders with importance samples (the
            VolSDF surface is thin); the regularizers, each relative to the distillation's surrogate loss:
                eikonal            w_e E_x[(||grad d(x)|| - 1)^2], x uniform in the scene ball
                normal smoothness  w_n E_x[||n(x) - n(x + delta)||^p], x on the rendered surface, delta ~ N(0, s^2 I)
                orientation        w_o sum_r o_r max(0, n_r . v_r)^2 / #(o_r > 0), per rendered ray r
            and per step beta, the Laplace scale of the VolSDF density, annealed geometrically from beta_start to
            beta_end: beta_k = beta_start (beta_end / beta_start)^(k / (g - 1)).
  texture   the distance frozen; Adam on the albedo alone; renders half lit, half albedo; no regularizers.

A field that is a signed distance already (``is_trainable_sdf``: an SDF generator's draft in test-time refinement,
generators.refine.RefinableSDFField) enters the geometry stage as it is (``SurfaceStages.enter_surface``): no SDF
init, the rest of the geometry and texture stages as above.

The distillation method's instance carries over (its state, e.g. VSD's LoRA, goes on learning); each stage passes
the method its own (step, length), so timestep schedules restart per stage as in threestudio's separate stage runs.
The mesh of an SDF asset is engine/surface_mesh.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from dreamstill.protocol import JobSpec

from ..fields.hashgrid import HashGridConfig
from ..fields.regularizers import eikonal_loss, normal_smoothness_loss, orientation_loss
from ..fields.sdf import SDFField, SDFFieldConfig, geometric_anneal
from ..fields.sdf_init import SDFInitConfig, sdf_field_from_density, uniform_ball
from ..mesh.voxels import orbit_viewpoints
from ..render import RenderSettings
from ..render.cameras import Cameras
from .step import DistillViews, ShadingSchedule
from .surface_mesh import SurfaceMeshSettings


@dataclass
class SurfaceConfig:
    """The engine's settings of the geometry and texture stages (the JobSpec gives their steps)."""

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
    # the method's timesteps in the geometry and texture stages are capped at max_step_percent T (its own schedule
    # below that): the refine stages of Magic3D and Fantasia3D in threestudio sample t in [0.02, 0.5]
    max_step_percent: float = 1.0
    init: SDFInitConfig = field(default_factory=lambda: SDFInitConfig(close_radius=0.12))
    # the distance's hash grid stops at 64 cells per side: the prior sees 32 px renders (~0.07 world units a
    # pixel), and finer levels only gave the distillation room to punch pits and bubbles
    sdf: SDFFieldConfig = field(
        default_factory=lambda: SDFFieldConfig(
            grid=HashGridConfig(n_levels=6, max_resolution=64),
            albedo_grid=HashGridConfig(n_levels=6, max_resolution=64),
        )
    )
    mesh: SurfaceMeshSettings = field(default_factory=SurfaceMeshSettings)
    output_samples: int = 64  # samples per ray of previews and contact sheets (plus as many importance samples)
    carve: bool = True  # the SDF init's solid is what the distillation's cameras see (mesh.voxels.carve_seen_space)


def objects_in_prompt(prompt: str) -> int | None:
    """How many separate objects the prompt asks for: 1 or 2 for a toy-world prompt (a composition "... next to
    ...", "... on top of ..." has 2); None for a free-form prompt (then every large part is kept)."""
    from ..priors.builtin.world import parse_prompt

    try:
        return len(parse_prompt(prompt).objects)
    except ValueError:
        return None


def objects_apart_in_prompt(prompt: str) -> int:
    """How many of the prompt's objects stand apart, each its own part that no closing may join: 2 for a toy-world
    "X next to Y" (a gap between them); 1 otherwise (one object, "X on top of Y" resting on each other, a free-form
    prompt)."""
    from ..priors.builtin.world import parse_prompt

    try:
        scene = parse_prompt(prompt)
    except ValueError:
        return 1
    return len(scene.objects) if scene.relation == "next to" else 1


# What the geometry and texture stages use of a field beyond forward(x) -> (density, albedo) and bound
# (fields.sdf.SDFField's interface).
SDF_METHODS = (
    "sdf",
    "sdf_with_gradient",
    "normals",
    "set_beta",
    "geometry_parameters",
    "albedo_parameters",
    "freeze_geometry",
)


def is_trainable_sdf(field) -> bool:
    """Whether ``field`` offers the surface stage's interface (SDF_METHODS): an SDFField, or a generator's SDF
    draft made trainable (generators.refine.RefinableSDFField)."""
    return isinstance(field, SDFField) or all(callable(getattr(field, name, None)) for name in SDF_METHODS)


def _check_stage(name: str) -> None:
    if name not in ("geometry", "texture"):
        raise ValueError(f"the surface stage has no stage {name!r}; its stages are geometry and texture")


# --- regularizers (engine.step.Regularizer: DistillViews -> loss) --------------------------------------------------


def rendered_rays(views: DistillViews):
    """(RenderOutput, ray origins (B, H, W, 3), unit directions (B, H, W, 3)) per view group of the step."""
    start = 0
    for out in views.outputs:
        b, h, w = out.opacity.shape[:3]
        cams = Cameras(*views.camera[start : start + b].unbind(-1))
        start += b
        origins, dirs = cams.rays(h, w)
        yield out, origins, dirs


def surface_hits(views: DistillViews, points: int, rng: torch.Generator) -> torch.Tensor:
    """Up to ``points`` points (N, 3), drawn with ``rng``, where the step's opaque rays (opacity > 0.5) meet the
    surface, x = o + depth * v (detached)."""
    found = []
    for out, origins, dirs in rendered_rays(views):
        hit = out.opacity[..., 0].detach() > 0.5
        found.append((origins + out.depth.detach() * dirs)[hit])
    x = torch.cat(found)
    if len(x) > points:
        x = x[torch.randperm(len(x), generator=rng)[:points].to(x.device)]
    return x


@dataclass
class Eikonal:
    """weight * E[(||grad d(x)|| - 1)^2] at ``points`` points uniform in the field's ball."""

    sdf_field: SDFField
    weight: float
    points: int
    rng: torch.Generator

    def __call__(self, views: DistillViews) -> torch.Tensor:
        x = uniform_ball(self.points, self.sdf_field.bound, self.rng).to(views.z.device)
        return self.weight * eikonal_loss(self.sdf_field.sdf_with_gradient(x)[1])


@dataclass
class NormalSmoothness:
    """weight * E||n(x) - n(x + delta)||^power at up to ``points`` points where opaque rays (opacity > 0.5) meet the
    surface, x = o + depth * v."""

    sdf_field: SDFField
    weight: float
    jitter: float
    power: float
    points: int
    rng: torch.Generator

    def __call__(self, views: DistillViews) -> torch.Tensor:
        x = surface_hits(views, self.points, self.rng)
        if len(x) == 0:
            return views.z.new_zeros(())
        loss = normal_smoothness_loss(self.sdf_field.normals, x, self.jitter, self.rng, self.power)
        return self.weight * loss


@dataclass
class Orientation:
    """weight * sum_r o_r max(0, n_r . v_r)^2 / #(o_r > 0) over the rendered rays (mean over view groups)."""

    weight: float

    def __call__(self, views: DistillViews) -> torch.Tensor:
        terms = [
            orientation_loss(out.opacity[..., 0].detach(), F.normalize(out.normal, dim=-1, eps=1e-12), dirs)
            for out, _, dirs in rendered_rays(views)
            if out.normal is not None
        ]
        return self.weight * torch.stack(terms).mean() if terms else views.z.new_zeros(())


# --- the stages ------------------------------------------------------------------------------------------------


class SurfaceStages:
    """What the geometry and texture stages swap into an AssetOptimizer, and the per-step beta schedule.

    Random draws (SDF init, regularizer points) come from its own ``rng``, seeded from the JobSpec's seed and saved
    in checkpoints, so the density stage's draws are the same with the surface stage on or off."""

    def __init__(self, config: SurfaceConfig, spec: JobSpec):
        self.config = config
        self.objects = objects_in_prompt(spec.prompt)
        self.apart = objects_apart_in_prompt(spec.prompt)
        self.rng = torch.Generator().manual_seed(spec.seed + 2)
        self.mesh_settings = config.mesh.for_objects(self.objects, self.apart)
        # the cameras of the distillation at their nearest: the SDF init's solid is what they see of the density
        self.viewpoints = (
            orbit_viewpoints(spec.elevation_range, spec.distance_range[0], spec.azimuth_range) if config.carve else None
        )

    def enter(self, opt, name: str, fit: bool) -> None:
        """Swap stage ``name``'s field, optimizer, shading, render settings and regularizers into ``opt``
        (an AssetOptimizer). ``fit``: start the SDF from the density field (False: an unfitted SDF that a
        checkpoint is about to overwrite)."""
        _check_stage(name)
        if not is_trainable_sdf(opt.field):
            self._enter_geometry(opt, self._sdf_field(opt, fit))
        if name == "texture":
            self._enter_texture(opt)

    def enter_surface(self, opt, sdf_field, name: str = "geometry", geometry_lr: float | None = None) -> None:
        """Swap stage ``name`` into ``opt`` as ``enter`` does, on the given signed-distance field (anything
        ``is_trainable_sdf``, e.g. generators.refine.RefinableSDFField, on opt's device) instead of one fitted to
        the density field: the refinement of an SDF generator's draft starts here. ``geometry_lr`` replaces the
        config's for the distance's parameter group (None: SurfaceConfig.geometry_lr)."""
        _check_stage(name)
        if not is_trainable_sdf(sdf_field):
            raise TypeError(f"{type(sdf_field).__name__} is not a trainable signed-distance field ({SDF_METHODS})")
        self._enter_geometry(opt, sdf_field, geometry_lr)
        if name == "texture":
            self._enter_texture(opt)

    def before_step(self, opt, name: str, step: int, length: int) -> None:
        """Per-step schedule: beta_k of the geometry stage (module docstring)."""
        if name == "geometry":
            cfg = self.config
            opt.field.set_beta(geometric_anneal(cfg.beta_start, cfg.beta_end, step / max(1, length - 1)))

    def _sdf_field(self, opt, fit: bool) -> SDFField:
        from ..mesh import EmptyFieldError

        cfg = self.config
        sdf_config = replace(cfg.sdf, bound=float(opt.field.bound), beta=cfg.beta_start)
        if fit:
            init = replace(cfg.init, keep_components=self.objects, keep_apart=self.apart)
            try:
                return sdf_field_from_density(opt.field, sdf_config, init, self.rng, viewpoints=self.viewpoints)[0]
            except EmptyFieldError as err:
                opt.warnings.append(f"the surface stage started from a ball: {err}")
        return SDFField(sdf_config, rng=self.rng).to(opt.device)

    def _enter_geometry(self, opt, sdf_field, geometry_lr: float | None = None) -> None:
        cfg = self.config
        opt.field = sdf_field
        params = [
            {"params": sdf_field.geometry_parameters(), "lr": geometry_lr or cfg.geometry_lr},
            {"params": sdf_field.albedo_parameters(), "lr": cfg.albedo_lr},
        ]
        opt.optimizer = torch.optim.Adam(params, betas=(0.9, 0.99), eps=1e-15)
        opt.method.config.schedule = replace(opt.method.config.schedule, ceiling=cfg.max_step_percent)
        opt.distill.shading = ShadingSchedule(
            albedo_until=0.0,
            lambertian_probability=1.0 - cfg.textureless_probability,
            textureless_probability=cfg.textureless_probability,
        )
        opt.distill.render_settings = RenderSettings(num_samples=cfg.num_samples, num_importance=cfg.num_importance)
        opt.output_settings = RenderSettings(num_samples=cfg.output_samples, num_importance=cfg.output_samples)
        opt.regularizers = [
            Eikonal(sdf_field, cfg.eikonal_weight, cfg.eikonal_points, self.rng),
            NormalSmoothness(
                sdf_field,
                cfg.normal_smoothness_weight,
                cfg.normal_smoothness_jitter,
                cfg.normal_smoothness_power,
                cfg.smoothness_points,
                self.rng,
            ),
            Orientation(cfg.orientation_weight),
        ]
        opt.regularizers = [r for r in opt.regularizers if r.weight > 0]

    def _enter_texture(self, opt) -> None:
        cfg = self.config
        opt.field.freeze_geometry()
        opt.optimizer = torch.optim.Adam(opt.field.albedo_parameters(), lr=cfg.albedo_lr, betas=(0.9, 0.99), eps=1e-15)
        opt.distill.shading = ShadingSchedule(
            albedo_until=0.0, lambertian_probability=cfg.texture_lambertian_probability
        )
        opt.regularizers = []

    def state_dict(self) -> dict:
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.set_state(state["rng"])
