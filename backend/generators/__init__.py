"""Prompt-amortized text-to-3D generators (ScaleDreamer): Hyper-iNGP, 3DConv-Net, Triplane-Transformer."""

from __future__ import annotations

from .base import FieldView, GeneratedFields
from .conv3d import Conv3DConfig, Conv3DNet
from .hyper_ingp import HyperINGP, HyperINGPConfig
from .triplane import TriplaneConfig, TriplaneTransformer

ARCHITECTURES = {
    "hyper-ingp": (HyperINGP, HyperINGPConfig),
    "3dconv": (Conv3DNet, Conv3DConfig),
    "triplane": (TriplaneTransformer, TriplaneConfig),
}


def build_generator(arch: str, text_dim: int, paper_size: bool = False, **overrides):
    """A fresh generator of architecture ``arch`` for text embeddings of width ``text_dim``."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown generator architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    cls, config_cls = ARCHITECTURES[arch]
    config = config_cls.paper() if paper_size else config_cls()
    config.text_dim = text_dim
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"{config_cls.__name__} has no setting {key!r}")
        setattr(config, key, value)
    return cls(config)


__all__ = ["ARCHITECTURES", "FieldView", "GeneratedFields", "build_generator"]
