"""Flow Score Distillation (Yan, Wu, Ma 2024, arXiv 2405.10988, Eq. 14-16 and Proposition 1).

FSD is SDS with (i) a noise that is fixed per view and (ii) a monotonically decreasing timestep t(tau) (Eq. 14-15):

    grad_theta L_FSD = E_c[ w(t(tau)) ( eps_phi^cfg(alpha_t g(theta, c) + sigma_t eps(c), t(tau), y) - eps(c) ) dg/dtheta ]

Proposition 1: with x^c_t = (x_t - sigma_t eps) / alpha_t the PF-ODE reads
d x^c / dt = d(sigma_t / alpha_t)/dt (eps_phi(alpha_t x^c + sigma_t eps, t) - eps), so one Euler step from t_i to
t_{i-1} < t_i,

    x^c <- x^c - (sigma_{t_i}/alpha_{t_i} - sigma_{t_{i-1}}/alpha_{t_{i-1}}) (eps_phi^cfg - eps),

is exactly one deterministic DDIM step from x_{t_i} = alpha_{t_i} x^c + sigma_{t_i} eps (``euler_step`` /
``ddim_step``). With ``weighting="euler"`` the method's gradient is that step (w = the decrement of sigma/alpha
between this step's t and the next step's), so plain gradient descent at lr 1 on a 2D point is DDIM sampling.

The noise function eps(c) (Sec. 4.1.2, Eq. 16; the world-map generator of the author's later CFD code):
- once per run: a background noise eps_b ~ N(0, I_{C x h x w}) and a world map eps_p ~ N(0, I_{C x (H+h) x W}),
  H = (180/Theta) h, W = (360/Theta) w, periodic in azimuth (columns are read modulo W).
- per view with elevation e and azimuth a (degrees): the h x w patch at row round((90 - e) H / 180) (e clamped to
  [-90, 90]), column floor((a W / 360) mod W); foreground mask m = 1[opacity > 0.5], with the render's opacity
  average-pooled to the model-space resolution (the paper's and CFD's mask); eps_det = m * patch + (1 - m) * eps_b.
- eps(c) = sqrt(beta) eps_det + sqrt(1 - beta) eps_r with eps_r ~ N(0, I) fresh every step; beta = 1 (default) is
  fully deterministic, beta = 0 is SDS's noise.
Without cameras (the 2D harness) each batch row gets its own fixed noise eps_0, drawn once.

Code versus paper:
- Rows: elevation runs continuously down the map (+90 at row 0, 0 at row H/2, -90 at row H), so views at +0.5 and
  -0.5 degrees read the same or neighbouring rows. The CFD code's row int((-e H / 180) mod H) wraps at e = 0: a view
  just above the horizon read the map's last rows and one just below its first ones (correlation ~0.03), and about
  a fifth of the default views have negative elevation.
- The paper's equations were lost in extraction; the world map follows the CFD code otherwise (Theta = 180 by
  default, so a 64x64 latent patch slides over a 64x128 map), and the blend's sqrt(beta) form is a reading of its
  ``sqrt_beta``. The fixed noises are drawn from the step's rng on the first call (so different job seeds
  give different noises, FSD's diversity), or from ``seed`` when set, and are saved in ``state_dict``.
- Schedule: HiFA's sqrt anneal t(i) = t_max - (t_max - t_min) sqrt(i / N) ("sqrt", the default; FSD's 2D runs use
  "linear") from 0.98 T down to 0.3 T (CFD's note "requires min_step_percent=0.3", HiFA-style anneals stop near
  0.3 T): annealing to t = 20 would spend half the run below t = 300.
- CFG: the paper runs 3D with SDS's CFG ("the same CFG for SDS and FSD"), so the default is SDS's 100 here (7.5 is
  its 2D table's value; the author's follow-up code uses 75). Adam on theta is the caller's (the engine's) choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..priors.base import Prior
from .base import DistillInput, DistillOutput, ScoreDistillation
from .options import DistillConfig
from .schedules import ScheduledValue
from .sds import SDS


def ddim_step(prior: Prior, x_t: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, eps_hat: torch.Tensor):
    """Deterministic DDIM (no fresh noise): x0_hat = (x_t - sigma_t eps_hat)/alpha_t, x_{t'} = alpha_t' x0_hat + sigma_t' eps_hat."""
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
    min_step_percent: ScheduledValue = 0.3  # where the anneal stops (HiFA / CFD); the 2D harness uses 0.02 or 0
    beta: float = 1.0  # blend of the fixed and a fresh noise
    theta_deg: float = 180.0  # world-map patch angle Theta (<= 360)
    opacity_threshold: float = 0.5  # foreground where the (pooled) opacity exceeds this
    seed: int | None = None  # None: draw the fixed noises from the step's rng on the first call

    extra_weightings: ClassVar[tuple[str, ...]] = ("euler",)

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"FSD's beta must lie in [0, 1] (1 = fully fixed noise); got {self.beta}")
        if not 0.0 < self.theta_deg <= 360.0:
            raise ValueError(f"FSD's theta_deg must lie in (0, 360]; got {self.theta_deg}")


