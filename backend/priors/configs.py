"""Architecture configs for priors built from scratch (random weights, no download).

Two stacks, each a dict of plain keyword dicts for the diffusers / transformers constructors:

- ``TINY``: a Stable-Diffusion-like stack the size of the tiny models in diffusers' own unit tests.
  UNet2DConditionModel with blocks (32, 64), cross_attention_dim 32 (984,867 parameters); a 5-layer CLIP text
  encoder of width 32 (68,473 parameters); an optional 2-level AutoencoderKL (downsampling factor f = 2). Everything
  is built from these dicts, so it needs no hub access. Used by unit tests and the 2D harness.
- ``SD21_BASE``: the Stable Diffusion 2.1-base architecture (UNet ~866 M parameters, VAE f = 8 with 4 latent
  channels and scaling factor 0.18215, OpenCLIP-H text tower as a 23-layer CLIPTextModel: SD 2.x drops the last of
  the 24 layers, i.e. it conditions on the penultimate layer). For GPU benchmarks of the real per-step cost with
  random weights.

The scheduler entries hold the DDPM noise schedule: "scaled_linear" betas, beta_t = (sqrt(b0) + t/(T-1) *
(sqrt(b1) - sqrt(b0)))^2 with b0 = 0.00085, b1 = 0.012, T = 1000, as in Stable Diffusion; bar-alpha_t is the
cumulative product of 1 - beta_t (the diffusers scheduler computes it; we never hand-roll it).

The tokenizer of a random stack is a byte-level CLIP BPE without merges (see ``byte_level_clip_vocab``): every UTF-8
byte is a token (with and without the end-of-word suffix ``</w>``), plus the start/end tokens.
"""

from __future__ import annotations

import copy

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"

_SD_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    prediction_type="epsilon",
)

TINY = {
    "unet": dict(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    ),
    "text_encoder": dict(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=1000,
        max_position_embeddings=77,
        projection_dim=32,
        hidden_act="quick_gelu",
    ),
    "vae": dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
        scaling_factor=0.18215,
    ),
    "scheduler": dict(_SD_SCHEDULER),
    "model_max_length": 77,
}

SD21_BASE = {
    "unet": dict(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(5, 10, 20, 20),
        cross_attention_dim=1024,
        use_linear_projection=True,
        norm_num_groups=32,
        flip_sin_to_cos=True,
        freq_shift=0,
        act_fn="silu",
    ),
    "text_encoder": dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_attention_heads=16,
        num_hidden_layers=23,
        projection_dim=512,
        hidden_act="gelu",
        vocab_size=49408,
        max_position_embeddings=77,
        layer_norm_eps=1e-5,
    ),
    "vae": dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=512,
        scaling_factor=0.18215,
        act_fn="silu",
    ),
    "scheduler": dict(_SD_SCHEDULER),
    "model_max_length": 77,
}

STACKS = {"tiny": TINY, "sd21-base": SD21_BASE}


def get_stack(name: str) -> dict:
    """A deep copy of a named stack config (so callers can edit it freely)."""
    if name not in STACKS:
        raise ValueError(f"unknown prior stack {name!r}; choose one of {sorted(STACKS)}")
    return copy.deepcopy(STACKS[name])


def bytes_to_unicode() -> list[str]:
    """The GPT-2/CLIP byte -> printable-unicode table: entry b is the character that stands for byte b."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return [chr(chars[b]) for b in range(256)]


def byte_level_clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of a CLIP BPE that has no merges: 256 byte chars, the same with ``</w>``, BOS, EOS (514 ids)."""
    chars = bytes_to_unicode()
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab[BOS_TOKEN] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)
    return vocab, []
