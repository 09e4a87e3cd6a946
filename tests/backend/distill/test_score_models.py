"""The score model's loss is the MSE of the network's own prediction type (ProlificDreamer trains SD 2.1's LoRA on
the v-MSE): on a v-prediction prior it equals ||v_hat - v||^2 of the raw UNet output, computed here independently."""

import pytest
import torch

from dreamstill.backend.distill import DistillInput, make_method
from dreamstill.backend.distill.score_models import loss_weight, prediction_type_of
from dreamstill.backend.priors.analytic import GaussianPrior

CAMERA = torch.tensor([[15.0, 30.0, 2.7, 45.0], [0.0, -120.0, 3.0, 40.0]])


def _loss_and_raw(m, prior, z, cond, uncond, seed):
    """The score model's loss on one draw, the UNet's raw output on that draw (a forward hook), and the draw itself
    (training_sample replayed from the same seed)."""
    raw = []
    hook = m.score.net.unet.register_forward_hook(lambda mod, args, out: raw.append(out.sample.detach()))
    inp = DistillInput(z, cond, uncond, 0, 10, torch.Generator().manual_seed(seed), camera=CAMERA)
    try:
        loss = m.score.loss(z, inp)
    finally:
        hook.remove()
    replay = DistillInput(z, cond, uncond, 0, 10, torch.Generator().manual_seed(seed), camera=CAMERA)
    _, t, eps, _ = m.score.training_sample(z, replay)
    return loss, raw[0].float(), t, eps


def test_lora_loss_on_a_v_prior_is_the_v_mse(tiny8_v_camera):
    prior, cond, uncond = tiny8_v_camera
    z = torch.rand(2, *prior.latent_shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    m = make_method("vsd", prior, lora_lr=1e-2)
    m.score.fit(z, DistillInput(z, cond, uncond, 0, 10, torch.Generator().manual_seed(1), camera=CAMERA), 1)
    loss, v_hat, t, eps = _loss_and_raw(m, prior, z, cond, uncond, seed=5)
    alpha, sigma = prior.alpha_sigma(t)
    v = alpha * eps - sigma * z  # v = alpha_t eps - sigma_t x0
    assert m.score.prediction_type == "v_prediction"
    torch.testing.assert_close(loss, (v_hat - v).pow(2).mean(), rtol=2e-3, atol=1e-6)
    # the earlier eps-MSE weights each sample's v-MSE by abar_t: on this draw, a clearly different loss
    eps_mse = ((alpha**2) * (v_hat - v).pow(2)).mean()
    loss = loss.detach()
    assert t.max() > 500 and float(eps_mse) < 0.8 * float(loss), (t.tolist(), float(eps_mse), float(loss))


def test_eps_target_gives_the_eps_mse(tiny8_v_camera):
    prior, cond, uncond = tiny8_v_camera
    z = torch.rand(2, *prior.latent_shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    m = make_method("vsd", prior, lora_target="epsilon")
    loss, v_hat, t, eps = _loss_and_raw(m, prior, z, cond, uncond, seed=6)
    alpha, sigma = prior.alpha_sigma(t)
    x_t = alpha * z + sigma * eps
    eps_hat = alpha * v_hat + sigma * x_t  # the prior's v -> eps conversion
    torch.testing.assert_close(loss, (eps_hat - eps).pow(2).mean(), rtol=1e-4, atol=1e-6)


def test_loss_weights_in_closed_form():
    abar = torch.tensor([0.9, 0.5, 0.02])
    t = torch.arange(3)
    torch.testing.assert_close(loss_weight("epsilon", abar, t), torch.ones(3))
    torch.testing.assert_close(loss_weight("v_prediction", abar, t), 1 / abar)
    torch.testing.assert_close(loss_weight("sample", abar, t), (1 - abar) / abar)
    with pytest.raises(ValueError, match="prediction type"):
        loss_weight("flow", abar, t)


def test_prediction_type_follows_the_prior():
    analytic = GaussianPrior(torch.zeros(2), torch.eye(2))
    assert prediction_type_of(analytic) == "epsilon"
    assert prediction_type_of(analytic, "sample") == "sample"
    with pytest.raises(ValueError, match="choose one of"):
        prediction_type_of(analytic, "x0")