class FSD(ScoreDistillation):
    """grad = w(t(tau)) (eps_cfg(alpha_t z + sigma_t eps(c), t(tau)) - eps(c)), eps(c) the fixed world-map noise."""

    name = "fsd"
    default_guidance = SDS.default_guidance  # the paper: 3D FSD runs at SDS's CFG
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

    def _init_rng(self, inp: DistillInput) -> torch.Generator:
        if self.config.seed is None:
            return inp.rng
        return torch.Generator(inp.rng.device).manual_seed(self.config.seed)

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
                self.fixed_noise = self._randn(z.shape, self._init_rng(inp), z.device)
            if self.fixed_noise.shape != z.shape:
                raise ValueError(
                    f"FSD's fixed noise has shape {tuple(self.fixed_noise.shape)} but z is {tuple(z.shape)}: "
                    "keep the batch and resolution fixed, or pass cameras to use the world-map noise"
                )
            return self.fixed_noise.to(z.device)
        shape = self.world_map_shape(c, h, w)
        if self.world_map is None:
            g = self._init_rng(inp)
            self.world_map = self._randn(shape, g, z.device)
            self.background = self._randn((c, h, w), g, z.device)
        if tuple(self.world_map.shape) != shape:
            raise ValueError(
                f"FSD's world map {tuple(self.world_map.shape)} was made for another resolution than z {tuple(z.shape)}"
            )
        world, background = self.world_map.to(z.device), self.background.to(z.device)
        rows, cols = self.patch_index(inp.camera.to(z.device), shape, h, w)
        patches = world[:, rows[:, :, None], cols[:, None, :]].permute(1, 0, 2, 3)  # (B, C, h, w)
        if inp.opacity is None:
            return patches
        mask = (self.pooled_opacity(inp.opacity, (h, w)).to(z.device) > self.config.opacity_threshold).float()
        return mask * patches + (1 - mask) * background

    @staticmethod
    def patch_index(camera: torch.Tensor, shape: tuple[int, int, int], h: int, w: int):
        """(rows (B, h), cols (B, w)) of each view's patch: row0 = round((90 - e) H / 180), col0 = floor(a W / 360)
        mod W (module docstring)."""
        big_h, big_w = shape[1] - h, shape[2]
        elev = camera[:, 0].float().clamp(-90.0, 90.0)
        row0 = torch.round((90.0 - elev) * big_h / 180.0).long().clamp(0, big_h)
        col0 = torch.remainder(camera[:, 1].float() * big_w / 360.0, big_w).long()
        rows = row0[:, None] + torch.arange(h, device=camera.device)
        cols = torch.remainder(col0[:, None] + torch.arange(w, device=camera.device), big_w)
        return rows, cols

    @staticmethod
    def pooled_opacity(opacity: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, 1, H, W) render opacity average-pooled to (B, 1, h, w): the paper's mask. (A bilinear resize would
        read only the pixels next to each sample point: 2 of 4 per axis at a 4x downsampling.)"""
        if opacity.ndim != 4 or opacity.shape[1] != 1:
            raise ValueError(f"opacity must be (B, 1, H, W) at the render's resolution, got {tuple(opacity.shape)}")
        opacity = opacity.float()
        if opacity.shape[-2:] == size:
            return opacity
        return F.adaptive_avg_pool2d(opacity, size)

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
        s = self.noised(inp, noise=self.view_noise)
        eps_cfg = self.guided(s.x_t, s.t, inp).eps_cfg
        return self.finish(self.weight_at(s.t, inp) * (eps_cfg - s.eps), s.t, inp)


__all__ = ["FSD", "FSDConfig", "ddim_step", "euler_step"]
