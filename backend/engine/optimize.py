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

A stage (e.g. a surface stage after this density stage) plugs in by replacing attributes between steps: ``field``
and ``background`` (what is rendered and meshed), ``optimizer`` (over the new parameters), ``distill.shading``
(ShadingSchedule), ``distill.render_settings`` (RenderSettings) and ``regularizers`` (callables of the step's
DistillViews returning a loss term).
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


@dataclass
class EngineDefaults:
    """Settings the JobSpec does not carry; chosen for the built-in prior on a CPU and SD on a GPU alike."""

    lr: float = 1e-2  # Adam on the hash grid and MLP (threestudio uses 1e-2 for the grid)
    num_samples: int = 48  # samples per ray (output renders take twice as many)
    shading: ShadingSchedule = field(default_factory=ShadingSchedule)  # albedo for 10% of the steps, then 75% lit
    opacity_sparsity: float = 0.0  # weight of mean opacity (threestudio's lambda_sparsity), off by default
    preview_size: int = 64


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

    # --- one step --------------------------------------------------------------------------------------------
    def train_step(self) -> float:
        spec = self.spec
        cams = sample_cameras(
            spec.batch_size,
            self.camera_rng,
            spec.elevation_range,
            spec.azimuth_range,
            spec.distance_range,
            spec.fov_range,
        ).to(self.device)
        views = self.distill.render(
            self.field, self.background, cams, self.step, spec.steps, self.camera_rng, self.noise_rng
        )
        cond = self._text_for(cams)
        loss = self.distill.loss(views, cond, self.uncond, self.step, spec.steps, self.noise_rng, self.view_prompts)
        for regularizer in self.regularizers:
            loss = loss + regularizer(views)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    # --- the loop --------------------------------------------------------------------------------------------
    def run(self, cancel: Callable[[], bool] | None = None) -> Iterator[Progress | Preview]:
        """Run the remaining steps, yielding Progress every step and a Preview every spec.preview_every steps.

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
            yield Progress(self.step, spec.steps, loss, self.seconds_per_step * (spec.steps - self.step), elapsed)
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

    # --- checkpoints -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "spec": self.spec.to_dict(),
            "step": self.step,
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
