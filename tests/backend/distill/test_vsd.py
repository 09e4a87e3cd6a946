"""VSD: identities and properties in the 2D harness, and VSD with the LoRA score model on the tiny random UNet.

2D harness: "images" are points (B, 2, 1, 1), the renderer is the identity, and the prior is an exact noised
Gaussian (backend/priors/analytic.py), so every score is known in closed form.
"""

import pytest
import torch

from dreamstill.backend.distill import DistillInput, make_method, surrogate_loss
from dreamstill.backend.distill.vsd import GaussianScoreNet
from dreamstill.backend.priors.analytic import GaussianPrior, empirical_eps

MEAN = torch.tensor([1.0, -0.5])
COV = torch.tensor([[0.5, 0.2], [0.2, 0.3]])
CAMERA = torch.tensor([[15.0, 30.0, 2.7, 45.0], [0.0, -120.0, 3.0, 40.0]])


@pytest.fixture(scope="module")
def gauss():
    prior = GaussianPrior(MEAN, COV)
    return prior, prior.encode_text(["a point"]), prior.encode_text([""])


def _inp(z, cond, uncond, seed=0, step=0):
    return DistillInput(z, cond, uncond, step, 100, torch.Generator().manual_seed(seed), camera=CAMERA[: len(z)])


def test_point_mass_score_model_gives_sds(gauss):
    """VSD with eps_phi = the noised score of a point mass at each particle is SDS, to float precision.

    For mu = delta(theta_i), q_t(x_t) = N(alpha_t theta_i, sigma_t^2 I) and -sigma_t grad log q_t(x_t) =
    (x_t - alpha_t theta_i) / sigma_t. At x_t = alpha_t theta_i + sigma_t eps this is eps itself, so
    w(t)(eps_cfg - eps_phi) = w(t)(eps_cfg - eps): the SDS gradient with the same t and eps.
    """
    prior, cond, uncond = gauss
    z = torch.randn(16, 2, 1, 1, generator=torch.Generator().manual_seed(1)) * 2

    def point_mass_eps(x_t, t):
        alpha, sigma = prior.alpha_sigma(t)
        return (x_t - alpha * z) / sigma

    opts = dict(min_step_percent=0.02, max_step_percent=0.98)
    vsd = make_method("vsd", prior, guidance=7.5, score_model=point_mass_eps, **opts)
    sds = make_method("sds", prior, guidance=7.5, **opts)
    for step in range(3):
        a = vsd.gradient(DistillInput(z, cond, uncond, step, 10, torch.Generator().manual_seed(step)))
        b = sds.gradient(DistillInput(z, cond, uncond, step, 10, torch.Generator().manual_seed(step)))
        assert torch.equal(a.t, b.t)
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)
    # and the score model matters: the empirical score of the whole (spread-out) set is not the point mass
    mix = make_method(
        "vsd", prior, guidance=7.5, score_model=lambda x, t: empirical_eps(x, t, z, prior.alphas_cumprod), **opts
    )
    c = mix.gradient(DistillInput(z, cond, uncond, 0, 10, torch.Generator().manual_seed(0)))
    b = sds.gradient(DistillInput(z, cond, uncond, 0, 10, torch.Generator().manual_seed(0)))
    assert (c.grad - b.grad).abs().max() > 1e-3


