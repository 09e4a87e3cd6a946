"""ASD against the closed forms of the 2D Gaussian harness; its default schedule is ScaleDreamer's anneal."""

import pytest
import torch

from dreamstill.backend.distill import make_method


@pytest.mark.parametrize("s", [2.0, 7.5])
def test_asd_with_shift_zero_is_s_minus_one_times_csd(harness, s):
    h, prior = harness, harness.prior
    z = h.points()
    asd = make_method("asd", prior, guidance=s, shift_ratio=0.0, **h.uniform).gradient(h.make_input(prior, z, seed=5))
    csd = make_method("csd", prior).gradient(h.make_input(prior, z, seed=5))
    assert torch.equal(asd.t, csd.t)
    torch.testing.assert_close(asd.grad, (s - 1) * csd.grad, rtol=1e-5, atol=1e-6)
    csd_scaled = make_method("csd", prior, guidance=s - 1).gradient(h.make_input(prior, z, seed=5))
    torch.testing.assert_close(asd.grad, csd_scaled.grad, rtol=1e-5, atol=1e-6)


def test_asd_closed_form_same_noise_shifted_conditional(harness):
    h, prior = harness, harness.prior
    z = h.points()
    prior.calls = 0
    out = make_method("asd", prior, **h.uniform).gradient(h.make_input(prior, z, seed=2))
    assert prior.calls == 1  # cond@t, uncond@t and cond@t+dt in one batch
    g, t, eps = h.draws(2)
    u = torch.rand(h.B, generator=g)
    dt = (u * (0.1 * (t - 20).float()).clamp(min=0).minimum((999 - t).float())).long()
    t2 = (t + dt).clamp(1, 999)
    assert out.info["dt"] == pytest.approx(float(dt.float().mean()))
    assert ((t2 - t) <= 0.1 * (t - 20)).all() and (t2 >= t).all()
    e_c = h.closed_eps(prior, h.noised(prior, z, t, eps), t, h.MU_C, h.COV_C)
    e_u = h.closed_eps(prior, h.noised(prior, z, t, eps), t, h.MU_U, h.COV_U)
    e_c2 = h.closed_eps(prior, h.noised(prior, z, t2, eps), t2, h.MU_C, h.COV_C)
    w = (1 - prior.alphas_cumprod[t].double())[:, None]  # sigma_t^2 at t, not t + dt
    want = w * (e_u + 7.5 * (e_c - e_u) - e_c2)
    torch.testing.assert_close(out.grad.flatten(1).double(), want, rtol=1e-4, atol=1e-6)


def test_asd_shift_is_clipped_to_the_schedule_range(harness):
    h, prior = harness, harness.prior
    asd = make_method("asd", prior, shift_ratio=5.0, min_step_percent=0.5, max_step_percent=0.999)
    t = torch.tensor([500, 700, 900, 998, 999, 999])
    t2 = asd.shifted_t(t, h.make_input(prior, h.points()))
    assert (t2 <= 999).all() and (t2 >= t).all()


@pytest.mark.parametrize("total", [100, 50_000])
def test_asd_default_anneals_500_980_to_20_500_over_the_run(harness, total):
    """ScaleDreamer's 3D schedule, scaled to the run: [500, 980] at the start, [260, 740] halfway, [20, 500] at the
    end, for a per-prompt run and an amortized one alike (both pass total_steps)."""
    h, prior = harness, harness.prior
    asd = make_method("asd", prior)
    bounds = [asd.t_bounds(h.make_input(prior, h.points(), step=s, total=total)) for s in (0, total // 2, total)]
    assert bounds == [(500, 980), (260, 740), (20, 500)]
    ts = asd.gradient(h.make_input(prior, h.points(), step=total, total=total)).t
    assert (ts >= 20).all() and (ts <= 500).all()


def test_asd_old_option_name_eta_still_works_with_a_warning(harness):
    with pytest.warns(FutureWarning, match="shift_ratio"):
        asd = make_method("asd", harness.prior, eta=0.2)
    assert asd.config.shift_ratio == 0.2
    with pytest.raises(ValueError, match="shift_ratio"):
        make_method("asd", harness.prior, shift_ratio=-1.0)
