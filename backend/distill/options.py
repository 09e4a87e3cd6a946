"""The options every method shares (``DistillConfig``) and how a flat options dict becomes a method's Config.

A method's options arrive as one flat dict (JobSpec.options, ``--option KEY=VALUE``, a generator's training config)
and are parsed once, when the method is made, into ``method_class(name).Config``, a dataclass:

- a key that names a field of the Config sets it;
- a field whose default is itself a dataclass (VSD's ``lora: LoRAConfig``) is set either as a whole (``lora={...}``)
  or field by field with the field's name as prefix (``lora_rank=8`` sets ``lora.rank``), starting from the
  Config's own default of that sub-config;
- a key the Config lists in ``renamed_options`` (an older spelling) is accepted with a FutureWarning naming the new
  key;
- any other key is a ValueError that lists every accepted key (``option_names``).

Validation happens in the dataclasses' ``__post_init__``, so a bad value fails when the method is made, not at the
step that first reads it.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

from .schedules import CLIP_MODES, WEIGHTINGS, ScheduledValue, TimestepSchedule, check_scheduled_value


@dataclass
class DistillConfig:
    """Options every method shares (JobSpec.options / --option KEY=VALUE set them by name).

    t_sampler, min_step_percent, max_step_percent, t_per_sample: the TimestepSchedule (schedules.py).
    weighting: name of w(t). grad_clip: None, a number or a scheduled value; grad_clip_mode "value" or "norm".
    perp_neg: Perp-Neg guidance (Armandpour et al. 2023; guidance.py, perp_neg.py); needs the view prompts in
        DistillInput.view_prompts.
    cfg_rescale: phi of the CFG rescale (Lin et al. 2024 Eq. 15-16, MVDream's 0.5); 0 = off.
    """

    t_sampler: str = "uniform"
    min_step_percent: ScheduledValue = 0.02
    max_step_percent: ScheduledValue = 0.98
    t_per_sample: bool = True
    weighting: str = "sds"
    grad_clip: ScheduledValue | None = None
    grad_clip_mode: str = "value"
    perp_neg: bool = False
    cfg_rescale: float = 0.0

    extra_weightings: ClassVar[tuple[str, ...]] = ()  # weightings a method computes itself, e.g. FSD's "euler"
    renamed_options: ClassVar[dict[str, str]] = {}  # old key -> new key, accepted with a FutureWarning

    def __post_init__(self):
        known = WEIGHTINGS + tuple(self.extra_weightings)
        if self.weighting not in known:
            raise ValueError(f"unknown weighting {self.weighting!r}; choose one of {', '.join(known)}")
        if self.grad_clip_mode not in CLIP_MODES:
            raise ValueError(f"unknown grad_clip_mode {self.grad_clip_mode!r}; choose one of {', '.join(CLIP_MODES)}")
        check_scheduled_value("grad_clip", self.grad_clip)
        if not 0.0 <= self.cfg_rescale <= 1.0:
            raise ValueError(f"cfg_rescale is phi in [0, 1] (0 = off; MVDream uses 0.5); got {self.cfg_rescale}")
        self.schedule = TimestepSchedule(
            self.t_sampler, self.min_step_percent, self.max_step_percent, self.t_per_sample
        )


def _sub_configs(config_cls: type) -> dict[str, type]:
    """Fields of ``config_cls`` whose default is a dataclass instance: name -> that dataclass."""
    out = {}
    for f in dataclasses.fields(config_cls):
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
            if dataclasses.is_dataclass(default):
                out[f.name] = type(default)
    return out


def _flat_key(prefix: str, name: str) -> str:
    """The flat option key of sub-config field ``name``: ``<prefix>_<name>``, or ``name`` itself when it already
    starts with the prefix (LoRAConfig.lora_alpha is the option lora_alpha)."""
    return name if name.startswith(prefix + "_") else f"{prefix}_{name}"


def _flat_keys(config_cls: type) -> dict[str, tuple[str, str]]:
    """flat key -> (sub-config field, its field) for every sub-config of ``config_cls``."""
    return {
        _flat_key(sub, f.name): (sub, f.name)
        for sub, cls in _sub_configs(config_cls).items()
        for f in dataclasses.fields(cls)
        if f.init
    }


def option_names(config_cls: type) -> list[str]:
    """Every key ``parse_options`` accepts for ``config_cls``, flat (sub-config fields as ``<field>_<subfield>``)."""
    subs, flat = _sub_configs(config_cls), _flat_keys(config_cls)
    names = []
    for f in dataclasses.fields(config_cls):
        if f.name in subs:
            names += [k for k, (sub, _) in flat.items() if sub == f.name]
        elif f.init:
            names.append(f.name)
    return names


def _renamed(config_cls: type, options: dict[str, Any], method: str) -> dict[str, Any]:
    out = {}
    for key, value in options.items():
        new = config_cls.renamed_options.get(key)
        if new is None:
            out[key] = value
            continue
        if new in options:
            raise ValueError(
                f"options {key!r} and {new!r} of method {method!r} are the same setting: give only {new!r}"
            )
        warnings.warn(
            f"option {key!r} of method {method!r} is now called {new!r} (same meaning): write {new}={value!r}",
            FutureWarning,
            stacklevel=4,
        )
        out[new] = value
    return out


def parse_options(config_cls: type, options: dict[str, Any], method: str):
    """Build ``config_cls`` from a flat options dict (see the module docstring); unknown keys raise a ValueError
    that names them and every accepted key."""
    options = _renamed(config_cls, dict(options), method)
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    subs, flat = _sub_configs(config_cls), _flat_keys(config_cls)
    top, nested, unknown = {}, {name: {} for name in subs}, []
    for key, value in options.items():
        if key in subs and isinstance(value, dict):
            unknown += [f"{key}.{k}" for k in value if k not in _init_names(subs[key])]
            nested[key].update({k: v for k, v in value.items() if k in _init_names(subs[key])})
        elif key in fields:
            top[key] = value
        elif key in flat:
            sub, name = flat[key]
            nested[sub][name] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(sorted(unknown))} for method {method!r}; it accepts: "
            f"{', '.join(sorted(option_names(config_cls)))}"
        )
    for name, values in nested.items():
        if values:
            top[name] = dataclasses.replace(top.get(name) or fields[name].default_factory(), **values)
    return config_cls(**top)


def _init_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


__all__ = ["DistillConfig", "option_names", "parse_options"]
