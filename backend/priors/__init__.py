"""Priors: the frozen 2D diffusion model as score distillation sees it, and the registry that loads one by name.

``load_prior(name)``:
- "builtin": the toy-world prior shipped with the project (backend/priors/builtin), offline;
- "tiny" or "tiny:<seed>": a tiny random-weight stack for tests (backend/priors/tiny.py);
- anything else: a local folder in diffusers layout or a Hugging Face hub id (DiffusersPrior.from_pretrained).
Loaded priors are cached per (name, device, dtype) for the life of the process, so a server worker reuses one
across jobs. Importing this package does not import diffusers or transformers.
"""

from __future__ import annotations

import threading

import torch

from .base import Prior, TextEmbedding
from .diffusers_prior import DiffusersPrior, PriorNotFoundError, default_device, default_dtype

__all__ = [
    "Prior",
    "TextEmbedding",
    "PriorNotFoundError",
    "DiffusersPrior",
    "PRIOR_DTYPES",
    "load_prior",
    "clear_prior_cache",
]

# what a setting may ask the prior to run in; "auto" is the device's default (bf16 on CUDA, fp32 on CPU)
PRIOR_DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16}

_CACHE: dict[tuple[str, str, torch.dtype], Prior] = {}
_LOCK = threading.Lock()


def _parse_tiny(name: str) -> int | None:
    """Seed of "tiny" / "tiny:<seed>", or None when the name is not a tiny prior."""
    if name == "tiny":
        return 0
    if not name.startswith("tiny:"):
        return None
    try:
        return int(name[len("tiny:") :])
    except ValueError:
        raise ValueError(f'bad prior name {name!r}: use "tiny" or "tiny:<integer seed>", e.g. "tiny:3"') from None


def _load_uncached(name: str, device: torch.device, dtype: torch.dtype) -> Prior:
    if name == "builtin":
        try:
            from .builtin import load_builtin_prior
        except ImportError as error:
            raise PriorNotFoundError(
                f"the built-in prior is not installed (backend/priors/builtin could not be imported: {error}). "
                f"Reinstall dreamstill, or pass a prior folder / hub id instead"
            ) from error
        try:
            return load_builtin_prior(device=device, dtype=dtype)
        except PriorNotFoundError:
            raise
        except FileNotFoundError as error:  # weights missing from the package: one error type for callers
            raise PriorNotFoundError(f"the built-in prior's weights are missing: {error}") from error
    seed = _parse_tiny(name)
    if seed is not None:
        from .tiny import build_tiny_prior

        return build_tiny_prior(seed=seed, device=device, dtype=dtype)
    return DiffusersPrior.from_pretrained(name, device=device, dtype=dtype)


def load_prior(name: str, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Prior:
    """The prior called ``name`` on ``device`` (default: CUDA if available, else CPU) in ``dtype`` (default: bf16 on
    CUDA, fp32 on CPU), loaded once per process. Raises PriorNotFoundError when its weights are not here."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(
            f'prior name must be a non-empty string ("builtin", "tiny", a folder or a hub id), got {name!r}'
        )
    name = name.strip()
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype if dtype is not None else default_dtype(device)
    key = (name, str(device), dtype)
    with _LOCK:
        prior = _CACHE.get(key)
        if prior is None:
            prior = _load_uncached(name, device, dtype)
            _CACHE[key] = prior
        return prior


def clear_prior_cache() -> None:
    """Forget every cached prior (frees their memory once no one else holds them)."""
    with _LOCK:
        _CACHE.clear()
