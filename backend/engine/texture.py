"""Distillation on a given mesh: texture it (geometry kept exactly) or refine it (shape and appearance from it).

Both modes start alike (TEXTure's and Fantasia3D's texture stages, threestudio's ``shape_init: mesh``):

    x = k (v - c)                         the mesh moved into the field's ball (fields/mesh_sdf.MeshFrame)
    d_0 = signed distance grid of x       fields/mesh_sdf.mesh_sdf_grid (winding votes, exact near the surface)
    theta_d <- argmin E|d_theta - d_0| + lambda_eik E(||grad d_theta|| - 1)^2      fields/sdf_init.fit_sdf_steps

and then run the per-prompt loop of AssetOptimizer (engine/optimize.py, one DistillStep per step) on the SDF field
(VolSDF density, fields/sdf.py) in place of its density field:

- texture: the distance is frozen (``freeze_geometry``) and only the albedo's hash grid and MLP learn, on albedo and
  lambertian renders. The result is the input mesh itself, its vertices and faces untouched, with the albedo baked
  into its own UVs (mesh/texture.bake_corner_uvs; an xatlas unwrap when it has none), mapped by the inverse frame.
- refine: distance and albedo learn (geometry at the surface stage's small learning rate), with the eikonal term
  and a pull toward the mesh's shape, ``keep_shape`` the JobSpec's setting s in [0, 1]:

      L_pull = lambda_pull(s) E_x |d_theta(x) - d_0(x)|,   lambda_pull(s) = pull_weight s / (1 - s + 1e-2),

  x half near the mesh's surface and half uniform in the ball: s = 0 lets the prompt move the surface freely, and
  the weight grows without bound as s -> 1. L1, not squared: its pull does not fade as the surface nears d_0 (a
  squared pull at s = 0.9 let 150 SDS steps shrink a cube by 17 %; L1 holds it within 1 %). The surface stage's
  total variation of the normals, lambda_n E ||n(x) - n(x + delta)|| (delta ~ N(0, jitter^2 I), x near the mesh's
  surface), keeps the prompt's gradients from roughening the faces (without it 150 steps leave a cube's sides
  bumpy). The result is marching cubes of d_theta (engine/texture_mesh.py), in the input mesh's frame.

Every random draw is seeded from the JobSpec's seed (the fit's points and the field's initial weights from seed + 3,
the regularizers' points from seed + 2), so a spec and a mesh reproduce their asset.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field, replace

import torch

from dreamstill.protocol import InputMesh, JobSpec

from ..fields.hashgrid import HashGridConfig
from ..fields.mesh_sdf import MeshSDFConfig, mesh_sdf_grid, normalising_frame
from ..fields.regularizers import eikonal_loss, normal_smoothness_loss
from ..fields.sdf import SDFField, SDFFieldConfig
from ..fields.sdf_init import SDFGrid, SDFInitConfig, fit_sdf_steps, near_surface_points, uniform_ball
from ..mesh.types import Mesh
from ..render import RenderSettings
from .optimize import AssetOptimizer, EngineDefaults
from .step import DistillViews, ShadingSchedule
from .texture_mesh import live_mesh, mesh_phase_names, mesh_phases


@dataclass
class MeshStageConfig:
    """Settings of texture and refine jobs that the JobSpec does not carry."""

    half_extent: float = 0.5  # the mesh's longest side becomes 2 half_extent (the toy world's unit-cube scale)
    grid: MeshSDFConfig = field(default_factory=MeshSDFConfig)
    # 200 steps of 4096 points fit a cube or a torus to about a tenth of a grid voxel near the surface (mean
    # |d_theta - d_0| 0.0016-0.0027 world units, h = 0.021), in 8-10 s on one CPU thread
    fit: SDFInitConfig = field(default_factory=lambda: SDFInitConfig(fit_steps=200, fit_points=4096))
    sdf: SDFFieldConfig = field(
        default_factory=lambda: SDFFieldConfig(
            grid=HashGridConfig(n_levels=8, max_resolution=128),
            albedo_grid=HashGridConfig(n_levels=6, max_resolution=128, log2_hashmap_size=15),
            beta=0.01,
        )
    )
    num_samples: int = 48  # samples per ray of the training renders, stratified + importance
    num_importance: int = 16
    output_samples: int = 64  # the same for output renders (contact sheet, previews)
    output_importance: int = 16
    albedo_lr: float = 1e-2  # JobSpec.lr replaces it when set
    geometry_lr: float = 3e-4  # refine; the surface stage's (faster rates punch pits)
    texture_shading: ShadingSchedule = field(
        default_factory=lambda: ShadingSchedule(albedo_until=0.0, lambertian_probability=0.5)
    )
    refine_shading: ShadingSchedule = field(
        default_factory=lambda: ShadingSchedule(lambertian_probability=0.6, textureless_probability=0.2)
    )
    eikonal_weight: float = 100.0  # refine; relative to the SDS surrogate, as the surface stage's
    pull_weight: float = 1e4  # lambda_pull(s) = pull_weight s / (1 - s + 1e-2)
    normal_smoothness_weight: float = 2000.0  # refine; the surface stage's lambda_n, power 1 (keeps edges)
    normal_smoothness_jitter: float = 0.04  # world units
    regularizer_points: int = 4096
    live_texture_size: int = 256  # texture of the intermediate meshes (0: vertex colours)


def pull_weight(keep_shape: float, scale: float) -> float:
    """lambda_pull(s) = scale s / (1 - s + 1e-2): 0 at s = 0, scale at s = 1/2 (about), 100 scale at s = 1."""
    return scale * keep_shape / (1.0 - keep_shape + 1e-2)


def mesh_digest(mesh: InputMesh) -> str:
    """SHA-256 of the mesh's arrays: a checkpoint made on another mesh is refused."""
    digest = hashlib.sha256()
    for array in mesh.arrays().values():
        digest.update(array.tobytes())
    return digest.hexdigest()


