"""Timestep samplers, timestep weightings w(t), gradient clipping and threestudio-style scheduled values.

Timesteps are integers t in [0, T) indexing the prior's alphas_cumprod (T = num_train_timesteps, 1000 for DDPM/SD).
Ranges are given as fractions of T, as threestudio's ``min_step_percent``/``max_step_percent``:
t_min = int(T * min_step_percent), t_max = int(T * max_step_percent).

Any scalar hyper-parameter here may be a *scheduled value*, as threestudio's ``C()``:
    x                                  a constant;
    [start_value, end_value, end_step] linear from step 0 to end_step;
    [start_step, start_value, end_value, end_step]
                                       start_value before start_step, end_value after end_step, linear in between
                                       (end_step <= start_step: a hard switch at end_step).
Step bounds (start_step, end_step) say WHEN, in one of two unambiguous spellings:
    an integer                         an optimisation step (5000 = step 5000; 1 = step 1);
    a string "P%"                      that share of the run's total_steps ("50%" = halfway, "100%" = the end).
A float step bound (1.0, 0.5, 5000.0) is refused: JSON clients cannot tell 1 from 1.0, and threestudio's floats
mean epochs. ``["20%", 0.98, 0.5, "20%"]`` is ProlificDreamer's hard drop of max_step_percent at a fifth of the run.

Samplers (all draw from the torch.Generator they are given):
- "uniform":  t ~ U{t_min, ..., t_max} per sample (DreamFusion's U(0.02, 0.98) by default), with t_min/t_max possibly
  scheduled (threestudio's step schedules).
- "sqrt" (HiFA, arXiv 2305.18766): the deterministic anneal t(i) = t_max - (t_max - t_min) sqrt(i / N),
  N = total_steps (i = step); FSD's 3D schedule.
- "linear": t(i) = t_max - (t_max - t_min) i / N (FSD's 2D schedule; DreamTime-like).

Weightings w(t) (alpha_t^2 = abar_t, sigma_t^2 = 1 - abar_t):
- "sds": sigma_t^2 = 1 - abar_t (DreamFusion; threestudio's default "sds"; ProlificDreamer's and ASD's sigma_t^2).
- "uniform": 1.
- "fantasia3d": alpha_t sigma_t^2 = sqrt(abar_t)(1 - abar_t) (threestudio's "fantasia3d").
- "snr_inverse": sigma_t / alpha_t (the rate d(sigma/alpha) of DDIM; FSD's Euler reading).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

ScheduledValue = float | int | list | tuple  # see scheduled_value; step bounds: int steps or "P%" strings

SAMPLERS = ("uniform", "sqrt", "linear")
WEIGHTINGS = ("sds", "uniform", "fantasia3d", "snr_inverse")
CLIP_MODES = ("value", "norm")


def step_bound(bound, total_steps: int, value=None) -> float:
    """A schedule's step bound as a step number: an int is a step, "P%" is P percent of ``total_steps``."""
    where = f" in the scheduled value {value!r}" if value is not None else ""
    if isinstance(bound, bool) or isinstance(bound, float):
        raise ValueError(
            f"step bound {bound!r}{where} is ambiguous: write an integer step (e.g. 5000) or a share of the run as a "
            f'string (e.g. "50%"; "100%" = the last step)'
        )
    if isinstance(bound, int):
        if bound < 0:
            raise ValueError(f"step bound {bound}{where} is negative; steps count from 0")
        return float(bound)
    if isinstance(bound, str) and bound.strip().endswith("%"):
        try:
            share = float(bound.strip()[:-1])
        except ValueError:
            share = float("nan")
        if not 0.0 <= share <= 100.0:
            raise ValueError(f'step bound {bound!r}{where}: a share of the run lies in "0%".."100%"')
        return share / 100.0 * total_steps
    raise ValueError(
        f'step bound {bound!r}{where}: write an integer step (e.g. 5000) or a share of the run such as "50%"'
    )


def _schedule_parts(value) -> tuple:
    value = list(value)
    if len(value) == 3:
        value = [0] + value
    if len(value) != 4:
        raise ValueError(
            f"a scheduled value is a number, [start, end, end_step] or [start_step, start, end, end_step]; got {value}"
        )
    for v in value[1:3]:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"the start and end of the scheduled value {value!r} must be numbers, got {v!r}")
    return tuple(value)


def scheduled_value(value: ScheduledValue | None, step: int, total_steps: int) -> float | None:
    """Evaluate a constant or a threestudio ``C()`` schedule at ``step`` (see module docstring)."""
    if value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        raise ValueError(f"a scheduled value is a number or a list, got the string {value!r}")
    start_step, start_value, end_value, end_step = _schedule_parts(value)
    start_step, end_step = step_bound(start_step, total_steps, value), step_bound(end_step, total_steps, value)
    if end_step <= start_step:
        return float(end_value if step >= end_step else start_value)
    frac = min(max((step - start_step) / (end_step - start_step), 0.0), 1.0)
    return float(start_value + (end_value - start_value) * frac)


