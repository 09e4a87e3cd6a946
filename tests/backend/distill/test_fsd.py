"""FSD: Euler steps are DDIM steps, the world-map noise (periodic in azimuth, continuous in elevation), the pooled
opacity mask, the paper's 3D defaults, and its state in checkpoints."""

import io

import pytest
import torch

from dreamstill.backend.distill import DistillInput, make_method
from dreamstill.backend.distill.fsd import ddim_step, euler_step
from dreamstill.backend.priors.analytic import GaussianPrior


def test_fsd_euler_step_is_one_ddim_step(harness):
    """Gradient descent at lr 1 with weighting "euler" moves x^c so that alpha_t' x^c + sigma_t' eps is DDIM's x_t'."""
    h, prior = harness, harness.prior
    fsd = make_method("fsd", prior, guidance=7.5, weighting="euler", t_sampler="linear", min_step_percent=0.0, seed=0)
    total = 10
    x_c = h.points()
    eps = None
    for step in range(total):
        inp = h.make_input(prior, x_c, step=step, total=total)
        out = fsd.gradient(inp)
        eps = fsd.fixed_noise if eps is None else eps
        assert torch.equal(fsd.fixed_noise, eps)  # the noise stays fixed
        t, t_next = out.t, fsd.next_t(inp)
        x_t = prior.add_noise(x_c, eps, t)
        eps_hat, _, _ = prior.predict_eps_cfg(x_t, t, inp.cond, inp.uncond, 7.5)
        want = ddim_step(prior, x_t, t, t_next, eps_hat)
        x_c = x_c - out.grad
        torch.testing.assert_close(prior.add_noise(x_c, eps, t_next), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x_c, euler_step(prior, x_c + out.grad, eps, t, t_next, eps_hat))
    assert int(t_next[0]) == 1  # reached the end of the schedule


def _views(p, cams, opacity=None, step=0):
    return DistillInput(
        torch.zeros(len(cams), *p.latent_shape),
        p.encode_text(["a"]),
        p.encode_text([""]),
        step,
        10,
        torch.Generator().manual_seed(0),
        camera=cams,
        opacity=opacity,
    )


def _cams(elev, azim):
    elev, azim = torch.as_tensor(elev, dtype=torch.float32), torch.as_tensor(azim, dtype=torch.float32)
    return torch.stack([elev, azim, torch.full_like(elev, 3.0), torch.full_like(elev, 45.0)], 1)


@pytest.fixture()
def patch_prior():
    return GaussianPrior(torch.zeros(4 * 8 * 8), torch.eye(256), shape=(4, 8, 8))


def test_fsd_world_map_noise(patch_prior):
    p = patch_prior
    fsd = make_method("fsd", p)
    cams = _cams([10.0, 10.0, 10.0, 10.0], [30.0, 390.0, 210.0, 30.0])
    opacity = torch.ones(4, 1, 8, 8)
    opacity[3] = 0.0
    inp = _views(p, cams, opacity)
    n = fsd.view_noise(inp)
    assert fsd.world_map.shape == (4, 16, 16)  # Theta = 180: H = h, W = 2w, plus h extra rows
    torch.testing.assert_close(n[0], n[1])  # azimuth is periodic
    assert not torch.isin(n[2], n[0]).any()  # 180 degrees on: the next patch, no shared entries
    torch.testing.assert_close(n[3], fsd.background)  # transparent: background noise
    torch.testing.assert_close(fsd.view_noise(inp), n)  # fixed across steps
    # a 1-column azimuth step slides the patch by one column
    cams2 = cams.clone()
    cams2[:, 1] += 360.0 / 16
    torch.testing.assert_close(fsd.view_noise(_views(p, cams2, torch.ones(4, 1, 8, 8)))[0, :, :, :-1], n[0, :, :, 1:])
    # state round trip, and beta = 0 gives fresh noise
    other = make_method("fsd", p)
    other.load_state_dict(fsd.state_dict())
    torch.testing.assert_close(other.view_noise(inp), n)
    fresh = make_method("fsd", p, beta=0.0)
    assert not torch.allclose(fresh.view_noise(inp), fresh.view_noise(inp))


