"""The shipped built-in prior and its training code (CPU, small)."""

import json

import pytest
import torch

from dreamstill.backend.priors.builtin import MODEL_DIR, load_builtin_prior, networks, training
from dreamstill.backend.priors.builtin import tokenizer as tok_mod
from dreamstill.backend.priors.builtin import world as W
from dreamstill.backend.priors.builtin.train_config import DEFAULT_CONFIG, TrainConfig
from dreamstill.backend.render.cameras import Cameras, sample_cameras

# eps-MSE of the shipped weights on the fixed held-out batch below, measured at 0.0078 (fp32, CPU); an untrained copy
# gives 0.64. The threshold catches a broken or swapped weights file.
HELDOUT_LOSS_THRESHOLD = 0.012


@pytest.fixture(scope="module")
def prior():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return load_builtin_prior(device="cpu", dtype=torch.float32)


def test_shipped_folder_layout_and_size():
    for sub in (
        "model_index.json",
        "dreamstill.json",
        "unet/config.json",
        "text_encoder/config.json",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "scheduler/scheduler_config.json",
    ):
        assert (MODEL_DIR / sub).is_file(), sub
    assert json.loads((MODEL_DIR / "dreamstill.json").read_text()) == {"pixel_unshuffle": 2, "image_size": 32}
    total = sum(f.stat().st_size for f in MODEL_DIR.rglob("*") if f.is_file())
    assert total <= 20e6


def test_tokenizer_and_text_encoder_load_offline(prior):
    tok = prior.tokenizer
    for word in tok_mod.grammar_words():
        assert len(tok(word).input_ids) == 3, word  # BOS, the word as one token, EOS
    text = "a purple capsule next to a red octahedron"
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text
    emb = prior.encode_text([text, "a red cube", ""])
    assert emb.tokens.shape == (3, 77, prior.unet.config.cross_attention_dim)
    assert not torch.allclose(emb.tokens[0], emb.tokens[1])


def test_shipped_tokenizer_files_are_what_training_writes(tmp_path):
    vocab, merges = tok_mod.write_tokenizer_files(tmp_path)
    assert vocab.read_text() == (MODEL_DIR / "tokenizer" / "vocab.json").read_text()
    assert merges.read_text() == (MODEL_DIR / "tokenizer" / "merges.txt").read_text()


def test_learn_merges_makes_every_word_one_symbol():
    merges = tok_mod.learn_merges(["abab", "ab", "ba"])
    assert merges == tok_mod.learn_merges(["abab", "ab", "ba"])
    seqs = {"ab": ["a", "b</w>"], "ba": ["b", "a</w>"], "abab": ["a", "b", "a", "b</w>"]}
    for word, s in seqs.items():
        for a, b in merges:
            i = 0
            while i < len(s) - 1:
                if (s[i], s[i + 1]) == (a, b):
                    s[i : i + 2] = [a + b]
                else:
                    i += 1
        assert s == [word + "</w>"]


def _heldout_batch():
    _, held = W.split_prompts(0)
    prompts = held[:4] + ["a red cube", "a cyan pyramid", "a purple torus", "a pink octahedron"]
    g = torch.Generator().manual_seed(123)
    cams = sample_cameras(8, g)
    x0 = 2 * W.render_scenes([W.parse_prompt(q) for q in prompts], cams, 32) - 1
    eps = torch.randn(x0.shape, generator=g)
    t = torch.tensor([100, 200, 300, 400, 500, 600, 700, 800])
    return prompts, cams, x0, eps, t


def _eps_mse(p, batch):
    prompts, cams, x0, eps, t = batch
    with torch.no_grad():
        e = p.predict_eps(p.add_noise(x0, eps, t), t, p.encode_text(prompts), cams.as_condition())
    return ((e - eps) ** 2).mean().item()


def test_shipped_prior_heldout_loss_is_low_and_far_below_untrained(prior):
    from dreamstill.backend.priors.diffusers_prior import DiffusersPrior

    batch = _heldout_batch()
    loss = _eps_mse(prior, batch)
    assert loss < HELDOUT_LOSS_THRESHOLD
    cfg = TrainConfig.load(DEFAULT_CONFIG)
    unet, text_encoder, _ = networks.build_models(cfg, prior.tokenizer, seed=0)
    untrained = DiffusersPrior(
        unet,
        prior.scheduler,
        text_encoder,
        prior.tokenizer,
        pixel_unshuffle=2,
        image_size=32,
        device="cpu",
        dtype=torch.float32,
    )
    assert _eps_mse(untrained, batch) > 10 * loss


def test_camera_conditioning_matters(prior):
    assert prior.supports_camera
    cube = W.parse_prompt("a red cube")
    cams = Cameras(
        torch.tensor([20.0, 20.0]), torch.tensor([0.0, 45.0]), torch.tensor([2.75] * 2), torch.tensor([45.0] * 2)
    )
    x0 = (
        2
        * W.render_scenes(
            [cube], Cameras(*(x[:1] for x in (cams.elevation, cams.azimuth, cams.distance, cams.fov))), 32
        )
        - 1
    )
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([600, 600])
    xt = prior.add_noise(x0.expand(2, -1, -1, -1), eps.expand(2, -1, -1, -1), t)
    e = prior.predict_eps(xt, t, prior.encode_text(["a red cube"] * 2), cams.as_condition())
    assert (e[0] - e[1]).abs().mean() > 0.02


def test_lr_schedule():
    cfg = TrainConfig(lr=1.0, warmup=10, steps=110, final_lr_fraction=0.1)
    assert training.lr_at(0, cfg) == pytest.approx(0.1)
    assert training.lr_at(9, cfg) == pytest.approx(1.0)
    assert training.lr_at(60, cfg) == pytest.approx(0.55)
    assert training.lr_at(110, cfg) == pytest.approx(0.1)


def test_config_round_trip_and_errors(tmp_path):
    cfg = TrainConfig.load(DEFAULT_CONFIG)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown training config"):
        TrainConfig.from_dict({"batchsize": 3})
    with pytest.raises(FileNotFoundError, match="--config"):
        TrainConfig.load(tmp_path / "nope.json")


TINY = dict(
    block_out_channels=(32, 32, 32),
    text_width=32,
    text_layers=1,
    steps=4,
    batch_size=2,
    render_chunk=4,
    warmup=2,
    checkpoint_every=2,
    log_every=1,
    supersample=1,
    image_size=16,
)


@pytest.mark.slow
def test_train_resumes_exactly(tmp_path):
    cfg = TrainConfig(**TINY)
    quiet = dict(device="cpu", progress=False, log=lambda *a: None)
    a = training.train(cfg, tmp_path / "a", **quiet)
    training.train(cfg, tmp_path / "b", steps=2, **quiet)
    with pytest.raises(ValueError, match="different config"):
        training.train(TrainConfig(**{**TINY, "lr": 1e-3}), tmp_path / "b", resume=True, **quiet)
    b = training.train(cfg, tmp_path / "b", resume=True, **quiet)
    from safetensors.torch import load_file

    wa = load_file(a / "unet" / "diffusion_pytorch_model.safetensors")
    wb = load_file(b / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert json.loads((tmp_path / "a" / "loss_history.json").read_text())[-1][0] == 4
