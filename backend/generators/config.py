"""Amortized-training settings and the prompt corpora (light: no torch models imported here)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

CHECKPOINT_NAME = "generator.pt"
LOSS_LOG_NAME = "losses.csv"  # step,loss: a row per training step (generators.train.open_loss_log)


@dataclass
class GeneratorTrainConfig:
    arch: str = "hyper-ingp"
    method: str = "asd"
    corpus: str = "toy2000"
    prior: str = "builtin"
    prior_dtype: str = "auto"  # priors.PRIOR_DTYPES: "auto" = bf16 on CUDA, float32 on CPU
    steps: int = 2000
    prompts_per_step: int = 4
    views_per_prompt: int = 1
    resolution: int = 0  # 0 = the prior's native size
    num_samples: int = 32
    guidance: float = 0.0  # 0 = the method's default
    lr: float = 4e-3  # ScaleDreamer's released configs: Adam betas (0, 0.99), lr 0.004
    # ScaleDreamer's released configs add two opacity terms to the distillation loss (not in the paper):
    lambda_sparsity: float = 20.0  # x mean_pixels sqrt(o^2 + 0.01): fog and floaters cost opacity
    lambda_opaque: float = 10.0  # x mean_pixels BCE(o, o), ramped linearly from 0 over the last fifth of the run
    seed: int = 0
    checkpoint_every: int = 200
    keep_checkpoints: bool = False  # also keep checkpoints/step_NNNNNN.pt at every checkpoint_every (not only the last)
    grid_every: int = 500
    options: dict = dataclasses.field(default_factory=dict)  # method options (distill method Config keys)
    arch_options: dict = dataclasses.field(default_factory=dict)  # e.g. {"spectral_norm": true}, {"geometry": "sdf"}
    # SDF generators (arch_options geometry=sdf) instead of the opacity terms: the per-prompt surface stage's
    # regularizers (engine/surface.py, weights relative to the distillation's surrogate loss), averaged over the
    # step's prompts, and its beta schedule; renders add importance samples (the VolSDF surface is thin)
    eikonal_weight: float = 100.0  # x E[(||grad d|| - 1)^2] at eikonal_points uniform in the ball, per prompt
    eikonal_points: int = 1024
    normal_smoothness_weight: float = 2000.0  # x E||n(x) - n(x + delta)||^p at rendered surface points, per prompt
    normal_smoothness_jitter: float = 0.04
    normal_smoothness_power: float = 1.0
    smoothness_points: int = 512
    beta_start: float = 0.01  # VolSDF's Laplace scale, annealed geometrically over the run
    beta_end: float = 0.005
    num_importance: int = 16
    # shape initialisation (generators/shape_init.py): regress an SDF generator onto this density generator's
    # solids instead of distilling ("" = ordinary distillation)
    init_sdf_from: str = ""
    init_sdf_resolution: int = 40
    shape_targets: str = "teacher"  # "world": regress the toy world's solids and colours (shape_init.WorldTarget)
    # LATTE3D's shape regularization while an SDF generator distills: + w_s x the reconstruction loss onto each
    # prompt's toy-world solid (shape_init.reconstruction_loss with a WorldTarget; toy-world corpora); 0 = off
    shape_regularization: float = 0.0


# --- corpora ---------------------------------------------------------------------------------------------------
TOY_CORPORA = {"toy16": 16, "toy256": 256, "toy2000": 2000}


def is_single_object(prompt: str) -> bool:
    """Whether a prompt names one object: no toy-world relation ("on top of", "next to") in it."""
    return " on top of " not in prompt and " next to " not in prompt


def load_corpus(name: str, split: str = "train") -> list[str]:
    """Toy-world corpora of growing size (the analogues of MG15, DF415 and AT2520), or a file with one prompt a line.

    ``split="heldout"`` gives the held-out compositions (their parts seen in training, the combination not).
    The n-prompt corpus is a fixed-seed sample of the training split, always containing the 64 single objects
    when n >= 256.
    """
    import torch

    from ..priors.builtin.world import split_prompts

    train, heldout = split_prompts(seed=0)
    if split == "heldout":
        return heldout
    if name in TOY_CORPORA:
        n = TOY_CORPORA[name]
        singles = [p for p in train if is_single_object(p)]
        comps = [p for p in train if p not in set(singles)]
        g = torch.Generator().manual_seed(1234)
        comps = [comps[i] for i in torch.randperm(len(comps), generator=g).tolist()]
        if n < len(singles):
            order = torch.randperm(len(singles), generator=g).tolist()
            half = n // 2
            return [singles[i] for i in order[:half]] + comps[: n - half]
        return singles + comps[: n - len(singles)]
    path = Path(name)
    if not path.exists():
        raise FileNotFoundError(f"corpus {name!r}: not a built-in corpus ({', '.join(TOY_CORPORA)}) nor a file")
    from dreamstill.protocol.prompts import read_prompts

    prompts = read_prompts(path)
    if not prompts:
        raise ValueError(f"corpus file {path} has no prompts (one prompt a line)")
    return prompts
