"""The built-in prior: a toy world (``world``, with exact distances in ``exact_sdf`` and its words in ``vocabulary``)
and a small text- and camera-conditioned pixel diffusion model trained on it, shipped in diffusers layout in
``model/``: its tokenizer (``tokenizer``), networks (``networks``), data (``data``), training loop (``training``,
configured by ``train_config``; ``dreamstill train-prior`` in ``train``) and sampler (``sampling``)."""

from __future__ import annotations

from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent / "model"


def load_builtin_prior(device=None, dtype=None):
    """The shipped toy-world prior as a Prior: ``DiffusersPrior.from_pretrained(MODEL_DIR)``."""
    from ..diffusers_prior import DiffusersPrior

    if not (MODEL_DIR / "model_index.json").exists():
        raise FileNotFoundError(
            f"the built-in prior's weights are missing from {MODEL_DIR}; reinstall dreamstill or retrain them with "
            "`dreamstill train-prior -o <dir>` and copy <dir> there"
        )
    return DiffusersPrior.from_pretrained(str(MODEL_DIR), device=device, dtype=dtype)
