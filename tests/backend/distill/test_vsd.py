"""VSD and L2-VSD: identities and properties in the 2D harness, the LoRA score model on the tiny random UNet.

2D harness: "images" are points (B, 2, 1, 1), the renderer is the identity, and the prior is an exact noised
Gaussian (backend/distill/analytic.py), so every score is known in closed form.
"""

import pytest
import torch
from torch.func import functional_call

from dreamstill.backend.distill import DistillInput, make_method, surrogate_loss
from dreamstill.backend.distill.l2vsd import L2VSD
from dreamstill.backend.distill.lora import math_attention
from dreamstill.backend.distill.vsd import GaussianScoreNet
from dreamstill.backend.priors.analytic import GaussianPrior, empirical_eps

MEAN = torch.tensor([1.0, -0.5])
COV = torch.tensor([[0.5, 0.2], [0.2, 0.3]])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tests are many small ops: one thread avoids oversubscribing the shared 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def gauss():
    prior = GaussianPrior(MEAN, COV)
    return prior, prior.encode_text(["a point"]), prior.encode_text([""])


@pytest.fixture(scope="module")
def tiny():
    from dreamstill.backend.priors.tiny import build_tiny_prior

    prior = build_tiny_prior(seed=0, image_size=8)  # pixel space (3, 8, 8), epsilon prediction, CPU fp32
    return prior, prior.encode_text(["a red cube"]), prior.encode_text([""])


CAMERA = torch.tensor([[15.0, 30.0, 2.7, 45.0], [0.0, -120.0, 3.0, 40.0]])


# ---------------------------------------------------------------------------------------------------------------
# 2D harness
# ---------------------------------------------------------------------------------------------------------------
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
    _, t2, _, x_t = m.noisy(DistillInput(z, cond, uncond, 0, 10, torch.Generator().manual_seed(0)))
    assert torch.equal(t, t2)
    fresh = GaussianScoreNet(prior.alphas_cumprod, 2)
    with torch.no_grad():
        diff = fresh(x_t, t) - nets["vsd"](x_t, t)
    w = (1 - prior.alphas_cumprod[t]).view(-1, 1, 1, 1)
    torch.testing.assert_close(out["lookahead"].grad - out["vsd"].grad, w * diff, rtol=1e-4, atol=1e-6)


def test_l2vsd_with_eta_zero_is_vsd(gauss):
    """eta = 0 switches the linearized correction off: L2-VSD's gradient and phi step equal VSD's."""
    prior, cond, uncond = gauss
    z = prior.sample(8, torch.Generator().manual_seed(5)) - 1.0
    grads, nets = [], []
    for name, extra in (("vsd", {}), ("l2vsd", {"eta": 0.0})):
        net = GaussianScoreNet(prior.alphas_cumprod, 2)
        m = make_method(name, prior, score_net=net, lora_lr=0.05, **extra)
        grads.append(m.gradient(DistillInput(z, cond, uncond, 0, 10, torch.Generator().manual_seed(0))).grad)
        nets.append(net)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_l2vsd_eta_reduction_scales_the_tangent_by_the_element_count(gauss):
    """eta_reduction="mean" is an SGD step on the mean MSE: v = -2 eta Delta / D. With D = 2, (mean, eta = 2) and
    (sum, eta = 1) take the same tangent and give the same gradient; a larger eta moves the gradient."""
    prior, cond, uncond = gauss
    z = prior.sample(8, torch.Generator().manual_seed(6)) + 0.5
    grads = {}
    for key, opts in {
        "mean2": dict(eta=2.0),
        "sum1": dict(eta=1.0, eta_reduction="sum"),
        "mean1": dict(eta=1.0),
    }.items():
        m = make_method("l2vsd", prior, score_net=GaussianScoreNet(prior.alphas_cumprod, 2), lora_lr=0.05, **opts)
        grads[key] = m.gradient(DistillInput(z, cond, uncond, 0, 10, torch.Generator().manual_seed(0))).grad
    torch.testing.assert_close(grads["mean2"], grads["sum1"], rtol=1e-5, atol=1e-7)
    assert (grads["mean2"] - grads["mean1"]).abs().max() > 1e-6