def test_world_map_noise_is_continuous_across_the_horizon(patch_prior):
    """Views at +0.5 and -0.5 degrees elevation get (nearly) the same noise; before, the map wrapped at 0 degrees
    and gave them unrelated patches (correlation 0.03). And along an elevation sweep from -60 to 60 degrees every
    next view's patch is the previous one moved by at most one row."""
    fsd = make_method("fsd", patch_prior)
    pair = fsd.view_noise(_views(patch_prior, _cams([0.5, -0.5], [40.0, 40.0])))
    corr = torch.corrcoef(torch.stack([pair[0].flatten(), pair[1].flatten()]))[0, 1]
    assert corr > 0.9
    elev = torch.arange(-60.0, 60.25, 0.25)
    sweep = fsd.view_noise(_views(patch_prior, _cams(elev, torch.full_like(elev, 40.0))))
    for lower, upper in zip(sweep[:-1], sweep[1:]):  # elevation rises: the patch moves up the map
        assert torch.equal(lower, upper) or torch.equal(lower[:, :-1], upper[:, 1:])


def test_fsd_pools_full_resolution_opacity_for_its_mask(patch_prior):
    """The mask is 1[avg-pooled opacity > 0.5]: a 4x4 block opaque only on its outer ring (12/16 = 0.75) is
    foreground. (A bilinear 4x downsampling reads the block's 4 inner pixels only and would call it background.)"""
    fsd = make_method("fsd", patch_prior)
    ring = torch.ones(4, 4)
    ring[1:3, 1:3] = 0.0
    opacity = ring.repeat(8, 8).view(1, 1, 32, 32)
    noise = fsd.view_noise(_views(patch_prior, _cams([10.0], [30.0]), opacity))
    patch = fsd.view_noise(_views(patch_prior, _cams([10.0], [30.0])))
    torch.testing.assert_close(noise, patch)
    bilinear = torch.nn.functional.interpolate(opacity, size=(8, 8), mode="bilinear", align_corners=False)
    assert float(bilinear.max()) < 0.5  # what the engine's bilinear resize hands over today
    with pytest.raises(ValueError, match="opacity must be"):
        fsd.view_noise(_views(patch_prior, _cams([10.0], [30.0]), torch.ones(1, 32, 32)))


def test_fsd_defaults_are_the_papers_3d_ones(harness):
    """CFG as SDS's (the paper runs 3D FSD at SDS's CFG), and the sqrt anneal from 980 down to 300, not 20."""
    h, prior = harness, harness.prior
    fsd = make_method("fsd", prior)
    assert fsd.guidance == make_method("sds", prior).guidance == 100.0
    ts = [int(fsd.gradient(h.make_input(prior, h.points(), step=s, total=100)).t[0]) for s in range(0, 101, 25)]
    assert ts == sorted(ts, reverse=True) and ts[0] == 980 and ts[-1] == 300
    assert ts[1] == round(980 - 680 * 0.5)  # sqrt: the first quarter of the run covers half the range


def test_fsd_state_survives_a_weights_only_checkpoint(tiny_prior):
    def inp(seed):
        z = tiny_prior.encode_images(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(9)))
        opacity = torch.zeros(2, 1, 32, 32)
        opacity[:, :, 8:24, 8:24] = 1.0
        return DistillInput(
            z.detach(),
            tiny_prior.encode_text(["a red cube, front view", "a red cube, back view"]),
            tiny_prior.encode_text([""]),
            3,
            10,
            torch.Generator().manual_seed(seed),
            camera=_cams([15.0, 0.0], [30.0, -120.0]),
            opacity=opacity,
        )

    fsd = make_method("fsd", tiny_prior)
    first = fsd.gradient(inp(0))
    buf = io.BytesIO()
    torch.save(fsd.state_dict(), buf)
    buf.seek(0)
    resumed = make_method("fsd", tiny_prior)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    # a different generator: the world map comes from the checkpoint, not from a fresh draw
    torch.testing.assert_close(resumed.gradient(inp(123)).grad, first.grad)


def test_fsd_options_are_checked(harness):
    with pytest.raises(ValueError, match="beta"):
        make_method("fsd", harness.prior, beta=2.0)
    with pytest.raises(ValueError, match="theta_deg"):
        make_method("fsd", harness.prior, theta_deg=0.0)
