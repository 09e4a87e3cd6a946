"""L2-VSD: its identities in the 2D harness, the jvp against finite differences on the tiny UNet, what it refuses,
its float32 LoRA under a bf16 prior (and on CUDA), and no torch.jit.script warnings from its first jvp."""

import subprocess
import sys

import pytest
import torch
from torch.func import functional_call

from dreamstill.backend.distill import DistillInput, make_method
from dreamstill.backend.distill.l2vsd import L2VSD
from dreamstill.backend.distill.lora import math_attention
from dreamstill.backend.distill.vsd import GaussianScoreNet
from dreamstill.backend.priors.analytic import GaussianPrior

MEAN = torch.tensor([1.0, -0.5])
COV = torch.tensor([[0.5, 0.2], [0.2, 0.3]])
CAMERA = torch.tensor([[15.0, 30.0, 2.7, 45.0], [0.0, -120.0, 3.0, 40.0]])


@pytest.fixture(scope="module")
def gauss():
    prior = GaussianPrior(MEAN, COV)
    return prior, prior.encode_text(["a point"]), prior.encode_text([""])


def _inp(z, cond, uncond, seed=0, step=0):
    return DistillInput(z, cond, uncond, step, 100, torch.Generator().manual_seed(seed), camera=CAMERA[: len(z)])


def test_l2vsd_with_eta_zero_is_vsd(gauss):
    """eta = 0 switches the linearized correction off: L2-VSD's gradient and phi step equal VSD's."""
    prior, cond, uncond = gauss
    z = prior.sample(8, torch.Generator().manual_seed(5)) - 1.0
    grads, nets = [], []
    for name, extra in (("vsd", {}), ("l2vsd", {"lookahead_lr": 0.0})):
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
        "mean2": dict(lookahead_lr=2.0),
        "sum1": dict(lookahead_lr=1.0, lookahead_reduction="sum"),
        "mean1": dict(lookahead_lr=1.0),
    }.items():
        m = make_method("l2vsd", prior, score_net=GaussianScoreNet(prior.alphas_cumprod, 2), lora_lr=0.05, **opts)
        grads[key] = m.gradient(DistillInput(z, cond, uncond, 0, 10, torch.Generator().manual_seed(0))).grad
    torch.testing.assert_close(grads["mean2"], grads["sum1"], rtol=1e-5, atol=1e-7)
    assert (grads["mean2"] - grads["mean1"]).abs().max() > 1e-6


def test_l2vsd_options_are_checked(gauss, tiny8):
    prior, _, _ = gauss
    with pytest.raises(ValueError, match="score_net"):
        L2VSD(prior, score_model=lambda x, t: x)
    with pytest.raises(ValueError, match="accepts"):
        make_method("l2vsd", prior, etta=0.1)
    with pytest.raises(ValueError, match="lookahead_reduction"):
        make_method("l2vsd", prior, lookahead_reduction="max")
    with pytest.raises(ValueError, match="lookahead_lr"):
        make_method("l2vsd", prior, lookahead_lr=-1.0)
    with pytest.warns(FutureWarning, match="lookahead_lr"):
        assert make_method("l2vsd", prior, eta=0.5).config.lookahead_lr == 0.5


def test_l2vsd_refuses_a_shared_unet_and_a_low_precision_lora(tiny8):
    """A UNet shared with the prior crashed inside the jvp (peft toggles requires_grad in the functorch transform)
    and a bf16/fp16 LoRA would bring back CUDA's mixed-dtype jvp failure: both are refused when the method is made,
    with a message that says what to set."""
    prior, _, _ = tiny8
    with pytest.raises(ValueError, match="lora_copy_unet=True"):
        make_method("l2vsd", prior, lora_copy_unet=False)
    for dtype in ("bfloat16", "float16", ""):
        with pytest.raises(ValueError, match="float32"):
            make_method("l2vsd", prior, lora_dtype=dtype)
    assert make_method("l2vsd", prior, lora_rank=2).config.lora.dtype == "float32"  # other LoRA options keep it


