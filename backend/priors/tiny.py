"""Priors with random weights built from the configs in configs.py: the tiny test prior and, for GPU benchmarks,
the Stable Diffusion 2.1-base architecture. Nothing is downloaded.

``build_tiny_prior`` is what unit tests, the 2D harness and ``load_prior("tiny")`` use: a ~1 M-parameter
UNet2DConditionModel, a 5-layer CLIP text encoder of width 32 with a byte-level CLIPTokenizer, a DDPM schedule
(SD's scaled-linear betas). Its scores are meaningless (random weights) but its shapes, dtypes, conditioning paths and
loading path are the real ones.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from . import configs
from .camera import CAMERA_FEATURES
from .diffusers_prior import DiffusersPrior


def build_tokenizer(model_max_length: int = 77):
    """A byte-level CLIPTokenizer built without files: transformers' CLIPTokenizer accepts the vocabulary as a dict
    and the merges as a list of (a, b) tuples (a list of "a b" strings raises TypeError), so nothing is read from disk
    or the hub."""
    from transformers import CLIPTokenizer

    vocab, merges = configs.byte_level_clip_vocab()
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        model_max_length=model_max_length,
        unk_token=configs.EOS_TOKEN,
        bos_token=configs.BOS_TOKEN,
        eos_token=configs.EOS_TOKEN,
        pad_token=configs.EOS_TOKEN,
    )


def build_components(
    stack: dict,
    seed: int = 0,
    with_vae: bool = False,
    prediction_type: str = "epsilon",
    camera: bool = False,
    pixel_unshuffle: int = 1,
    image_size: int | None = None,
) -> dict:
    """unet, scheduler, text_encoder, tokenizer, vae (or None) of a stack config, with seeded random weights.

    Without a VAE the UNet works in pixel space (3 channels, times pixel_unshuffle^2). ``image_size`` sets the UNet's
    sample_size to image_size / (f * pixel_unshuffle). ``camera`` adds MVDream-style camera conditioning:
    class_embed_type="projection" taking the 8 camera features.
    The global torch RNG is left untouched (weights are drawn inside torch.random.fork_rng).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet_cfg = dict(stack["unet"])
    vae_cfg = dict(stack["vae"])
    f = 2 ** (len(vae_cfg["block_out_channels"]) - 1) if with_vae else 1
    channels = vae_cfg["latent_channels"] if with_vae else 3
    r = int(pixel_unshuffle)
    unet_cfg["in_channels"] = unet_cfg["out_channels"] = channels * r * r
    if image_size is not None:
        if image_size % (f * r):
            raise ValueError(f"image_size {image_size} must be divisible by {f * r} (VAE factor x pixel_unshuffle)")
        unet_cfg["sample_size"] = image_size // (f * r)
    if camera:
        unet_cfg.update(class_embed_type="projection", projection_class_embeddings_input_dim=CAMERA_FEATURES)
    if with_vae and image_size is not None:
        vae_cfg["sample_size"] = image_size

    tokenizer = build_tokenizer(stack["model_max_length"])
    text_cfg = CLIPTextConfig(
        **stack["text_encoder"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if text_cfg.vocab_size < len(tokenizer):
        raise ValueError(f"text encoder vocab_size {text_cfg.vocab_size} < tokenizer size {len(tokenizer)}")
    scheduler = DDPMScheduler(**{**stack["scheduler"], "prediction_type": prediction_type})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_cfg)
        text_encoder = CLIPTextModel(text_cfg)
        vae = AutoencoderKL(**vae_cfg) if with_vae else None
    return dict(unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer, vae=vae)


def save_components(components: dict, folder: str | os.PathLike, extras: dict | None = None) -> Path:
    """Write components in diffusers layout (model_index.json + one subfolder each) and optional dreamstill.json."""
    import diffusers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = {
        "_class_name": "StableDiffusionPipeline" if components.get("vae") is not None else "DreamstillPixelPrior",
        "_diffusers_version": diffusers.__version__,
    }
    libraries = {
        "unet": "diffusers",
        "scheduler": "diffusers",
        "vae": "diffusers",
        "text_encoder": "transformers",
        "tokenizer": "transformers",
    }
    for key, module in components.items():
        if module is None:
            continue
        module.save_pretrained(folder / key)
        index[key] = [libraries[key], type(module).__name__]
    if index["_class_name"] == "StableDiffusionPipeline":
        index.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    if extras:
        (folder / "dreamstill.json").write_text(json.dumps(extras, indent=2))
    return folder


def build_random_prior(
    stack: str | dict = "tiny",
    seed: int = 0,
    folder: str | os.PathLike | None = None,
    with_vae: bool = False,
    prediction_type: str = "epsilon",
    camera: bool = False,
    pixel_unshuffle: int = 1,
    image_size: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> DiffusersPrior:
    """A DiffusersPrior with random weights for a named stack ("tiny", "sd21-base") or a stack dict.

    With ``folder`` the stack is saved in diffusers layout first and loaded back through
    DiffusersPrior.from_pretrained (the real loading path). ``build_random_prior("sd21-base", with_vae=True,
    device="cuda")`` gives Stable Diffusion 2.1-base's architecture for GPU timing (~1.3 B parameters; slow on CPU).
    """
    stack_cfg = configs.get_stack(stack) if isinstance(stack, str) else stack
    parts = build_components(stack_cfg, seed, with_vae, prediction_type, camera, pixel_unshuffle, image_size)
    name = stack if isinstance(stack, str) else "random"
    if folder is not None:
        extras = None
        if pixel_unshuffle != 1 or image_size is not None:
            extras = {"pixel_unshuffle": int(pixel_unshuffle)}
            if image_size is not None:
                extras["image_size"] = int(image_size)
        save_components(parts, folder, extras)
        return DiffusersPrior.from_pretrained(folder, device=device or "cpu", dtype=dtype)
    return DiffusersPrior(
        parts["unet"],
        parts["scheduler"],
        parts["text_encoder"],
        parts["tokenizer"],
        parts["vae"],
        pixel_unshuffle=pixel_unshuffle,
        image_size=image_size,
        device=device or "cpu",
        dtype=dtype,
        name=f"{name}:{seed}",
    )


def build_tiny_prior(
    seed: int = 0,
    folder: str | os.PathLike | None = None,
    with_vae: bool = False,
    prediction_type: str = "epsilon",
    camera: bool = False,
    pixel_unshuffle: int = 1,
    image_size: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> DiffusersPrior:
    """The tiny random test prior (configs.TINY), on CPU in float32 unless told otherwise.

    Model space: pixels (3, 32, 32) by default; with_vae=True gives VAE latents (4, 32, 32) of 64x64 renders
    (the tiny VAE downsamples by f = 2). ``image_size`` changes the render resolution (e.g. 16 for faster tests).
    prediction_type: "epsilon", "v_prediction" or "sample". camera=True: camera-conditioned UNet.
    pixel_unshuffle > 1: the UNet sees space-to-depth patches (as the built-in prior does).
    """
    return build_random_prior(
        "tiny", seed, folder, with_vae, prediction_type, camera, pixel_unshuffle, image_size, device, dtype
    )