def test_vsd_cfg1_with_exact_particle_score_recovers_target(gauss):
    """Particles follow VSD's flow at CFG 1 with eps_phi = the exact noised score of the current particle set
    (PD Theorem 2: the flow's fixed point is mu = p_0): they end at the target's mean and covariance."""
    prior, cond, uncond = gauss
    g = torch.Generator().manual_seed(0)
    n = 64
    theta = (torch.randn(n, 2, generator=g) * 0.3 + torch.tensor([-1.0, 1.0])).view(n, 2, 1, 1).requires_grad_()
    vsd = make_method(
        "vsd",
        prior,
        guidance=1.0,
        score_model=lambda x_t, t: empirical_eps(x_t, t, theta.detach(), prior.alphas_cumprod),
        max_step_percent=0.98,
    )
    opt = torch.optim.Adam([theta], lr=0.05)
    steps = 300
    for i in range(steps):
        out = vsd.gradient(DistillInput(theta, cond, uncond, i, steps, g))
        opt.zero_grad()
        surrogate_loss(theta, out.grad).backward()
        opt.step()
    x = theta.detach().view(n, 2)
    assert (x.mean(0) - MEAN).norm() < 0.03 * MEAN.norm()
    cov = torch.cov(x.T)
    assert (cov - COV).norm() / COV.norm() < 0.05, cov


def test_vsd_gradient_norm_far_below_sds_at_100(gauss):
    """ASD paper's claim, VSD's side: ||grad_VSD|| at CFG 7.5 is far below ||grad_SDS|| at CFG 100 (>10x), here at
    particles drawn from the target with the exact score of those particles as eps_phi."""
    prior, cond, uncond = gauss
    z = prior.sample(64, torch.Generator().manual_seed(3))
    vsd = make_method(
        "vsd", prior, guidance=7.5, score_model=lambda x, t: empirical_eps(x, t, z, prior.alphas_cumprod, 0.1)
    )
    sds = make_method("sds", prior, guidance=100.0)
    vsd_norm = sds_norm = 0.0
    for step in range(4):
        vsd_norm += vsd.gradient(
            DistillInput(z, cond, uncond, step, 100, torch.Generator().manual_seed(step))
        ).grad.norm()
        sds_norm += sds.gradient(
            DistillInput(z, cond, uncond, step, 100, torch.Generator().manual_seed(step))
        ).grad.norm()
    assert sds_norm > 10 * vsd_norm, (float(sds_norm), float(vsd_norm))


def test_lookahead_order_uses_the_updated_score_model(gauss):
    """order="vsd" computes the gradient with phi_i and then steps phi; "lookahead" steps first. With the same draws
    the two gradients differ exactly by w(t)(eps_{phi_i} - eps_{phi_{i+1}}) at the distillation input."""
    prior, cond, uncond = gauss
    z = prior.sample(8, torch.Generator().manual_seed(4)) + 1.0
    out, nets = {}, {}
    for order in ("vsd", "lookahead"):
        net = GaussianScoreNet(prior.alphas_cumprod, 2)
        m = make_method("vsd", prior, score_net=net, order=order, lora_lr=0.1)
        out[order] = m.gradient(DistillInput(z, cond, uncond, 0, 10, torch.Generator().manual_seed(0)))
        nets[order] = net
    # both nets took the same single step (same draws: t, eps, then the score-model sample)
    for a, b in zip(nets["vsd"].parameters(), nets["lookahead"].parameters()):
        torch.testing.assert_close(a, b)
    t = out["vsd"].t
    # the distillation draws (t, then eps) come first from the generator, as VSD.noisy makes them
    m = make_method("vsd", prior, score_net=GaussianScoreNet(prior.alphas_cumprod, 2))
    s = m.noised(DistillInput(z, cond, uncond, 0, 10, torch.Generator().manual_seed(0)))
    t2, x_t = s.t, s.x_t
    assert torch.equal(t, t2)
    fresh = GaussianScoreNet(prior.alphas_cumprod, 2)
    with torch.no_grad():
        diff = fresh(x_t, t) - nets["vsd"](x_t, t)
    w = (1 - prior.alphas_cumprod[t]).view(-1, 1, 1, 1)
    torch.testing.assert_close(out["lookahead"].grad - out["vsd"].grad, w * diff, rtol=1e-4, atol=1e-6)