def test_l2vsd_jvp_equals_central_difference(tiny8):
    """Delta eps_first = J_phi(x_t) v (forward mode) equals (eps_{phi+hv} - eps_{phi-hv}) / 2h, full and last-layer."""
    prior, cond, uncond = tiny8
    c, h, w = prior.latent_shape
    # channels-last, as a renderer's (B, H, W, 3) output permuted: forward-mode group_norm needs contiguous inputs
    z = (torch.rand(2, h, w, c, generator=torch.Generator().manual_seed(2)) * 2 - 1).permute(0, 3, 1, 2)
    for last_layer in (False, True):
        m = make_method(
            "l2vsd", prior, lookahead_lr=1.0, lookahead_reduction="sum", last_layer=last_layer, lora_lr=1e-2
        )
        inp = _inp(z, cond, uncond, seed=3)
        m.score.fit(z, inp, 1)  # move off B = 0 so every LoRA factor carries a tangent
        s = m.noised(inp)
        zz, t, x_t = s.z, s.t, s.x_t
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
        m = make_method("l2vsd", prior, lookahead_lr=1.0, lookahead_reduction="sum", lora_lr=1e-2)
        assert prior.unet.dtype == dtype
        assert {p.dtype for p in m.score.net.unet.parameters()} == {torch.float32}
        inp = _inp(z, cond, uncond, seed=3)
        m.score.fit(z, inp, 1)
        s = m.noised(inp)
        zz, t, x_t = s.z, s.t, s.x_t
        terms[dtype] = m.lookahead_terms(x_t, t, inp, zz)[1]
        assert torch.isfinite(m.gradient(_inp(z, cond, uncond, seed=4)).grad).all()
    a, b = terms[torch.float32], terms[torch.bfloat16]
    assert a.norm() > 0 and (a - b).norm() / a.norm() < 0.05
    with pytest.raises(ValueError, match="copy_unet"):
        make_method("vsd", build_tiny_prior(seed=1, image_size=8), lora_dtype="float32", lora_copy_unet=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_l2vsd_jvp_under_a_cuda_bf16_prior(exact_fp32_cuda):
    """On CUDA with a bf16 prior (the default dtype there), L2-VSD's jvp runs on its float32 LoRA copy: finite, and
    the first-order term matches the same prior's float32 run to 10%. The bf16 prior rounds the copy's start and runs
    the text encoder in bf16: the two terms differ by 6.0% on an H200 and by 1.9% on the CPU. TF32 is off, so the
    float32 run is a float32 reference."""
    from dreamstill.backend.priors.tiny import build_tiny_prior

    z = (torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1).cuda()
    terms = {}
    for dtype in (torch.float32, torch.bfloat16):
        prior = build_tiny_prior(seed=1, image_size=8, prediction_type="v_prediction", device="cuda", dtype=dtype)
        cond, uncond = prior.encode_text(["a blue cone"]), prior.encode_text([""])
        m = make_method("l2vsd", prior, lookahead_lr=1.0, lookahead_reduction="sum", lora_lr=1e-2)
        inp = DistillInput(z, cond, uncond, 0, 100, torch.Generator("cuda").manual_seed(3))
        m.score.fit(z, inp, 1)
        s = m.noised(inp)
        terms[dtype] = m.lookahead_terms(s.x_t, s.t, inp, s.z)[1].float().cpu()
        out = m.gradient(DistillInput(z, cond, uncond, 1, 100, torch.Generator("cuda").manual_seed(4)))
        assert torch.isfinite(out.grad).all() and out.grad.device.type == "cuda"
    a, b = terms[torch.float32], terms[torch.bfloat16]
    assert a.norm() > 0 and (a - b).norm() / a.norm() < 0.1


def test_first_jvp_raises_no_jit_script_deprecation_warning():
    """torch scripts its forward-AD decompositions on the first jvp of a process (18 DeprecationWarnings in the test
    run); L2-VSD silences exactly those. Checked in a fresh interpreter, where that first jvp really happens."""
    code = (
        "import warnings, torch\n"
        "warnings.simplefilter('error', DeprecationWarning)\n"
        "from dreamstill.backend.distill import DistillInput, make_method\n"
        "from dreamstill.backend.distill.vsd import GaussianScoreNet\n"
        "from dreamstill.backend.priors.analytic import GaussianPrior\n"
        "p = GaussianPrior(torch.zeros(2), torch.eye(2))\n"
        "m = make_method('l2vsd', p, score_net=GaussianScoreNet(p.alphas_cumprod, 2))\n"
        "z = torch.randn(4, 2, 1, 1)\n"
        "m.gradient(DistillInput(z, p.encode_text(['a']), p.encode_text(['']), 0, 10, torch.Generator()))\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]
