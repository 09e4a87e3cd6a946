"""One distillation step, shared by per-prompt optimization (engine.optimize) and amortized training
(generators.train): render -> encode -> method gradient -> surrogate loss.

    cameras c ~ p(c)                           the caller samples them (its own ranges and rng)
    shading ~ ShadingSchedule                  albedo early, then mostly lambertian (DreamFusion Sec. 3.1)
    x = g(theta, c)                            volume rendering of the field (render.render)
    z = E(x)                                   prior.encode_images (VAE latents or pixels, differentiable)
    grad = method.gradient(z, y, c, t, ...)    backend/distill (the method draws t and eps from ``noise_rng``)
    L = 0.5 ||z - sg(z - grad)||^2             distill.surrogate_loss, so dL/dz = grad / B

The random draws keep one order, the order both loops have always used, so a refactor cannot move a result: per
view group the shading draw and the light positions come from ``camera_rng``, then the render's jitter from
``noise_rng``; the method draws from ``noise_rng`` after every group has been rendered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..distill.base import DistillInput, surrogate_loss
from ..render import RenderOutput, RenderSettings, render, sample_light_positions
from ..render.cameras import Cameras


@dataclass
class ShadingSchedule:
    """The shading of each training render (DreamFusion samples it per step; threestudio's ``ambient_only_steps``).

    For the first ``albedo_until`` fraction of the steps every render is "albedo" (no draw); after that one uniform
    draw u per view group picks "lambertian" when u < lambertian_probability, "textureless" when u is within the
    next textureless_probability, else "albedo".
    """

    albedo_until: float = 0.1
    lambertian_probability: float = 0.75
    textureless_probability: float = 0.0

    def __post_init__(self) -> None:
        p, q = self.lambertian_probability, self.textureless_probability
        if not (0 <= self.albedo_until <= 1 and p >= 0 and q >= 0 and p + q <= 1):
            raise ValueError(
                f"ShadingSchedule(albedo_until={self.albedo_until}, lambertian_probability={p}, "
                f"textureless_probability={q}): use a fraction in [0, 1] and probabilities that sum to at most 1"
            )

    def choose(self, step: int, total_steps: int, rng: torch.Generator) -> str:
        if step < self.albedo_until * total_steps:
            return "albedo"
        u = torch.rand((), generator=rng).item()
        if u < self.lambertian_probability:
            return "lambertian"
        return "textureless" if u < self.lambertian_probability + self.textureless_probability else "albedo"


@dataclass
class DistillViews:
    """The renders of one step as the method and the regularizers see them.

    z: (B, C, h, w) encoded renders (differentiable); opacity: (B, 1, H, W) rendered opacity at the render's own
    resolution (differentiable); camera: (B, 4) camera rows (elevation, azimuth, distance, fov) for camera-aware
    priors; outputs: the RenderOutput of each view group (weights, depth, normals for other regularizers).
    """

    z: torch.Tensor
    opacity: torch.Tensor
    camera: torch.Tensor
    outputs: list[RenderOutput]

    @staticmethod
    def cat(groups: list[DistillViews]) -> DistillViews:
        """View groups (e.g. one per prompt of an amortized step) as one batch, in order."""
        if len(groups) == 1:
            return groups[0]
        return DistillViews(
            z=torch.cat([g.z for g in groups]),
            opacity=torch.cat([g.opacity for g in groups]),
            camera=torch.cat([g.camera for g in groups]),
            outputs=[out for g in groups for out in g.outputs],
        )


# A regularizer adds a term to the step's loss from what was rendered (a closure may hold the field, e.g. eikonal).
Regularizer = Callable[[DistillViews], torch.Tensor]


@dataclass
class OpacitySparsity:
    """weight * mean opacity over the rendered pixels (threestudio's lambda_sparsity): fog costs opacity."""

    weight: float

    def __call__(self, views: DistillViews) -> torch.Tensor:
        return self.weight * views.opacity.mean()


def wants_view_prompts(method) -> bool:
    """True when the method's Perp-Neg option is on: the caller then encodes the prompt's front/side/back views."""
    return bool(getattr(getattr(method, "config", None), "perp_neg", False))


class DistillStep:
    """Render -> encode -> gradient -> surrogate loss for one prior and method, at a square ``resolution``.

    ``render_settings`` (samples per ray, normals, ...) and ``shading`` are attributes a stage may replace.
    """

    def __init__(
        self,
        prior,
        method,
        resolution: int,
        render_settings: RenderSettings | None = None,
        shading: ShadingSchedule | None = None,
    ):
        self.prior, self.method, self.resolution = prior, method, resolution
        self.render_settings = render_settings or RenderSettings()
        self.shading = shading or ShadingSchedule()

    def render(
        self,
        field,
        background,
        cameras: Cameras,
        step: int,
        total_steps: int,
        camera_rng: torch.Generator,
        noise_rng: torch.Generator,
    ) -> DistillViews:
        """Render one view group (cameras already on the field's device) and encode it."""
        shading = self.shading.choose(step, total_steps, camera_rng)
        lights = None if shading == "albedo" else sample_light_positions(cameras, camera_rng)
        settings = dataclasses.replace(self.render_settings, shading=shading)
        out = render(
            field,
            cameras,
            self.resolution,
            self.resolution,
            background,
            settings,
            light_positions=lights,
            rng=noise_rng,
        )
        z = self.prior.encode_images(out.rgb.permute(0, 3, 1, 2))
        return DistillViews(z, out.opacity.permute(0, 3, 1, 2), cameras.as_condition(), [out])

    def loss(
        self, views: DistillViews, cond, uncond, step: int, total_steps: int, noise_rng, view_prompts=None
    ) -> torch.Tensor:
        """The surrogate loss whose gradient on z is the method's gradient / B. The method sees the opacity at the
        render's own resolution (FSD average-pools it to z's size for its foreground mask); ``view_prompts``
        (distill.encode_view_prompts) only when the method uses Perp-Neg (``wants_view_prompts``)."""
        result = self.method.gradient(
            DistillInput(
                z=views.z,
                cond=cond,
                uncond=uncond,
                step=step,
                total_steps=total_steps,
                rng=noise_rng,
                camera=views.camera,
                opacity=views.opacity.detach(),
                view_prompts=view_prompts,
            )
        )
        return surrogate_loss(views.z, result.grad)