def test_vsd_options_are_checked(gauss):
    prior, _, _ = gauss
    with pytest.raises(ValueError, match="order"):
        make_method("vsd", prior, order="backwards")
    with pytest.raises(ValueError, match="lora_steps"):
        make_method("vsd", prior, lora_steps_per_iter=-1)
    with pytest.raises(ValueError, match="lora_target"):
        make_method("vsd", prior, lora_target="x0")


def test_vsd_default_drops_t_max_after_a_fifth_of_the_run(gauss):
    prior, cond, uncond = gauss
    vsd = make_method("vsd", prior, score_net=GaussianScoreNet(prior.alphas_cumprod, 2))
    z = torch.zeros(2, 2, 1, 1)
    bounds = [vsd.t_bounds(DistillInput(z, cond, uncond, s, 1000, torch.Generator())) for s in (199, 200)]
    assert bounds == [(20, 980), (20, 500)]


def test_checkpoint_round_trip_of_lora_state(tiny8):
    """state_dict -> a new VSD (other init seed) -> load: same phi, same optimizer state, same next gradient."""
    prior, cond, uncond = tiny8
    z = torch.rand(2, *prior.latent_shape, generator=torch.Generator().manual_seed(4)) * 2 - 1
    a = make_method("vsd", prior, lora_lr=1e-2)
    a.gradient(_inp(z, cond, uncond, seed=1, step=0))
    state = a.state_dict()
    b = make_method("vsd", prior, lora_lr=1e-2, lora_seed=5)
    assert any(
        not torch.equal(x, y) for x, y in zip(a.score.net.trainable().values(), b.score.net.trainable().values())
    )
    b.load_state_dict(state)
    for x, y in zip(a.score.net.trainable().values(), b.score.net.trainable().values()):
        assert torch.equal(x, y)
    ga = a.gradient(_inp(z, cond, uncond, seed=2, step=1))
    gb = b.gradient(_inp(z, cond, uncond, seed=2, step=1))
    torch.testing.assert_close(ga.grad, gb.grad, rtol=0, atol=1e-6)
    for x, y in zip(a.score.net.trainable().values(), b.score.net.trainable().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-7)  # the AdamW moments came along too
    with pytest.raises(ValueError, match="same options"):
        make_method("vsd", prior, lora_rank=2).load_state_dict(state)


def test_lora_path_on_a_camera_conditioned_v_prediction_prior():
    """The LoRA goes through the prior's own unet_forward: v -> eps conversion and the prior's camera features
    (class_labels) still apply; a fresh LoRA equals the prior, and VSD / L2-VSD gradients are finite."""
    from dreamstill.backend.priors.tiny import build_tiny_prior

    prior = build_tiny_prior(seed=1, image_size=8, camera=True, prediction_type="v_prediction")
    cond, uncond = prior.encode_text(["a blue cone"]), prior.encode_text([""])
    z = torch.rand(2, *prior.latent_shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    t = torch.tensor([300, 900])
    x = prior.add_noise(z, torch.randn(z.shape, generator=torch.Generator().manual_seed(1)), t)
    for name in ("vsd", "l2vsd"):
        m = make_method(name, prior, lora_lr=1e-2)
        inp = _inp(z, cond, uncond)
        torch.testing.assert_close(m.score.eps(x, t, inp), prior.predict_eps(x, t, cond.expand_to(2), CAMERA))
        out = m.gradient(inp)
        assert out.grad.shape == z.shape and torch.isfinite(out.grad).all()
        assert out.info["lora_loss"] > 0
    # camera dropout zeroes the LoRA's pose input, row by row, with probability camera_dropout
    m = make_method("vsd", prior, lora_camera_dropout=1.0)
    _, _, _, pose = m.score.training_sample(z, _inp(z, cond, uncond))
    assert torch.equal(pose, torch.zeros_like(pose))
    m = make_method("vsd", prior, lora_camera_dropout=0.0)
    _, _, _, pose = m.score.training_sample(z, _inp(z, cond, uncond))
    assert (pose.abs().sum(1) > 0).all()
