"""DiffusersPrior, the tiny random prior and the load_prior registry (all offline, CPU, tiny sizes)."""

import json
import math
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from dreamstill.backend.priors import DiffusersPrior, PriorNotFoundError, TextEmbedding, clear_prior_cache, load_prior
from dreamstill.backend.priors.tiny import build_tiny_prior


def sd_alphas_cumprod(T=1000, b0=0.00085, b1=0.012):
    """Stable Diffusion's scaled-linear schedule written out independently of diffusers."""
    betas = torch.linspace(b0**0.5, b1**0.5, T, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


class FixedUNet(torch.nn.Module):
    """Stands in for the UNet: returns a fixed tensor and records what it was called with."""

    def __init__(self, config, output):
        super().__init__()
        self.config = config
        self.output = output
        self.calls = []

    def forward(self, x, t, encoder_hidden_states=None, **kwargs):
        self.calls.append((x, t, kwargs))
        return SimpleNamespace(sample=self.output.to(x.dtype))


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(0)


# --- loading ---------------------------------------------------------------------------------------------------


def test_loads_from_folder_offline_and_matches_in_memory_build(tiny_prior, tiny_prior_dir, rng):
    loaded = DiffusersPrior.from_pretrained(tiny_prior_dir, device="cpu")
    assert loaded.dtype == torch.float32 and loaded.latent_shape == (3, 32, 32) and loaded.image_size == 32
    assert loaded.num_train_timesteps == 1000 and loaded.prediction_type == "epsilon"
    assert not loaded.supports_camera and loaded.vae is None
    torch.testing.assert_close(loaded.alphas_cumprod, sd_alphas_cumprod().float(), rtol=1e-5, atol=1e-6)
    assert all(not p.requires_grad for p in loaded.unet.parameters()) and not loaded.unet.training

    text = loaded.encode_text(["a red cube", ""])
    assert text.tokens.shape == (2, 77, 32) and text.tokens.dtype == torch.float32
    torch.testing.assert_close(text.tokens, tiny_prior.encode_text(["a red cube", ""]).tokens)
    x = torch.randn(2, 3, 32, 32, generator=rng)
    t = torch.tensor([5, 700])
    torch.testing.assert_close(loaded.predict_eps(x, t, text), tiny_prior.predict_eps(x, t, text))


def test_missing_folder_names_it(tmp_path):
    missing = tmp_path / "no_such_prior"
    with pytest.raises(PriorNotFoundError, match="no_such_prior"):
        DiffusersPrior.from_pretrained(missing)


def test_hub_id_offline_names_model_and_how_to_get_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PriorNotFoundError) as info:
        DiffusersPrior.from_pretrained("dreamstill-tests/no-such-model")
    message = str(info.value)
    assert "dreamstill-tests/no-such-model" in message
    assert "hf download dreamstill-tests/no-such-model" in message and "HF_HUB_OFFLINE" in message


