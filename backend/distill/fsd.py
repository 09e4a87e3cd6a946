"""Flow Score Distillation (Yan, Wu, Ma 2024, arXiv 2405.10988; spec_ssd_fsd.md Part B).

FSD is SDS with (i) a noise that is fixed per view and (ii) a monotonically decreasing timestep t(tau) (Eq. 14-15):

    grad_theta L_FSD = E_c[ w(t(tau)) ( eps_phi^cfg(alpha_t g(theta, c) + sigma_t eps(c), t(tau), y) - eps(c) ) dg/dtheta ]

Proposition 1: with x^c_t = (x_t - sigma_t eps) / alpha_t the PF-ODE reads
d x^c / dt = d(sigma_t / alpha_t)/dt (eps_phi(alpha_t x^c + sigma_t eps, t) - eps), so one Euler step from t_i to
t_{i-1} < t_i,

    x^c <- x^c - (sigma_{t_i}/alpha_{t_i} - sigma_{t_{i-1}}/alpha_{t_{i-1}}) (eps_phi^cfg - eps),

is exactly one DDIM step from x_{t_i} = alpha_{t_i} x^c + sigma_{t_i} eps (``euler_step`` / ``ddim_step``). With
``weighting="euler"`` the method's gradient is that step (w = the decrement of sigma/alpha between this step's t
and the next step's), so plain gradient descent at lr 1 on a 2D point is DDIM sampling.

The noise function eps(c) (Sec. 4.1.2, Eq. 16; the world-map generator of the author's later CFD code):
- once per run: a background noise eps_b ~ N(0, I_{C x h x w}) and a world map eps_p ~ N(0, I_{C x (H+h) x W}),
  H = (180/Theta) h, W = (360/Theta) w, periodic in azimuth (columns are read modulo W).
- per view with elevation e and azimuth a (degrees): the h x w patch at row int((-e H / 180) mod H),
  column int((a W / 360) mod W); foreground mask m = 1[opacity > 0.5] (opacity average-pooled to the model-space
  resolution when it differs); eps_det = m * patch + (1 - m) * eps_b.
- eps(c) = sqrt(beta) eps_det + sqrt(1 - beta) eps_r with eps_r ~ N(0, I) fresh every step; beta = 1 (default) is
  fully deterministic, beta = 0 is SDS's noise.
Without cameras (the 2D harness) each batch row gets its own fixed noise eps_0, drawn once.

Code versus paper: the paper's equations were lost in extraction; the world map follows the CFD code (Theta = 180
by default, so a 64x64 latent patch slides over a 64x128 map), the blend's sqrt(beta) form is a reading of its
``sqrt_beta``, and the map's extra h rows are fresh noise (the code pads them). The fixed noises are drawn from
the step's generator on the first call (so different job seeds give different noises, FSD's diversity), or from
``seed`` when set, and are saved in ``state_dict``. The 3D schedule is HiFA's sqrt anneal
t(i) = T_max - (T_max - T_min) sqrt(i / N) ("sqrt", the default; FSD's 2D runs use "linear"); CFG 7.5 (the 2D
table's value; the 3D value is not given). Adam on theta is the caller's (the engine's) choice, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..priors.base import Prior
from .base import DistillInput, DistillOutput
from .schedules import DistillConfig
from .sds import ScoreDistillation


def ddim_step(prior: Prior, x_t: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, eps_hat: torch.Tensor):
    """Deterministic DDIM (eta = 0): x0_hat = (x_t - sigma_t eps_hat)/alpha_t, x_{t'} = alpha_t' x0_hat + sigma_t' eps_hat."""
    a, s = prior.alpha_sigma(t, x_t.ndim)
    a2, s2 = prior.alpha_sigma(t_next, x_t.ndim)
    return a2 * (x_t - s * eps_hat) / a + s2 * eps_hat


def euler_step(prior: Prior, x_c: torch.Tensor, eps: torch.Tensor, t, t_next, eps_hat: torch.Tensor) -> torch.Tensor:
    """FSD's first-order step of Proposition 1: x^c - (sigma_t/alpha_t - sigma_t'/alpha_t') (eps_hat - eps)."""
    a, s = prior.alpha_sigma(t, x_c.ndim)
    a2, s2 = prior.alpha_sigma(t_next, x_c.ndim)
    return x_c - (s / a - s2 / a2) * (eps_hat - eps)


@dataclass
class FSDConfig(DistillConfig):
    t_sampler: str = "sqrt"  # decreasing t(tau): "sqrt" (HiFA, 3D) or "linear" (2D); "uniform" turns it into SDS's
    beta: float = 1.0  # blend of the fixed and a fresh noise
    theta_deg: float = 180.0  # world-map patch angle Theta (<= 360)
    opacity_threshold: float = 0.5  # foreground where the (pooled) opacity exceeds this
    seed: int | None = None  # None: draw the fixed noises from the step's generator on the first call

    extra_weightings = ("euler",)

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"FSD's beta must lie in [0, 1] (1 = fully fixed noise); got {self.beta}")
        if not 0.0 < self.theta_deg <= 360.0:
            raise ValueError(f"FSD's theta_deg must lie in (0, 360]; got {self.theta_deg}")