def check_scheduled_value(name: str, value: ScheduledValue | None, low: float | None = None, high: float | None = None):
    """Raise a ValueError naming ``name`` if ``value`` is malformed, or leaves [low, high] at either end."""
    try:
        ends = [scheduled_value(value, s, 100) for s in (0, 100)]
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
    if value is not None and not isinstance(value, (int, float)):
        ends += [float(v) for v in _schedule_parts(value)[1:3]]
    for v in ends:
        if v is not None and ((low is not None and v < low) or (high is not None and v > high)):
            raise ValueError(f"{name} = {value!r} reaches {v}, outside [{low}, {high}]")


@dataclass
class TimestepSchedule:
    """Where t comes from. ``sampler`` in SAMPLERS; percentages of T may be scheduled values."""

    sampler: str = "uniform"
    min_step_percent: ScheduledValue = 0.02
    max_step_percent: ScheduledValue = 0.98
    per_sample: bool = True  # one t per batch element (SD); False shares one t across the batch (MVDream's 4 views)
    ceiling: float = 1.0  # a stage's cap on both bounds (threestudio's refine stages sample t in [0.02, 0.5])

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown timestep sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        check_scheduled_value("min_step_percent", self.min_step_percent, 0.0, 1.0)
        check_scheduled_value("max_step_percent", self.max_step_percent, 0.0, 1.0)
        if not 0.0 < self.ceiling <= 1.0:
            raise ValueError(f"the timestep ceiling is a fraction of T in (0, 1]; got {self.ceiling}")

    def bounds(self, step: int, total_steps: int, num_train_timesteps: int) -> tuple[int, int]:
        """(t_min, t_max) at this step as integers, clamped to [1, T-1] (t = 0 has sigma = 0 in DDPM), both at most
        ``ceiling`` T."""
        lo = scheduled_value(self.min_step_percent, step, total_steps)
        hi = scheduled_value(self.max_step_percent, step, total_steps)
        if not (0.0 <= lo <= hi <= 1.0):
            raise ValueError(f"need 0 <= min_step_percent <= max_step_percent <= 1, got {lo} and {hi} at step {step}")
        lo, hi = min(lo, self.ceiling), min(hi, self.ceiling)
        t_min = min(max(int(num_train_timesteps * lo), 1), num_train_timesteps - 1)
        t_max = min(max(int(num_train_timesteps * hi), t_min), num_train_timesteps - 1)
        return t_min, t_max

    def deterministic_t(self, step: int, total_steps: int, num_train_timesteps: int) -> int:
        """The decreasing schedules' t(step): T_max - (T_max - T_min) f(step / total_steps), f = sqrt or identity."""
        t_min, t_max = self.bounds(step, total_steps, num_train_timesteps)
        frac = min(max(step / max(total_steps, 1), 0.0), 1.0)
        f = math.sqrt(frac) if self.sampler == "sqrt" else frac
        return int(round(t_max - (t_max - t_min) * f))

    def sample(
        self,
        batch: int,
        step: int,
        total_steps: int,
        num_train_timesteps: int,
        rng: torch.Generator,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """(batch,) long timesteps on ``device``; draws from ``rng`` only for the uniform sampler."""
        if self.sampler == "uniform":
            t_min, t_max = self.bounds(step, total_steps, num_train_timesteps)
            n = batch if self.per_sample else 1
            t = torch.randint(t_min, t_max + 1, (n,), generator=rng, device=rng.device)
            return t.expand(batch).to(device)
        t = self.deterministic_t(step, total_steps, num_train_timesteps)
        return torch.full((batch,), t, dtype=torch.long, device=device)


def hifa_sqrt_anneal(step: int, total_steps: int, t_min: float, t_max: float) -> float:
    """HiFA: t(i) = T_max - (T_max - T_min) sqrt(i / N) (continuous; t(0) = T_max, t(N) = T_min)."""
    return t_max - (t_max - t_min) * math.sqrt(min(max(step / total_steps, 0.0), 1.0))


def weighting(name: str, alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """w(t) as a (B,) float32 tensor for the named weighting (see module docstring)."""
    abar = alphas_cumprod.to(t.device)[t].float()
    if name == "sds":
        return 1.0 - abar
    if name == "uniform":
        return torch.ones_like(abar)
    if name == "fantasia3d":
        return abar.sqrt() * (1.0 - abar)
    if name == "snr_inverse":
        return ((1.0 - abar) / abar).sqrt()
    raise ValueError(f"unknown weighting {name!r}; choose one of {', '.join(WEIGHTINGS)}")


def clip_gradient(grad: torch.Tensor, clip: float | None, mode: str = "value") -> torch.Tensor:
    """threestudio's grad_clip: "value" clamps each element to [-clip, clip]; "norm" rescales each sample so its
    L2 norm is at most ``clip``. None or a non-positive clip leaves the gradient as it is."""
    if clip is None or clip <= 0:
        return grad
    if mode == "value":
        return grad.clamp(-clip, clip)
    if mode == "norm":
        norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.ndim - 1)))
        return grad * (clip / norm).clamp(max=1.0)
    raise ValueError(f"unknown grad_clip_mode {mode!r}; choose one of {', '.join(CLIP_MODES)}")


__all__ = [
    "CLIP_MODES",
    "SAMPLERS",
    "TimestepSchedule",
    "WEIGHTINGS",
    "clip_gradient",
    "hifa_sqrt_anneal",
    "check_scheduled_value",
    "scheduled_value",
    "step_bound",
    "weighting",
]
