"""Score-distillation methods behind one interface (``DistillMethod.gradient``), selectable by name.

    sds    Score Distillation Sampling (DreamFusion, arXiv 2209.14988)       CFG 100
    csd    Classifier Score Distillation (arXiv 2310.19415)                  scale 1 on eps_c - eps_u
    asd    Asynchronous Score Distillation (ScaleDreamer, arXiv 2407.02040)  CFG 7.5, shift ratio 0.1, annealed t
    ssd    Stable Score Distillation (arXiv 2312.09305)                      no CFG, threshold M = 200, t_max halved
    fsd    Flow Score Distillation (arXiv 2405.10988)                        CFG 100, world-map noise, t 980 -> 300
    vsd    Variational Score Distillation (ProlificDreamer, arXiv 2305.16213)  CFG 7.5, LoRA in the prior's target
    l2vsd  Linearized Lookahead VSD (arXiv 2507.09748)                       VSD plus the first-order lookahead

Every method shares ``base.ScoreDistillation``'s prologue (t, eps, x_t, one guided prior call) and its options
(``options.DistillConfig``: timestep schedule, w(t), clipping, ``perp_neg``, ``cfg_rescale``).

``make_method(name, prior, guidance=0.0, **options)`` builds one; guidance 0 means the method's paper default, and
``options`` are the method's Config fields, flat (``option_names(name)`` lists them; an unknown key is an error that
lists the accepted ones).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from .base import DistillInput, DistillMethod, DistillOutput, surrogate_loss
from .options import option_names as _config_option_names
from .perp_neg import ViewPrompts, encode_view_prompts

_LOCATIONS = {
    "sds": ("sds", "SDS"),
    "csd": ("csd", "CSD"),
    "vsd": ("vsd", "VSD"),
    "l2vsd": ("l2vsd", "L2VSD"),
    "ssd": ("ssd", "SSD"),
    "fsd": ("fsd", "FSD"),
    "asd": ("asd", "ASD"),
}


class _Registry(Mapping):
    """name -> method class; each module is imported on first use, so a missing optional module (or one with a
    heavy dependency) only fails for the method that needs it, with an error that says which."""

    def __getitem__(self, name: str) -> type[DistillMethod]:
        if name not in _LOCATIONS:
            raise KeyError(name)
        module, attr = _LOCATIONS[name]
        try:
            return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
        except (ImportError, AttributeError) as err:
            raise ImportError(
                f"distillation method {name!r} is not available: importing {attr} from "
                f"dreamstill.backend.distill.{module} failed ({err})"
            ) from err

    def __iter__(self) -> Iterator[str]:
        return iter(_LOCATIONS)

    def __len__(self) -> int:
        return len(_LOCATIONS)


METHODS: Mapping[str, type[DistillMethod]] = _Registry()


def method_class(name: str) -> type[DistillMethod]:
    """The class registered under ``name``; ValueError listing the known names for an unknown one."""
    if name not in _LOCATIONS:
        raise ValueError(f"unknown distillation method {name!r}; choose one of {', '.join(_LOCATIONS)}")
    return METHODS[name]


def make_method(name: str, prior, guidance: float = 0.0, **options) -> DistillMethod:
    """Build the method ``name`` for ``prior``; guidance 0 = the paper default; options = the method's Config."""
    return method_class(name)(prior, guidance=guidance, **options)


def option_names(name: str) -> list[str]:
    """The option keys method ``name`` accepts (its Config's fields, sub-configs flattened as ``lora_rank`` ...)."""
    return _config_option_names(method_class(name).Config)


def available_methods() -> list[str]:
    """Names whose modules import here (vsd/l2vsd may be missing while they are being written)."""
    out = []
    for name in _LOCATIONS:
        try:
            METHODS[name]
        except ImportError:
            continue
        out.append(name)
    return out


__all__ = [
    "DistillInput",
    "DistillMethod",
    "DistillOutput",
    "METHODS",
    "ViewPrompts",
    "available_methods",
    "encode_view_prompts",
    "make_method",
    "method_class",
    "option_names",
    "surrogate_loss",
]
