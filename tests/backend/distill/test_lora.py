"""The LoRA score net (lora.py): a fresh LoRA is the frozen prior, training moves only the LoRA, it learns, and its
config is checked."""

import pytest
import torch

from dreamstill.backend.distill import DistillInput, make_method
from dreamstill.backend.distill.lora import LoRAConfig

CAMERA = torch.tensor([[15.0, 30.0, 2.7, 45.0], [0.0, -120.0, 3.0, 40.0]])


def _inp(z, cond, uncond, seed=0, step=0):
    return DistillInput(z, cond, uncond, step, 100, torch.Generator().manual_seed(seed), camera=CAMERA[: len(z)])


def test_fresh_lora_equals_frozen_prior_and_prior_stays_frozen(tiny8):
    """B = 0 and a zero last camera layer: a fresh LoRA predicts what the prior predicts; training it changes the
    LoRA model and leaves the prior's own prediction untouched (private copy and shared UNet alike)."""
    prior, cond, uncond = tiny8
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
        swapped = DistillInput(z, cond, uncond, 0, 1, inp.rng, camera=CAMERA.flip(0))
        assert (vsd.score.eps(x, t, inp) - vsd.score.eps(x, t, swapped)).abs().max() > 1e-6
        torch.testing.assert_close(prior.predict_eps(x, t, cond.expand_to(2)), before, rtol=0, atol=0)
        vsd.score.net.close()
    assert not getattr(prior.unet, "peft_config", {}), "the shared adapter was not removed"
    assert not prior.unet.time_embedding._forward_hooks


def test_lora_learns_a_gaussian_better_than_the_frozen_prior(tiny8):
    """Trained on samples of a known Gaussian N(m, 0.1^2 I) in the tiny prior's pixel space, the LoRA predicts the
    noise of held-out noisy samples better than the frozen (random) prior."""
    prior, cond, uncond = tiny8
    rng = torch.Generator().manual_seed(7)
    shape = prior.latent_shape
    m_img = torch.rand(1, *shape, generator=rng) - 0.5

    def samples(n):
        return m_img + 0.1 * torch.randn(n, *shape, generator=rng)

    vsd = make_method("vsd", prior, lora_lr=3e-2)
    for step in range(30):
        z = samples(4)
        cam = CAMERA[torch.arange(4) % 2]
        vsd.score.fit(z, DistillInput(z, cond, uncond, step, 30, rng, camera=cam), 1)
    z = samples(16)
    t = torch.randint(20, 980, (16,), generator=rng)
    eps = torch.randn(z.shape, generator=rng)
    x = prior.add_noise(z, eps, t)
    cam = CAMERA[torch.arange(16) % 2]
    inp = DistillInput(z, cond, uncond, 0, 1, rng, camera=cam)
    mse_lora = (vsd.score.eps(x, t, inp) - eps).pow(2).mean()
    mse_prior = (prior.predict_eps(x, t, cond.expand_to(16)) - eps).pow(2).mean()
    # a rank-4 LoRA of a random UNet learns slowly: about 0.98 against 1.07 after these 30 steps (0.95 after 100)
    assert mse_lora < 0.95 * mse_prior, (float(mse_lora), float(mse_prior))


def test_lora_config_is_checked():
    assert LoRAConfig(target_modules=["to_q"], betas=[0.5, 0.9]).target_modules == ("to_q",)
    assert LoRAConfig(dtype="bfloat16").torch_dtype is torch.bfloat16 and LoRAConfig().torch_dtype is None
    with pytest.raises(ValueError, match="lora_dtype"):
        LoRAConfig(dtype="float8")
    with pytest.raises(ValueError, match="lora_copy_unet"):
        LoRAConfig(dtype="float32", copy_unet=False)
    with pytest.raises(ValueError, match="lora_lr"):
        LoRAConfig(lr=0.0)
