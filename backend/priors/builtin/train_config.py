"""The built-in prior's training configuration (``config.json`` beside this file is the shipped run's)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "config.json"


@dataclass
class TrainConfig:
    """Everything that determines the shipped weights. Defaults are a small CPU-sized run; config.json is the real
    one."""

    seed: int = 0
    image_size: int = 32
    pixel_unshuffle: int = 2
    # UNet2DConditionModel
    block_out_channels: tuple = (64, 128, 160)
    layers_per_block: int = 1
    down_block_types: tuple = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    attention_heads: int = 4
    # CLIPTextModel
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    max_length: int = 77
    # schedule
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"
    # data
    split_seed: int = 0
    heldout_fraction: float = 0.1
    single_fraction: float = 0.4
    caption_dropout: float = 0.1
    light_jitter: float = 0.15
    supersample: int = 2
    # optimisation
    steps: int = 200
    batch_size: int = 16
    lr: float = 8e-4
    warmup: int = 50
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    bf16: bool = True
    render_chunk: int = 64  # images rendered per sphere-tracing call (a multiple of batch_size)
    checkpoint_every: int = 500  # a multiple of render_chunk // batch_size (exact resume)
    log_every: int = 50

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown training config key(s) {unknown}; known keys are {sorted(names)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kw)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise FileNotFoundError(f"training config {path} not found; pass an existing --config FILE") from None

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