@dataclass
class ShapePull:
    """weight * E|d_theta(x) - d_0(x)|, x half near the initial surface, half uniform in the ball."""

    field: SDFField
    grid: SDFGrid
    weight: float
    points: int
    rng: torch.Generator

    def __call__(self, views: DistillViews) -> torch.Tensor:
        half = self.points // 2
        x = torch.cat(
            [near_surface_points(self.grid, half, self.rng), uniform_ball(half, self.field.bound, self.rng)]
        ).to(views.z.device)
        return self.weight * (self.field.sdf(x) - self.grid.sample(x)).abs().mean()


@dataclass
class Eikonal:
    """weight * E(||grad d(x)|| - 1)^2 at x uniform in the ball."""

    field: SDFField
    weight: float
    points: int
    rng: torch.Generator

    def __call__(self, views: DistillViews) -> torch.Tensor:
        x = uniform_ball(self.points, self.field.bound, self.rng).to(views.z.device)
        return self.weight * eikonal_loss(self.field.sdf_with_gradient(x)[1])


@dataclass
class NormalSmoothness:
    """weight * E ||n(x) - n(x + delta)|| (total variation of the normals) at x near the initial surface."""

    field: SDFField
    grid: SDFGrid
    weight: float
    jitter: float
    points: int
    rng: torch.Generator

    def __call__(self, views: DistillViews) -> torch.Tensor:
        x = near_surface_points(self.grid, self.points, self.rng).to(views.z.device)
        return self.weight * normal_smoothness_loss(self.field.normals, x, self.jitter, self.rng, power=1.0)