def test_incomplete_folder_lists_missing_parts(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(PriorNotFoundError, match="scheduler/, text_encoder/, tokenizer/"):
        DiffusersPrior.from_pretrained(tmp_path)


def test_bad_dreamstill_json_says_what_to_fix(tmp_path, tiny_prior_dir):
    import shutil

    folder = tmp_path / "p"
    shutil.copytree(tiny_prior_dir, folder)
    (folder / "dreamstill.json").write_text(json.dumps({"pixel_unshuffle": 0}))
    with pytest.raises(ValueError, match="pixel_unshuffle must be an integer >= 1"):
        DiffusersPrior.from_pretrained(folder)
    (folder / "dreamstill.json").write_text(json.dumps({"pixel_unshuffle": 2}))
    with pytest.raises(ValueError, match="input channels"):  # a 3-channel UNet cannot take 2x2 patches
        DiffusersPrior.from_pretrained(folder)


# --- prediction types --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_output_converted_to_eps(tiny_prior, monkeypatch, rng, prediction_type):
    """With x_t = alpha x0 + sigma eps and the network returning the exact target for its type
    (eps, v = alpha eps - sigma x0, or x0), predict_eps must return eps."""
    b = 3
    x0 = torch.randn(b, 3, 32, 32, generator=rng)
    eps = torch.randn(b, 3, 32, 32, generator=rng)
    t = torch.tensor([1, 400, 999])
    abar = sd_alphas_cumprod()[t].float().view(-1, 1, 1, 1)
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    x_t = alpha * x0 + sigma * eps
    target = {"epsilon": eps, "v_prediction": alpha * eps - sigma * x0, "sample": x0}[prediction_type]
    monkeypatch.setattr(tiny_prior, "unet", FixedUNet(tiny_prior.unet.config, target))
    monkeypatch.setattr(tiny_prior, "prediction_type", prediction_type)
    got = tiny_prior.predict_eps(x_t, t, tiny_prior.encode_text(["a"]))
    torch.testing.assert_close(got, eps, rtol=1e-4, atol=2e-4)


def test_v_prediction_formula_with_fixed_output(tiny_prior, monkeypatch, rng):
    v = torch.randn(2, 3, 32, 32, generator=rng)
    x_t = torch.randn(2, 3, 32, 32, generator=rng)
    t = torch.tensor([0, 999])
    monkeypatch.setattr(tiny_prior, "unet", FixedUNet(tiny_prior.unet.config, v))
    monkeypatch.setattr(tiny_prior, "prediction_type", "v_prediction")
    abar = sd_alphas_cumprod()[t].view(-1, 1, 1, 1)
    expected = abar.sqrt() * v.double() + (1 - abar).sqrt() * x_t.double()
    got = tiny_prior.predict_eps(x_t, t, tiny_prior.encode_text([""]))
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_v_prediction_read_from_scheduler_config(tmp_path):
    prior = build_tiny_prior(folder=tmp_path / "v", prediction_type="v_prediction", image_size=16)
    assert prior.prediction_type == "v_prediction"
    config = json.loads((tmp_path / "v" / "scheduler" / "scheduler_config.json").read_text())
    assert config["prediction_type"] == "v_prediction"


def test_learned_variance_output_keeps_mean_half(tiny_prior, monkeypatch, rng):
    out = torch.randn(1, 6, 32, 32, generator=rng)
    monkeypatch.setattr(tiny_prior, "unet", FixedUNet(tiny_prior.unet.config, out))
    got = tiny_prior.predict_eps(torch.zeros(1, 3, 32, 32), torch.tensor([10]), tiny_prior.encode_text([""]))
    torch.testing.assert_close(got, out[:, :3])


# --- guidance, gradients, timesteps ------------------------------------------------------------------------------


def test_batched_cfg_equals_two_calls(tiny_prior, rng):
    x = torch.randn(2, 3, 32, 32, generator=rng)
    t = torch.tensor([50, 600])
    cond, uncond = tiny_prior.encode_text(["a red cube"]), tiny_prior.encode_text([""])
    eps_cfg, eps_c, eps_u = tiny_prior.predict_eps_cfg(x, t, cond, uncond, guidance=7.5)
    ref_c = tiny_prior.predict_eps(x, t, cond.expand_to(2))
    ref_u = tiny_prior.predict_eps(x, t, uncond.expand_to(2))
    torch.testing.assert_close(eps_c, ref_c, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eps_u, ref_u, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eps_cfg, ref_u + 7.5 * (ref_c - ref_u), rtol=1e-5, atol=1e-4)
    assert (ref_c - ref_u).abs().max() > 1e-4  # the text actually changes the prediction


def test_predict_eps_is_detached_and_unet_forward_is_differentiable(tiny_prior, rng):
    x = torch.randn(1, 3, 16, 16, generator=rng, requires_grad=True)
    text = tiny_prior.encode_text(["a"])
    assert not tiny_prior.predict_eps(x, torch.tensor([100]), text).requires_grad
    out = tiny_prior.unet_forward(x, torch.tensor([100]), text)
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_timestep_validation(tiny_prior):
    x, text = torch.zeros(2, 3, 16, 16), tiny_prior.encode_text([""])
    assert tiny_prior.predict_eps(x, 7, text).shape == (2, 3, 16, 16)  # a scalar broadcasts
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        tiny_prior.predict_eps(x, torch.tensor([0, 1000]), text)
    with pytest.raises(TypeError, match="integers"):
        tiny_prior.predict_eps(x, torch.tensor([0.5, 1.0]), text)
    with pytest.raises(ValueError, match="model space"):
        tiny_prior.predict_eps(torch.zeros(2, 4, 16, 16), 7, text)


# --- images <-> model space --------------------------------------------------------------------------------------


def test_pixel_encode_decode_round_trip_and_grad(tiny_prior, rng):
    rgb = torch.rand(2, 3, 32, 32, generator=rng)
    z = tiny_prior.encode_images(rgb)
    torch.testing.assert_close(z, 2 * rgb - 1)
    torch.testing.assert_close(tiny_prior.decode(z), rgb)
    big = torch.rand(2, 3, 64, 64, generator=rng, requires_grad=True)
    z = tiny_prior.encode_images(big)
    assert z.shape == (2, 3, 32, 32)
    w = torch.randn(z.shape, generator=rng)
    (z * w).sum().backward()
    assert big.grad.shape == big.shape and big.grad.abs().sum() > 0
    # antialiased bilinear 2x downsampling of a constant image is that constant
    flat = torch.full((1, 3, 64, 64), 0.25)
    torch.testing.assert_close(tiny_prior.encode_images(flat), torch.full((1, 3, 32, 32), -0.5))


def test_vae_encode_decode_shapes_determinism_and_grad(tmp_path, rng):
    prior = build_tiny_prior(seed=1, with_vae=True, image_size=32)
    assert prior.latent_shape == (4, 16, 16) and prior.vae_scale_factor == 2 and prior.image_size == 32
    rgb = torch.rand(2, 3, 48, 48, generator=rng, requires_grad=True)
    z = prior.encode_images(rgb)
    assert z.shape == (2, 4, 16, 16) and z.dtype == torch.float32
    torch.testing.assert_close(z, prior.encode_images(rgb))  # posterior mean: deterministic
    with torch.no_grad():
        x = 2 * F.interpolate(rgb, size=(32, 32), mode="bilinear", antialias=True) - 1
        expected = prior.vae.encode(x).latent_dist.mean * 0.18215
    torch.testing.assert_close(z.detach(), expected)
    z.sum().backward()
    assert rgb.grad.abs().sum() > 0
    img = prior.decode(z.detach())
    assert img.shape == (2, 3, 32, 32) and img.min() >= 0 and img.max() <= 1
    eps = prior.predict_eps(z.detach(), torch.tensor([3, 900]), prior.encode_text(["x", "y"]))
    assert eps.shape == z.shape


# --- camera conditioning, pixel_unshuffle, dtype -----------------------------------------------------------------


def test_camera_conditioning_changes_eps_and_is_required(rng):
    prior = build_tiny_prior(camera=True, image_size=16)
    assert prior.supports_camera
    x = torch.randn(1, 3, 16, 16, generator=rng).repeat(2, 1, 1, 1)
    text = prior.encode_text(["a red cube"])
    cameras = torch.tensor([[15.0, 0.0, 3.0, 45.0], [15.0, 90.0, 3.0, 45.0]])
    eps = prior.predict_eps(x, torch.tensor([500, 500]), text, cameras)
    assert (eps[0] - eps[1]).abs().max() > 1e-4
    same = prior.predict_eps(x, torch.tensor([500, 500]), text, cameras[:1].repeat(2, 1))
    torch.testing.assert_close(same[0], same[1])
    with pytest.raises(ValueError, match="camera-conditioned"):
        prior.predict_eps(x, torch.tensor([500, 500]), text)


def test_pixel_unshuffle_prior_from_folder(tmp_path, rng):
    prior = build_tiny_prior(folder=tmp_path / "r2", pixel_unshuffle=2, image_size=32)
    assert json.loads((tmp_path / "r2" / "dreamstill.json").read_text()) == {"pixel_unshuffle": 2, "image_size": 32}
    assert prior.pixel_unshuffle == 2 and prior.unet.config.in_channels == 12 and prior.latent_shape == (3, 32, 32)
    x = torch.randn(1, 3, 32, 32, generator=rng)
    text = prior.encode_text(["a"])
    with torch.no_grad():
        manual = F.pixel_shuffle(
            prior.unet(F.pixel_unshuffle(x, 2), torch.tensor([20]), encoder_hidden_states=text.tokens).sample, 2
        )
    torch.testing.assert_close(prior.predict_eps(x, torch.tensor([20]), text), manual)


def test_bf16_on_cpu(rng):
    fp32 = build_tiny_prior(image_size=16)
    bf16 = build_tiny_prior(image_size=16, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and next(bf16.unet.parameters()).dtype == torch.bfloat16
    x = torch.randn(2, 3, 16, 16, generator=rng)
    t = torch.tensor([100, 800])
    eps16 = bf16.predict_eps(x, t, bf16.encode_text(["a cube"]))
    eps32 = fp32.predict_eps(x, t, fp32.encode_text(["a cube"]))
    assert eps16.dtype == torch.float32 and eps16.shape == (2, 3, 16, 16)
    assert (eps16 - eps32).norm() / eps32.norm() < 0.1


# --- registry --------------------------------------------------------------------------------------------------


def test_load_prior_caches_and_parses_names(tiny_prior_dir):
    clear_prior_cache()
    a = load_prior("tiny", device="cpu")
    assert load_prior("tiny:0", device="cpu") is not a  # different name, separate cache entry
    assert load_prior("tiny", device="cpu") is a
    b = load_prior("tiny:1", device="cpu")
    assert not torch.equal(next(a.unet.parameters()), next(b.unet.parameters()))
    folder = load_prior(str(tiny_prior_dir), device="cpu")
    assert isinstance(folder, DiffusersPrior) and folder is load_prior(str(tiny_prior_dir), device="cpu")
    with pytest.raises(ValueError, match="tiny:<integer seed>"):
        load_prior("tiny:abc")
    with pytest.raises(ValueError, match="non-empty"):
        load_prior("")
    clear_prior_cache()


def test_builtin_missing_raises_prior_not_found(monkeypatch):
    clear_prior_cache()
    monkeypatch.setitem(sys.modules, "dreamstill.backend.priors.builtin", None)  # makes the import fail
    with pytest.raises(PriorNotFoundError, match="built-in prior is not installed"):
        load_prior("builtin", device="cpu")


def test_text_embedding_width_mismatch_is_explained(tiny_prior):
    wrong = TextEmbedding(torch.zeros(1, 77, 1024))
    with pytest.raises(ValueError, match="cross_attention_dim"):
        tiny_prior.predict_eps(torch.zeros(1, 3, 16, 16), 5, wrong)


def test_sd21_base_config_has_the_published_parameter_counts():
    """Built on the meta device (no memory): UNet 865,910,724, VAE 83,653,863, OpenCLIP-H text (23 layers)
    340,387,840 parameters, the counts of the published stabilityai/stable-diffusion-2-1-base weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from dreamstill.backend.priors.configs import get_stack

    stack = get_stack("sd21-base")
    with torch.device("meta"):
        counts = [
            sum(p.numel() for p in m.parameters())
            for m in (
                UNet2DConditionModel(**stack["unet"]),
                AutoencoderKL(**stack["vae"]),
                CLIPTextModel(CLIPTextConfig(**stack["text_encoder"])),
            )
        ]
    assert counts == [865_910_724, 83_653_863, 340_387_840]
    assert math.isclose(stack["vae"]["scaling_factor"], 0.18215)


def test_unet_forward_accepts_another_unet(tiny_prior, monkeypatch, rng):
    """VSD runs its LoRA'd copy through the same conversion: unet= replaces self.unet for that call only."""
    v = torch.randn(1, 3, 16, 16, generator=rng)
    x_t = torch.randn(1, 3, 16, 16, generator=rng)
    fake = FixedUNet(tiny_prior.unet.config, v)
    monkeypatch.setattr(tiny_prior, "prediction_type", "v_prediction")
    got = tiny_prior.unet_forward(
        x_t, torch.tensor([300]), tiny_prior.encode_text(["a"]), unet=fake, cross_attention_kwargs={"scale": 0.5}
    )
    alpha, sigma = tiny_prior.alpha_sigma(torch.tensor([300]))
    torch.testing.assert_close(got, alpha * v + sigma * x_t)
    assert fake.calls[0][2] == {"cross_attention_kwargs": {"scale": 0.5}}
    assert isinstance(tiny_prior.unet, torch.nn.Module) and tiny_prior.unet is not fake


def test_builtin_without_weights_raises_prior_not_found(monkeypatch):
    clear_prior_cache()

    def missing(device=None, dtype=None):
        raise FileNotFoundError("weights are missing from /nowhere")

    monkeypatch.setitem(sys.modules, "dreamstill.backend.priors.builtin", SimpleNamespace(load_builtin_prior=missing))
    with pytest.raises(PriorNotFoundError, match="/nowhere"):
        load_prior("builtin", device="cpu")
