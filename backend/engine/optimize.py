"""Per-prompt optimization: one field theta, rendered from random cameras, pulled toward the prior by a distillation
method, as a generator of events.

One step is engine.step.DistillStep (DreamFusion's loop, with the method pluggable):
    cameras c ~ p(c)                      render.sample_cameras (stratified azimuth, threestudio ranges)
    x = g(theta, c)                       volume rendering of the field (albedo or lambertian shading)
    z = E(x)                              prior.encode_images (VAE latents or pixels, differentiable)
    grad = method.gradient(z, y, c, ...)  backend/distill
    L = 0.5 ||z - sg(z - grad)||^2        distill.surrogate_loss, plus the regularizers; Adam step on theta

Every random draw comes from two generators seeded by the JobSpec's seed (``camera_rng`` on the CPU for cameras,
shading and lights, ``noise_rng`` on the prior's device for render jitter, noise and timesteps), so a spec
reproduces its asset; both are saved in checkpoints.

Stages. The steps run through JobSpec.stage_plan: one "optimize" stage, or with the surface stage "density",
"geometry" and "texture" (engine/surface.py). ``step`` counts the job's steps over all stages; the method and the
shading schedule see the stage's own (step, length). Entering a stage replaces attributes between steps: ``field``
and ``background`` (what is rendered and meshed), ``optimizer`` (over the new parameters), ``distill.shading``
(ShadingSchedule), ``distill.render_settings`` (RenderSettings), ``output_settings`` and ``regularizers`` (callables
of the step's DistillViews returning a loss term). A checkpoint records the stage, so a resume re-enters it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dreamstill.protocol import JobSpec, Preview, Progress

from ..distill import encode_view_prompts, make_method
from ..fields import Background, DensityField, DensityFieldConfig
from ..priors import Prior, load_prior
from ..priors.base import TextEmbedding
from ..render import RenderSettings
from ..render.cameras import Cameras, orbit_cameras, sample_cameras, with_view_suffix
from .asset import FieldAsset
from .step import DistillStep, OpacitySparsity, Regularizer, ShadingSchedule, wants_view_prompts
from .surface import SurfaceConfig, SurfaceStages, is_trainable_sdf
from .surface_mesh import surface_mesh_phases


@dataclass
class EngineDefaults:
    """Settings the JobSpec does not carry; chosen for the built-in prior on a CPU and SD on a GPU alike."""

    lr: float = 1e-2  # Adam on the hash grid and MLP (threestudio uses 1e-2 for the grid)
    num_samples: int = 48  # samples per ray (output renders take twice as many)
    shading: ShadingSchedule = field(default_factory=ShadingSchedule)  # albedo for 10% of the steps, then 75% lit
    opacity_sparsity: float = 0.0  # weight of mean opacity (threestudio's lambda_sparsity), off by default
    preview_size: int = 64
    surface: SurfaceConfig = field(default_factory=SurfaceConfig)  # the geometry and texture stages


class AssetOptimizer(FieldAsset):
    """Holds the field, its optimizer, the method and the RNG state of one job; ``run`` yields its events.

    An Asset (engine.asset): ``render`` and ``to_mesh`` show the field as it is now.
    """

    def __init__(
        self,
        spec: JobSpec,
        prior: Prior | None = None,
        device: str | torch.device | None = None,
        defaults: EngineDefaults | None = None,
    ):
        self.spec = spec
        self.defaults = defaults or EngineDefaults()
        self.prior = prior if prior is not None else load_prior(spec.prior, device=device)
        self.resolution = spec.resolution or self.prior.image_size
        torch.manual_seed(spec.seed)  # field initialisation
        density_field = DensityField(DensityFieldConfig()).to(self.prior.device)
        output_settings = RenderSettings(num_samples=2 * self.defaults.num_samples)
        super().__init__(density_field, Background().to(self.prior.device), self.prior.device, output_settings)
        self.method = make_method(spec.method, self.prior, guidance=spec.guidance, **spec.options)
        params = [p for p in list(self.field.parameters()) + list(self.background.parameters()) if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=spec.lr or self.defaults.lr, betas=(0.9, 0.99), eps=1e-15)
        self.camera_rng = torch.Generator().manual_seed(spec.seed)
        self.noise_rng = torch.Generator(self.device).manual_seed(spec.seed + 1)
        self.distill = DistillStep(
            self.prior,
            self.method,
            self.resolution,
            RenderSettings(num_samples=self.defaults.num_samples),
            self.defaults.shading,
        )
        self.regularizers: list[Regularizer] = []
        if self.defaults.opacity_sparsity > 0:
            self.regularizers.append(OpacitySparsity(self.defaults.opacity_sparsity))
        self.plan = spec.stage_plan
        self.stage = self.plan[0][0]
        self.surface = SurfaceStages(self.defaults.surface, spec) if spec.surface else None
        self.step = 0
        self.seconds_per_step = 0.0
        self._text_cache: dict[str, object] = {}
        self.uncond = self.prior.encode_text([spec.negative_prompt])
        self.view_prompts = encode_view_prompts(self.prior, spec.prompt) if wants_view_prompts(self.method) else None

    # --- text ------------------------------------------------------------------------------------------------
    def _text_for(self, cams: Cameras):
        """Camera-conditioned priors see the plain prompt; others get DreamFusion's view suffixes."""
        prompts = (
            [self.spec.prompt] * len(cams) if self.prior.supports_camera else with_view_suffix(self.spec.prompt, cams)
        )
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            emb = self.prior.encode_text(missing)
            for i, p in enumerate(missing):
                self._text_cache[p] = emb.tokens[i : i + 1], None if emb.pooled is None else emb.pooled[i : i + 1]
        tokens = torch.cat([self._text_cache[p][0] for p in prompts])
        pooled = (
            None if self._text_cache[prompts[0]][1] is None else torch.cat([self._text_cache[p][1] for p in prompts])
        )
        return TextEmbedding(tokens, pooled)

    # --- stages ---------------------------------------------------------------------------------------------
    def locate(self, step: int) -> tuple[str, int, int]:
        """(stage name, step within the stage, the stage's length) of the job's step ``step`` (0-based)."""
        start = 0
        for name, length in self.plan:
            if step < start + length:
                return name, step - start, length
            start += length
        name, length = self.plan[-1]
        return name, length, length

    def _enter(self, name: str, fit: bool = True) -> None:
        """Swap in stage ``name`` (engine.surface.SurfaceStages.enter); ``fit`` False when a checkpoint follows."""
        if name != self.stage:
            self.surface.enter(self, name, fit)
            self.stage = name

    # --- one step --------------------------------------------------------------------------------------------
    def train_step(self) -> float:
        spec = self.spec
        stage, step, length = self.locate(self.step)
        self._enter(stage)
        if self.surface is not None:
            self.surface.before_step(self, stage, step, length)
        cams = sample_cameras(
            spec.batch_size,
            self.camera_rng,
            spec.elevation_range,
            spec.azimuth_range,
            spec.distance_range,
            spec.fov_range,
        ).to(self.device)
        views = self.distill.render(self.field, self.background, cams, step, length, self.camera_rng, self.noise_rng)
        cond = self._text_for(cams)
        loss = self.distill.loss(views, cond, self.uncond, step, length, self.noise_rng, self.view_prompts)
        for regularizer in self.regularizers:
            loss = loss + regularizer(views)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    # --- the loop --------------------------------------------------------------------------------------------
    def run(self, cancel: Callable[[], bool] | None = None) -> Iterator[Progress | Preview]:
        """Run the remaining steps of every stage, yielding Progress every step (its phase names the stage) and a
        Preview every spec.preview_every steps.

        Returns early (without raising) when ``cancel()`` is true; check ``self.step < self.spec.steps`` to tell.
        ``run_job`` adds checkpoints and intermediate meshes around this loop.
        """
        spec = self.spec
        start, start_step = time.perf_counter(), self.step
        while self.step < spec.steps:
            if cancel is not None and cancel():
                return
            loss = self.train_step()
            elapsed = time.perf_counter() - start
            self.seconds_per_step = elapsed / (self.step - start_step)
            eta = self.seconds_per_step * (spec.steps - self.step)
            yield Progress(self.step, spec.steps, loss, eta, elapsed, phase=self.stage)
            if spec.preview_every and (self.step % spec.preview_every == 0 or self.step == spec.steps):
                yield Preview(self.step, self.preview())

    # --- outputs ---------------------------------------------------------------------------------------------
    def preview(self) -> np.ndarray:
        """(S, S, 4) uint8 RGBA from a camera that orbits with the step count; the fourth channel is the opacity."""
        size = self.defaults.preview_size
        cam = orbit_cameras(1, elevation=20.0)
        cam.azimuth = torch.tensor([(self.step * 7.0) % 360.0 - 180.0])
        out = self.render(cam, size, size)
        rgba = torch.cat([out.rgb[0], out.opacity[0]], -1).clamp(0, 1)
        return (rgba * 255).round().byte().cpu().numpy()

    def mesh_phases(self, resolution: int, texture_size: int = 0, max_faces: int | None = None):
        """The field's mesh phase by phase: a signed distance's (engine.surface_mesh) once the surface stage has
        begun (or from the start, when it refines an SDF generator's draft), else the density field's
        (engine.meshing)."""
        if self.surface is not None and is_trainable_sdf(self.field):
            settings = self.surface.mesh_settings
            return surface_mesh_phases(
                self.field, self.device, resolution, texture_size, max_faces, settings, self.warnings
            )
        return super().mesh_phases(resolution, texture_size, max_faces)

    # --- checkpoints -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "spec": self.spec.to_dict(),
            "step": self.step,
            "stage": self.stage,
            "surface": None if self.surface is None else self.surface.state_dict(),
            "field": self.field.state_dict(),
            "background": self.background.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "method": self.method.state_dict(),
            "camera_generator": self.camera_rng.get_state(),  # key names kept: checkpoints stay loadable
            "noise_generator": self.noise_rng.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["spec"] != self.spec.to_dict():
            raise ValueError("checkpoint belongs to a different JobSpec; resume with the spec that made it")
        self.step = state["step"]
        self._enter(state.get("stage", self.stage), fit=False)
        if self.surface is not None:
            self.surface.load_state_dict(state["surface"])
        self.field.load_state_dict(state["field"])
        self.background.load_state_dict(state["background"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state["method"])
        self.camera_rng.set_state(state["camera_generator"])
        self.noise_rng.set_state(state["noise_generator"])

    def save_checkpoint(self, path: Path) -> None:
        """Atomic write: a crash mid-save never leaves a broken checkpoint in place."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)

    def load_checkpoint(self, path: Path) -> None:
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
