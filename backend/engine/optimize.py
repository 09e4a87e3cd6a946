"""Per-prompt optimization: one field theta, rendered from random cameras, pulled toward the prior by a distillation
method, as a generator of events.

One step (DreamFusion's loop, with the method pluggable):
    cameras c ~ p(c)                      render.sample_cameras (stratified azimuth, threestudio ranges)
    x = g(theta, c)                       volume rendering of the field (albedo or lambertian shading)
    z = E(x)                              prior.encode_images (VAE latents or pixels, differentiable)
    grad = method.gradient(z, y, c, ...)  backend/distill
    L = 0.5 ||z - sg(z - grad)||^2        distill.surrogate_loss; Adam step on theta

Every random draw comes from two generators seeded by the JobSpec's seed (one on the CPU for cameras, one on the
prior's device for noise and timesteps), so a spec reproduces its asset; both are saved in checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dreamstill.protocol import JobSpec, Preview, Progress

from ..distill import make_method
from ..distill.base import DistillInput, surrogate_loss
from ..fields import Background, DensityField, DensityFieldConfig
from ..priors import Prior, load_prior
from ..priors.base import TextEmbedding
from ..render import render, sample_light_positions
from ..render.cameras import Cameras, orbit_cameras, sample_cameras, with_view_suffix


@dataclass
class EngineDefaults:
    """Settings the JobSpec does not carry; chosen for the built-in prior on a CPU and SD on a GPU alike."""

    lr: float = 1e-2  # Adam on the hash grid and MLP (threestudio uses 1e-2 for the grid)
    num_samples: int = 48  # samples per ray
    lambertian_after: float = 0.1  # fraction of steps rendered with albedo only before shading starts
    shading_probability: float = 0.75  # P(lambertian) after that, else albedo (DreamFusion samples shading per step)
    opacity_sparsity: float = 0.0  # weight of mean opacity (threestudio's lambda_sparsity), off by default
    preview_size: int = 64


class AssetOptimizer:
    """Holds the field, its optimizer, the method and the RNG state of one job; ``run`` yields its events."""

    def __init__(
        self,
        spec: JobSpec,
        prior: Prior | None = None,
        device: str | torch.device | None = None,
        defaults: EngineDefaults | None = None,
    ):
        self.spec = spec.validate()
        self.defaults = defaults or EngineDefaults()
        self.prior = prior if prior is not None else load_prior(spec.prior, device=device)
        self.device = self.prior.device
        self.resolution = spec.resolution or self.prior.image_size
        torch.manual_seed(spec.seed)  # field initialisation
        self.field = DensityField(DensityFieldConfig()).to(self.device)
        self.background = Background().to(self.device)
        self.method = make_method(spec.method, self.prior, guidance=spec.guidance, **spec.options)
        params = [p for p in list(self.field.parameters()) + list(self.background.parameters()) if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=spec.lr or self.defaults.lr, betas=(0.9, 0.99), eps=1e-15)
        self.camera_generator = torch.Generator().manual_seed(spec.seed)
        self.noise_generator = torch.Generator(self.device).manual_seed(spec.seed + 1)
        self.step = 0
        self.seconds_per_step = 0.0
        self.warnings: list[str] = []
        self._text_cache: dict[str, object] = {}
        self.uncond = self.prior.encode_text([spec.negative_prompt])

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
    def _shading(self) -> str:
        if self.step < self.defaults.lambertian_after * self.spec.steps:
            return "albedo"
        u = torch.rand((), generator=self.camera_generator).item()
        return "lambertian" if u < self.defaults.shading_probability else "albedo"

    def train_step(self) -> float:
        spec = self.spec
        cams = sample_cameras(
            spec.batch_size,
            self.camera_generator,
            spec.elevation_range,
            spec.azimuth_range,
            spec.distance_range,
            spec.fov_range,
        ).to(self.device)
        shading = self._shading()
        lights = None if shading == "albedo" else sample_light_positions(cams, self.camera_generator)
        out = render(
            self.field,
            cams,
            self.resolution,
            self.resolution,
            self.background,
            shading=shading,
            light_positions=lights,
            num_samples=self.defaults.num_samples,
            generator=self.noise_generator,
        )
        rgb = out.rgb.permute(0, 3, 1, 2)
        z = self.prior.encode_images(rgb)
        opacity = F.interpolate(
            out.opacity.permute(0, 3, 1, 2), size=z.shape[-2:], mode="bilinear", align_corners=False
        )
        result = self.method.gradient(
            DistillInput(
                z=z,
                cond=self._text_for(cams),
                uncond=self.uncond,
                step=self.step,
                total_steps=spec.steps,
                generator=self.noise_generator,
                camera=cams.as_condition(),
                opacity=opacity.detach(),
            )
        )
        loss = surrogate_loss(z, result.grad)
        if self.defaults.opacity_sparsity > 0:
            loss = loss + self.defaults.opacity_sparsity * out.opacity.mean()
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
    @torch.no_grad()
    def render(self, cameras: Cameras, height: int, width: int, shading: str = "albedo"):
        """Render without gradients (for previews, contact sheets and scoring)."""
        return render(
            self.field,
            cameras.to(self.device),
            height,
            width,
            self.background,
            shading=shading,
            num_samples=self.defaults.num_samples * 2,
            generator=None,
        )

    def preview(self) -> np.ndarray:
        """(S, S, 4) uint8 RGBA from a camera that orbits with the step count, alpha = opacity."""
        size = self.defaults.preview_size
        cam = orbit_cameras(1, elevation=20.0)
        cam.azimuth = torch.tensor([(self.step * 7.0) % 360.0 - 180.0])
        out = self.render(cam, size, size)
        rgba = torch.cat([out.rgb[0], out.opacity[0]], -1).clamp(0, 1)
        return (rgba * 255).round().byte().cpu().numpy()

    def extract_mesh(self, resolution: int | None = None, texture_size: int | None = None):
        """Marching cubes of the density with vertex colours, plus a baked UV texture when texture_size > 0."""
        from .meshing import field_to_mesh

        size = self.spec.texture_size if texture_size is None else texture_size
        return field_to_mesh(
            self.field, self.device, resolution or self.spec.mesh_grid, size, self.warnings, self.spec.face_budget
        )

    # --- checkpoints -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "spec": self.spec.to_dict(),
            "step": self.step,
            "field": self.field.state_dict(),
            "background": self.background.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "method": self.method.state_dict(),
            "camera_generator": self.camera_generator.get_state(),
            "noise_generator": self.noise_generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["spec"] != self.spec.to_dict():
            raise ValueError("checkpoint belongs to a different JobSpec; resume with the spec that made it")
        self.step = state["step"]
        self.field.load_state_dict(state["field"])
        self.background.load_state_dict(state["background"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state["method"])
        self.camera_generator.set_state(state["camera_generator"])
        self.noise_generator.set_state(state["noise_generator"])

    def save_checkpoint(self, path: Path) -> None:
        """Atomic write: a crash mid-save never leaves a broken checkpoint in place."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)

    def load_checkpoint(self, path: Path) -> None:
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
