"""The built-in prior's networks: a pixel-space diffusers UNet2DConditionModel on 2x2 space-to-depth patches with
camera features as ``class_labels``, a small CLIPTextModel, and the DDPM noise schedule."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..camera import CAMERA_FEATURES, camera_features
from .train_config import TrainConfig


def build_models(cfg: TrainConfig, tokenizer, seed: int | None = None):
    """(unet, text_encoder, scheduler) with seeded random weights (the global RNG is left untouched)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if cfg.image_size % cfg.pixel_unshuffle:
        raise ValueError(f"image_size {cfg.image_size} must be divisible by pixel_unshuffle {cfg.pixel_unshuffle}")
    up = {"DownBlock2D": "UpBlock2D", "CrossAttnDownBlock2D": "CrossAttnUpBlock2D"}
    channels = 3 * cfg.pixel_unshuffle**2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed if seed is None else seed)
        unet = UNet2DConditionModel(
            sample_size=cfg.image_size // cfg.pixel_unshuffle,
            in_channels=channels,
            out_channels=channels,
            block_out_channels=tuple(cfg.block_out_channels),
            layers_per_block=cfg.layers_per_block,
            down_block_types=tuple(cfg.down_block_types),
            up_block_types=tuple(up[d] for d in reversed(cfg.down_block_types)),
            cross_attention_dim=cfg.text_width,
            attention_head_dim=cfg.attention_heads,
            norm_num_groups=32,
            class_embed_type="projection",
            projection_class_embeddings_input_dim=CAMERA_FEATURES,
        )
        text_cfg = CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.text_width,
            intermediate_size=4 * cfg.text_width,
            projection_dim=cfg.text_width,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=cfg.text_heads,
            max_position_embeddings=cfg.max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        text_encoder = CLIPTextModel(text_cfg)
    scheduler = DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
        clip_sample=True,
    )
    return unet, text_encoder, scheduler


def unet_eps_or_v(unet, x_t, t, tokens, camera, r: int):
    """The UNet's raw output on (B, 3, H, W) model-space input via pixel_unshuffle(r) / pixel_shuffle(r)."""
    out = unet(F.pixel_unshuffle(x_t, r), t, encoder_hidden_states=tokens, class_labels=camera_features(camera)).sample
    return F.pixel_shuffle(out, r)
