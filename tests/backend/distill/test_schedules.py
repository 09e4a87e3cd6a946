"""Timestep samplers, threestudio C() schedules, weightings and clipping."""

import math

import pytest
import torch

from dreamstill.backend.distill.options import DistillConfig
from dreamstill.backend.distill.schedules import (
    TimestepSchedule,
    clip_gradient,
    hifa_sqrt_anneal,
    scheduled_value,
    step_bound,
    weighting,
)
from dreamstill.backend.priors.analytic import ddpm_alphas_cumprod


def test_hifa_sqrt_anneal_endpoints_and_shape():
    assert hifa_sqrt_anneal(0, 100, 20, 980) == 980
    assert hifa_sqrt_anneal(100, 100, 20, 980) == 20
    assert hifa_sqrt_anneal(25, 100, 20, 980) == pytest.approx(980 - 960 * 0.5)
    s = TimestepSchedule("sqrt", 0.02, 0.98)
    g = torch.Generator().manual_seed(0)
    ts = [int(s.sample(2, i, 100, 1000, g)[0]) for i in range(101)]
    assert ts[0] == 980 and ts[-1] == 20 and ts[25] == 500
    assert all(a >= b for a, b in zip(ts, ts[1:]))
    # sqrt falls fastest at the start: the first quarter covers half the range
    lin = TimestepSchedule("linear", 0.02, 0.98)
    assert int(lin.sample(1, 25, 100, 1000, g)[0]) == 740


def test_threestudio_scheduled_values():
    assert scheduled_value(0.5, 10, 100) == 0.5
    hard_drop = [5000, 0.98, 0.5, 5001]  # ProlificDreamer's max_step_percent
    assert scheduled_value(hard_drop, 4999, 15000) == 0.98
    assert scheduled_value(hard_drop, 5001, 15000) == 0.5
    assert scheduled_value([0.98, 0.5, 100], 50, 1000) == pytest.approx(0.74)  # 3 entries: start at step 0
    assert scheduled_value([0, 0.5, 0.02, "100%"], 500, 1000) == pytest.approx(0.26)  # "P%" = share of the run
    assert scheduled_value(["20%", 0.98, 0.5, "20%"], 199, 1000) == 0.98  # a hard drop at a fifth of the run
    assert scheduled_value(["20%", 0.98, 0.5, "20%"], 200, 1000) == 0.5
    with pytest.raises(ValueError, match="scheduled value"):
        scheduled_value([1, 2], 0, 10)


def test_step_bounds_are_unambiguous():
    """An int bound is a step (1 = step 1), "P%" a share of the run; a float (1 vs 1.0 in JSON) is refused."""
    assert step_bound(1, 1000) == 1.0
    assert step_bound("100%", 1000) == 1000.0 and step_bound("2.5%", 1000) == 25.0
    assert scheduled_value([0, 0.0, 1.0, 1], 1, 1000) == 1.0  # int 1: the ramp ends at step 1
    assert scheduled_value([0, 0.0, 1.0, "100%"], 1, 1000) == pytest.approx(0.001)
    for bad in (1.0, 0.5, 5000.0, True):
        with pytest.raises(ValueError, match="ambiguous"):
            scheduled_value([0, 0.0, 1.0, bad], 1, 1000)
    for bad in ("150%", "half", "-5%", -3):
        with pytest.raises(ValueError, match="step bound"):
            step_bound(bad, 1000)
    with pytest.raises(ValueError, match="min_step_percent.*ambiguous"):
        DistillConfig(min_step_percent=[0, 0.5, 0.02, 1.0])  # refused when the options are parsed, not at the step
    with pytest.raises(ValueError, match="outside"):
        DistillConfig(max_step_percent=[0, 0.98, 1.5, "100%"])


def test_uniform_sampler_range_and_annealing():
    g = torch.Generator().manual_seed(0)
    s = TimestepSchedule("uniform", 0.02, [0, 0.98, 0.5, 100])
    t0 = s.sample(4000, 0, 100, 1000, g)
    assert t0.min() >= 20 and t0.max() <= 980 and t0.min() < 25 and t0.max() > 975
    t_end = s.sample(4000, 100, 100, 1000, g)
    assert t_end.max() <= 500
    shared = TimestepSchedule("uniform", per_sample=False).sample(4, 0, 10, 1000, g)
    assert (shared == shared[0]).all()
    with pytest.raises(ValueError, match="min_step_percent"):
        TimestepSchedule("uniform", 0.9, 0.1).sample(1, 0, 1, 1000, g)
    with pytest.raises(ValueError, match="sampler"):
        TimestepSchedule("cosine")


def test_a_ceiling_caps_both_bounds_and_the_deterministic_anneal():
    g = torch.Generator().manual_seed(0)
    capped = TimestepSchedule("uniform", [0, 0.5, 0.02, 100], 0.98, ceiling=0.3)
    assert capped.bounds(0, 100, 1000) == (300, 300)  # the annealed floor (0.5) is held at the ceiling too
    assert capped.bounds(100, 100, 1000) == (20, 300)
    assert capped.sample(4000, 50, 100, 1000, g).max() <= 300
    sqrt = TimestepSchedule("sqrt", 0.02, 0.98, ceiling=0.5)
    assert sqrt.deterministic_t(0, 100, 1000) == 500 and sqrt.deterministic_t(100, 100, 1000) == 20
    with pytest.raises(ValueError, match="ceiling"):
        TimestepSchedule(ceiling=0.0)


def test_sampler_is_reproducible_from_the_generator():
    s = TimestepSchedule()
    a = s.sample(8, 0, 10, 1000, torch.Generator().manual_seed(3))
    b = s.sample(8, 0, 10, 1000, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_weightings():
    ac = ddpm_alphas_cumprod()
    t = torch.tensor([1, 500, 999])
    abar = ac[t]
    torch.testing.assert_close(weighting("sds", ac, t), 1 - abar)
    torch.testing.assert_close(weighting("uniform", ac, t), torch.ones(3))
    torch.testing.assert_close(weighting("fantasia3d", ac, t), abar.sqrt() * (1 - abar))
    torch.testing.assert_close(weighting("snr_inverse", ac, t), ((1 - abar) / abar).sqrt())
    with pytest.raises(ValueError, match="choose one of"):
        weighting("p2", ac, t)
    with pytest.raises(ValueError, match="weighting"):
        DistillConfig(weighting="p2")


def test_clip_gradient():
    g = torch.tensor([[3.0, -4.0], [0.3, 0.4]]).view(2, 2, 1, 1)
    torch.testing.assert_close(clip_gradient(g, 1.0), g.clamp(-1, 1))
    n = clip_gradient(g, 1.0, "norm")
    torch.testing.assert_close(n[0].flatten(), torch.tensor([0.6, -0.8]))
    torch.testing.assert_close(n[1], g[1])  # already inside the ball
    assert clip_gradient(g, None) is g
    assert math.isclose(float(clip_gradient(g, 0.0).sum()), float(g.sum()))
