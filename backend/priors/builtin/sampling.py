"""Sampling the built-in prior (DDIM with classifier-free guidance) for checks and figures."""

from __future__ import annotations

import math

import torch

from . import world as W


@torch.no_grad()
def sample_ddim(prior, prompts: list[str], cameras, steps: int = 50, guidance: float = 5.0, rng=None):
    """DDIM (eta 0) samples of a Prior for prompts and cameras (one each): (B, 3, H, W) in [0, 1].

    Uses the prior's eps_hat with classifier-free guidance eps_uncond + s (eps_cond - eps_uncond), x_0 clipped to
    [-1, 1], on the DDIMScheduler with trailing timestep spacing (the first step is at t = T-1).
    """
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(
        prior.scheduler.config, prediction_type="epsilon", timestep_spacing="trailing", clip_sample=True
    )
    sched.set_timesteps(steps)
    b = len(prompts)
    cond = prior.encode_text(list(prompts))
    uncond = prior.encode_text([""])
    x = torch.randn((b, *prior.latent_shape), generator=rng).to(prior.device)
    cam = cameras.as_condition().to(prior.device) if prior.supports_camera else None
    for t in sched.timesteps:
        tt = torch.full((b,), int(t), device=prior.device, dtype=torch.long)
        eps, _, _ = prior.predict_eps_cfg(x, tt, cond, uncond, guidance, cam)
        x = sched.step(eps, t, x, use_clipped_model_output=True).prev_sample
    return prior.decode(x)


def save_grid(images: torch.Tensor, path, ncol: int, scale: int = 2):
    from PIL import Image

    b, _, h, w = images.shape
    nrow = math.ceil(b / ncol)
    grid = torch.ones(nrow * h, ncol * w, 3)
    for i in range(b):
        r, c = divmod(i, ncol)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = images[i].permute(1, 2, 0).float().cpu()
    img = Image.fromarray((grid.clamp(0, 1) * 255).round().byte().numpy())
    img.resize((ncol * w * scale, nrow * h * scale), Image.NEAREST).save(path)


# prompts of the sample figure: one single per shape, the two compositions, six held-out compositions
SAMPLE_PROMPTS = (
    "a red cube",
    "a blue sphere",
    "a green cylinder",
    "a yellow cone",
    "a purple torus",
    "an orange capsule",
    "a cyan pyramid",
    "a pink octahedron",
    "a red cube on top of a blue sphere",
    "a green cone next to a yellow torus",
    "a red sphere on top of an orange cylinder",
    "a red cylinder on top of a blue cone",
    "an orange sphere next to a blue capsule",
    "a pink cube next to a yellow sphere",
    "a pink cone next to a yellow cone",
    "a purple capsule next to a red octahedron",
)


def sample_figure(
    prior,
    path,
    prompts=SAMPLE_PROMPTS,
    views: int = 4,
    guidance: float = 5.0,
    steps: int = 50,
    seed: int = 0,
    truth: bool = True,
):
    """A PNG grid: one row per prompt, ``views`` DDIM samples at azimuths 0, 90, ... (elevation 20), then (with
    ``truth``) the ground-truth renders from the same cameras. Returns the samples (P*views, 3, H, W)."""
    from ...render.cameras import orbit_cameras

    cams = orbit_cameras(views, elevation=20.0)
    n = len(prompts)
    allc = type(cams)(*(x.repeat(n) for x in (cams.elevation, cams.azimuth, cams.distance, cams.fov)))
    texts = [p for p in prompts for _ in range(views)]
    g = torch.Generator().manual_seed(seed)
    samples = sample_ddim(prior, texts, allc, steps=steps, guidance=guidance, rng=g).cpu()
    if truth:
        gt = render_prompts(texts, allc, prior.image_size)
        rows = torch.cat([samples.view(n, views, *samples.shape[1:]), gt.view(n, views, *gt.shape[1:])], 1)
        save_grid(rows.reshape(-1, *samples.shape[1:]), path, ncol=2 * views, scale=3)
    else:
        save_grid(samples, path, ncol=views, scale=3)
    return samples


def render_prompts(prompts, cameras, size: int = 32) -> torch.Tensor:
    """Ground-truth renders (fixed light) of prompts from cameras, on CPU."""
    scenes = [W.parse_prompt(p) for p in prompts]
    return W.render_scenes(scenes, cameras.to("cpu"), size)