def test_options_are_checked(gauss):
    prior, _, _ = gauss
    with pytest.raises(ValueError, match="order"):
        make_method("vsd", prior, order="backwards")
    with pytest.raises(ValueError, match="lora_steps"):
        make_method("vsd", prior, lora_steps_per_iter=-1)
    with pytest.raises(ValueError, match="score_net"):
        L2VSD(prior, score_model=lambda x, t: x)
    with pytest.raises(ValueError, match="accepts"):
        make_method("l2vsd", prior, etta=0.1)
    with pytest.raises(ValueError, match="eta_reduction"):
        make_method("l2vsd", prior, eta_reduction="max")


# ---------------------------------------------------------------------------------------------------------------
# tiny UNet: LoRA score model
# ---------------------------------------------------------------------------------------------------------------
def _inp(z, cond, uncond, seed=0, step=0):
    return DistillInput(z, cond, uncond, step, 100, torch.Generator().manual_seed(seed), camera=CAMERA[: len(z)])


def test_fresh_lora_equals_frozen_prior_and_prior_stays_frozen(tiny):
    """B = 0 and a zero last camera layer: a fresh LoRA predicts what the prior predicts; training it changes the
    LoRA model and leaves the prior's own prediction untouched (private copy and shared UNet alike)."""
    prior, cond, uncond = tiny
    z = torch.rand(2, *prior.latent_shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    t = torch.tensor([100, 700])
    x = prior.add_noise(z, torch.randn(z.shape, generator=torch.Generator().manual_seed(1)), t)
    before = prior.predict_eps(x, t, cond.expand_to(2))
    for copy_unet in (True, False):
        vsd = make_method("vsd", prior, lora_copy_unet=copy_unet, lora_lr=1e-2)
        inp = _inp(z, cond, uncond)
        torch.testing.assert_close(vsd.score.eps(x, t, inp), before, rtol=1e-5, atol=1e-5)
        vsd.score.fit(z, inp, 2)
        assert (vsd.score.eps(x, t, inp) - before).abs().max() > 1e-4
        # the camera MLP is live after training: swapping the two cameras changes eps_phi (the base UNet ignores them)
        swapped = DistillInput(z, cond, uncond, 0, 1, inp.generator, camera=CAMERA.flip(0))
        assert (vsd.score.eps(x, t, inp) - vsd.score.eps(x, t, swapped)).abs().max() > 1e-6
        torch.testing.assert_close(prior.predict_eps(x, t, cond.expand_to(2)), before, rtol=0, atol=0)
        vsd.score.net.close()
    assert not getattr(prior.unet, "peft_config", {}), "the shared adapter was not removed"
    assert not prior.unet.time_embedding._forward_hooks


def test_l2vsd_jvp_equals_central_difference(tiny):
    """Delta eps_first = J_phi(x_t) v (forward mode) equals (eps_{phi+hv} - eps_{phi-hv}) / 2h, full and last-layer."""
    prior, cond, uncond = tiny
    c, h, w = prior.latent_shape
    # channels-last, as a renderer's (B, H, W, 3) output permuted: forward-mode group_norm needs contiguous inputs
    z = (torch.rand(2, h, w, c, generator=torch.Generator().manual_seed(2)) * 2 - 1).permute(0, 3, 1, 2)
    for last_layer in (False, True):
        m = make_method("l2vsd", prior, eta=1.0, eta_reduction="sum", last_layer=last_layer, lora_lr=1e-2)
        inp = _inp(z, cond, uncond, seed=3)
        m.score.fit(z, inp, 1)  # move off B = 0 so every LoRA factor carries a tangent
        zz, t, eps, x_t = m.noisy(inp)
        eps_i, d_eps, grads, _ = m.lookahead_terms(x_t, t, inp, zz)
        net = m.score.net
        phi = {k: v.detach() for k, v in net.trainable().items()}
        names = m.tangent_names()
        v = {k: -1.0 * grads[k] for k in names}
        pose = m.score.pose(inp)
        h = 1e-2 / max(float(torch.cat([x.flatten() for x in v.values()]).abs().max()), 1e-12)

        def at(sign):
            p = dict(phi)
            for k in names:
                p[k] = phi[k] + sign * h * v[k]
            with torch.no_grad(), math_attention():
                return functional_call(net, p, (x_t, t, inp.cond, pose, inp.camera))

        fd = (at(+1) - at(-1)) / (2 * h)
        assert d_eps.norm() > 0
        assert (fd - d_eps).norm() / d_eps.norm() < 2e-2
        torch.testing.assert_close(eps_i, m.score.eps(x_t, t, inp), rtol=1e-4, atol=1e-5)
        if last_layer:
            assert len(names) == 2 and all(".to_out.0.lora_" in n for n in names)


def test_lora_learns_a_gaussian_better_than_the_frozen_prior(tiny):
    """Trained on samples of a known Gaussian N(m, 0.1^2 I) in the tiny prior's pixel space, the LoRA predicts the
    noise of held-out noisy samples better than the frozen (random) prior."""
    prior, cond, uncond = tiny
    gen = torch.Generator().manual_seed(7)
    shape = prior.latent_shape
    m_img = torch.rand(1, *shape, generator=gen) - 0.5

    def samples(n):
        return m_img + 0.1 * torch.randn(n, *shape, generator=gen)

    vsd = make_method("vsd", prior, lora_lr=3e-2)
    for step in range(30):
        z = samples(4)
        cam = CAMERA[torch.arange(4) % 2]
        vsd.score.fit(z, DistillInput(z, cond, uncond, step, 30, gen, camera=cam), 1)
    z = samples(16)
    t = torch.randint(20, 980, (16,), generator=gen)
    eps = torch.randn(z.shape, generator=gen)
    x = prior.add_noise(z, eps, t)
    cam = CAMERA[torch.arange(16) % 2]
    inp = DistillInput(z, cond, uncond, 0, 1, gen, camera=cam)
    mse_lora = (vsd.score.eps(x, t, inp) - eps).pow(2).mean()
    mse_prior = (prior.predict_eps(x, t, cond.expand_to(16)) - eps).pow(2).mean()
    # a rank-4 LoRA of a random UNet learns slowly: about 0.98 against 1.07 after these 30 steps (0.95 after 100)
    assert mse_lora < 0.95 * mse_prior, (float(mse_lora), float(mse_prior))


def test_checkpoint_round_trip_of_lora_state(tiny):
    """state_dict -> a new VSD (other init seed) -> load: same phi, same optimizer state, same next gradient."""
    prior, cond, uncond = tiny
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
    m = make_method("vsd", prior, camera_dropout=1.0)
    _, _, _, pose = m.score.training_sample(z, _inp(z, cond, uncond))
    assert torch.equal(pose, torch.zeros_like(pose))
    m = make_method("vsd", prior, camera_dropout=0.0)
    _, _, _, pose = m.score.training_sample(z, _inp(z, cond, uncond))
    assert (pose.abs().sum(1) > 0).all()


def test_l2vsd_lora_runs_in_float32_under_a_bf16_prior():
    """Under a bf16 prior L2-VSD's LoRA copy is float32 (the jvp never mixes dtypes; on CUDA bf16 it failed with
    "expected mat1 and mat2 to have the same dtype"), the prior itself stays bf16, and the first-order term matches
    the one of the same prior in float32 (only the UNet copy's input rounding differs)."""
    from dreamstill.backend.priors.tiny import build_tiny_prior

    z = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    terms = {}
    for dtype in (torch.float32, torch.bfloat16):
        prior = build_tiny_prior(seed=1, image_size=8, camera=True, prediction_type="v_prediction", dtype=dtype)
        cond, uncond = prior.encode_text(["a blue cone"]), prior.encode_text([""])
        m = make_method("l2vsd", prior, eta=1.0, eta_reduction="sum", lora_lr=1e-2)
        assert prior.unet.dtype == dtype
        assert {p.dtype for p in m.score.net.unet.parameters()} == {torch.float32}
        inp = _inp(z, cond, uncond, seed=3)
        m.score.fit(z, inp, 1)
        zz, t, eps, x_t = m.noisy(inp)
        terms[dtype] = m.lookahead_terms(x_t, t, inp, zz)[1]
        assert torch.isfinite(m.gradient(_inp(z, cond, uncond, seed=4)).grad).all()
    a, b = terms[torch.float32], terms[torch.bfloat16]
    assert a.norm() > 0 and (a - b).norm() / a.norm() < 0.05
    with pytest.raises(ValueError, match="copy_unet"):
        make_method("vsd", build_tiny_prior(seed=1, image_size=8), lora_dtype="float32", lora_copy_unet=False)