class FSD(ScoreDistillation):
    """grad = w(t(tau)) (eps_cfg(alpha_t z + sigma_t eps(c), t(tau)) - eps(c)), eps(c) the fixed world-map noise."""

    name = "fsd"
    default_guidance = 7.5
    Config = FSDConfig

    def __init__(self, prior, guidance: float = 0.0, **options):
        super().__init__(prior, guidance, **options)
        self.world_map: torch.Tensor | None = None  # (C, H + h, W)
        self.background: torch.Tensor | None = None  # (C, h, w)
        self.fixed_noise: torch.Tensor | None = None  # (B, C, h, w) for camera-less inputs

    # --- state ------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"world_map": self.world_map, "background": self.background, "fixed_noise": self.fixed_noise}

    def load_state_dict(self, state: dict) -> None:
        self.world_map = state.get("world_map")
        self.background = state.get("background")
        self.fixed_noise = state.get("fixed_noise")

    def _init_generator(self, inp: DistillInput) -> torch.Generator:
        if self.config.seed is None:
            return inp.generator
        return torch.Generator(inp.generator.device).manual_seed(self.config.seed)

    def _randn(self, shape, g: torch.Generator, device) -> torch.Tensor:
        return torch.randn(shape, generator=g, device=g.device, dtype=torch.float32).to(device)

    # --- the noise function -----------------------------------------------------------------------------------
    def world_map_shape(self, c: int, h: int, w: int) -> tuple[int, int, int]:
        big_h = max(1, round(180.0 / self.config.theta_deg * h))
        big_w = max(w, round(360.0 / self.config.theta_deg * w))
        return c, big_h + h, big_w

    def fixed_view_noise(self, inp: DistillInput) -> torch.Tensor:
        """eps_det for this step's views (B, C, h, w): world-map patches in the foreground, eps_b behind."""
        z = inp.z
        b, c, h, w = z.shape
        if inp.camera is None:
            if self.fixed_noise is None:
                self.fixed_noise = self._randn(z.shape, self._init_generator(inp), z.device)
            if self.fixed_noise.shape != z.shape:
                raise ValueError(
                    f"FSD's fixed noise has shape {tuple(self.fixed_noise.shape)} but z is {tuple(z.shape)}: "
                    "keep the batch and resolution fixed, or pass cameras to use the world-map noise"
                )
            return self.fixed_noise.to(z.device)
        shape = self.world_map_shape(c, h, w)
        if self.world_map is None:
            g = self._init_generator(inp)
            self.world_map = self._randn(shape, g, z.device)
            self.background = self._randn((c, h, w), g, z.device)
        if tuple(self.world_map.shape) != shape:
            raise ValueError(
                f"FSD's world map {tuple(self.world_map.shape)} was made for another resolution than z {tuple(z.shape)}"
            )
        world, background = self.world_map.to(z.device), self.background.to(z.device)
        big_h, big_w = shape[1] - h, shape[2]
        elev, azim = inp.camera[:, 0].to(z.device), inp.camera[:, 1].to(z.device)
        row0 = torch.remainder(-elev * big_h / 180.0, big_h).long()
        col0 = torch.remainder(azim * big_w / 360.0, big_w).long()
        rows = (row0[:, None] + torch.arange(h, device=z.device)).clamp_max(shape[1] - 1)  # (B, h)
        cols = torch.remainder(col0[:, None] + torch.arange(w, device=z.device), big_w)  # (B, w)
        patches = world[:, rows[:, :, None], cols[:, None, :]].permute(1, 0, 2, 3)  # (B, C, h, w)
        if inp.opacity is None:
            return patches
        opacity = inp.opacity.to(z.device).float()
        if opacity.shape[-2:] != (h, w):
            opacity = F.adaptive_avg_pool2d(opacity, (h, w))
        mask = (opacity > self.config.opacity_threshold).float()
        return mask * patches + (1 - mask) * background

    def view_noise(self, inp: DistillInput) -> torch.Tensor:
        """eps(c) = sqrt(beta) eps_det + sqrt(1 - beta) eps_r."""
        fixed = self.fixed_view_noise(inp)
        beta = self.config.beta
        if beta == 1.0:
            return fixed
        return beta**0.5 * fixed + (1 - beta) ** 0.5 * self.sample_noise(inp)

    # --- the gradient -----------------------------------------------------------------------------------------
    def next_t(self, inp: DistillInput) -> torch.Tensor:
        """t(tau + 1): the decreasing schedule one step on (for the Euler weighting)."""
        t = self.config.schedule.deterministic_t(inp.step + 1, inp.total_steps, self.prior.num_train_timesteps)
        return torch.full((inp.z.shape[0],), t, dtype=torch.long, device=inp.z.device)

    def weight_at(self, t: torch.Tensor, inp: DistillInput) -> torch.Tensor:
        if self.config.weighting != "euler":
            return self.weight(t, inp.z.ndim)
        a, s = self.prior.alpha_sigma(t, inp.z.ndim)
        a2, s2 = self.prior.alpha_sigma(self.next_t(inp), inp.z.ndim)
        return s / a - s2 / a2

    def gradient(self, inp: DistillInput) -> DistillOutput:
        z = inp.z.detach()
        t = self.sample_t(inp)
        eps = self.view_noise(inp)
        x_t = self.prior.add_noise(z, eps, t)
        with torch.no_grad():
            eps_cfg, _, _ = self.prior.predict_eps_cfg(x_t, t, inp.cond, inp.uncond, self.guidance, inp.camera)
        return self.finish(self.weight_at(t, inp) * (eps_cfg - eps), t, inp)


__all__ = ["FSD", "FSDConfig", "ddim_step", "euler_step"]