class MeshAssetOptimizer(AssetOptimizer):
    """AssetOptimizer on an SDF field fitted to a given mesh (module docstring). Call ``fit()`` (or load a
    checkpoint) before ``run()``; ``mesh_phases`` / ``to_mesh`` give the textured input mesh (texture mode) or the
    refined surface (refine mode), in the input's frame."""

    def __init__(
        self,
        spec: JobSpec,
        mesh: InputMesh,
        prior=None,
        device=None,
        defaults: EngineDefaults | None = None,
        config: MeshStageConfig | None = None,
    ):
        if spec.mode not in ("texture", "refine"):
            raise ValueError(f"MeshAssetOptimizer runs texture and refine jobs, not mode {spec.mode!r}")
        super().__init__(spec, prior=prior, device=device, defaults=defaults)
        self.surface = None  # one stage (JobSpec.stage_plan): this class's SDF field from the first step
        self.config = cfg = config or MeshStageConfig()
        self.input_mesh, self.texturing = mesh, spec.mode == "texture"
        self.frame = normalising_frame(mesh.vertices, cfg.half_extent)
        bound = float(self.field.bound)
        found = mesh_sdf_grid(self.frame.to_field(mesh.vertices), mesh.faces, bound, cfg.grid)
        self.grid, self.fitted, self.corner_uvs = found.grid, False, mesh.uvs
        if found.open_faces:
            self.warnings.append(
                f"{found.open_faces} of {found.faces} faces of the mesh enclose no volume (an open sheet); the "
                f"renders saw them as a slab {2 * cfg.grid.sheet_voxels * found.grid.spacing / self.frame.scale:.3g} "
                "units thick"
            )
        self.fit_rng = torch.Generator().manual_seed(spec.seed + 3)
        sdf_config = replace(cfg.sdf, bound=bound)
        self.field = SDFField(sdf_config, rng=self.fit_rng).to(self.device)
        self.output_settings = RenderSettings(num_samples=cfg.output_samples, num_importance=cfg.output_importance)
        self.distill.render_settings = RenderSettings(num_samples=cfg.num_samples, num_importance=cfg.num_importance)
        self.distill.shading = cfg.texture_shading if self.texturing else cfg.refine_shading
        self.optimizer = self._make_optimizer()
        self.regularizers = [] if self.texturing else self._refine_regularizers()

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg, background = self.config, [p for p in self.background.parameters() if p.requires_grad]
        groups = [{"params": self.field.albedo_parameters() + background, "lr": self.spec.lr or cfg.albedo_lr}]
        if not self.texturing:
            groups.append({"params": self.field.geometry_parameters(), "lr": cfg.geometry_lr})
        return torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15)

    def _refine_regularizers(self) -> list:
        cfg = self.config
        rng = torch.Generator().manual_seed(self.spec.seed + 2)
        terms = [Eikonal(self.field, cfg.eikonal_weight, cfg.regularizer_points, rng)]
        weight = pull_weight(self.spec.keep_shape, cfg.pull_weight)
        if weight > 0:
            terms.append(ShapePull(self.field, self.grid, weight, cfg.regularizer_points, rng))
        if cfg.normal_smoothness_weight > 0:
            smooth = (cfg.normal_smoothness_weight, cfg.normal_smoothness_jitter, cfg.regularizer_points // 2, rng)
            terms.append(NormalSmoothness(self.field, self.grid, *smooth))
        return terms

    # --- the fit ---------------------------------------------------------------------------------------------
    @property
    def fit_steps_total(self) -> int:
        return self.config.fit.fit_steps

    def fit(self) -> Iterator[tuple[int, int, float]]:
        """Fit the field's distance to the mesh's grid, yielding (step, total, loss) after each step; then freeze it
        in texture mode."""
        total = self.fit_steps_total
        for step, loss in enumerate(fit_sdf_steps(self.field, self.grid, self.config.fit, None, self.fit_rng)):
            yield step + 1, total, loss
        self._fitted()

    def _fitted(self) -> None:
        self.fitted = True
        if self.texturing:
            self.field.freeze_geometry()

    def run(self, cancel=None):
        if not self.fitted:
            raise RuntimeError("fit the field to the mesh first (MeshAssetOptimizer.fit) or load a checkpoint")
        return super().run(cancel)

    # --- checkpoints -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {**super().state_dict(), "input_mesh": mesh_digest(self.input_mesh)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("input_mesh") != mesh_digest(self.input_mesh):
            raise ValueError("checkpoint belongs to a different input mesh; resume with the mesh that made it")
        super().load_state_dict(state)
        self._fitted()

    # --- outputs ---------------------------------------------------------------------------------------------
    def mesh_phase_names(self, texture_size: int, max_faces: int | None) -> list[str]:
        return mesh_phase_names(self, texture_size, max_faces)

    def mesh_phases(
        self, resolution: int, texture_size: int = 0, max_faces: int | None = None
    ) -> Generator[str, None, Mesh]:
        return mesh_phases(self, resolution, texture_size, max_faces)

    def live_mesh(self, texture_size: int) -> Mesh:
        """The mesh as it is now, for a live viewer: the input with a ``texture_size`` bake (texture mode), or a quick
        untextured 64^3 surface (refine)."""
        return live_mesh(self, texture_size)


__all__ = ["MeshAssetOptimizer", "MeshStageConfig", "mesh_digest", "pull_weight"]
