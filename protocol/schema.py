"""Job settings as data: every JobSpec field carries a :class:`Setting` (label, help with units, range or choices,
group), and :func:`check_value` checks one value against it.

The command line (backend/cli_args.py), the Blender properties (blender_addon/properties.py) and the server's status
fields are generated from these records, so adding a job setting is one ``setting(...)`` line in protocol/jobspec.py.

The kind of a field comes from its annotation:

    str                 "text"    (or "choice" when the Setting lists choices)
    int                 "integer" (bool and float refused)
    float               "number"  (finite; an int is accepted and stored as float)
    bool                "flag"
    tuple[float, float] "pair"    (low, high) with low <= high, both finite
    dict                "json"    plain JSON, depth and size bounded (protocol/jsonvalue.py)

Pure Python: Blender's own Python imports it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import reprlib
import typing
from dataclasses import MISSING, dataclass
from functools import cache
from typing import Any

from .jsonvalue import JSONValueError, bounded_json

KINDS = ("text", "choice", "integer", "number", "flag", "pair", "json")
METADATA_KEY = "dreamstill"


class JobSpecError(ValueError):
    """A JobSpec field is out of range; the message names the field and what to change."""


@dataclass(frozen=True)
class Setting:
    """What a job setting means and which values it takes; read by the validators and the UI generators."""

    label: str  # short UI name, e.g. "Mesh Resolution"
    help: str  # one sentence with units (degrees, scene units = metres, pixels), and what 0 means if special
    group: str = "advanced"  # "job", "camera", "output" or "advanced": CLI argument group and panel section
    minimum: float | None = None  # per number for a pair
    maximum: float | None = None
    soft_maximum: float | None = None  # end of the UI slider (hard limit stays ``maximum``)
    zero_means: str = ""  # when set, 0 is allowed outside [minimum, maximum] and means this
    choices: tuple[tuple[str, str, str], ...] = ()  # (value, label, description) of a "choice" field
    max_chars: int = 0  # text: the longest value (0 = no limit: only for non-text kinds)
    max_depth: int = 0  # json: deepest nesting
    max_bytes: int = 0  # json: longest serialised form
    required: bool = False  # text: must not be blank
    example: str = ""  # shown in errors and as the CLI metavar, e.g. 'shift_ratio=0.1'
    flag: str = ""  # CLI flag when not --<name-with-dashes>
    positional: bool = False  # the commands take it as their positional argument, not as a flag
    implies: tuple[tuple[str, Any], ...] = ()  # CLI: giving this flag sets these fields unless they are given too
    status: bool = False  # part of the server's status of a job (JobSpec.summary)

    @property
    def choice_values(self) -> tuple[str, ...]:
        return tuple(c[0] for c in self.choices)


def setting(default=MISSING, *, default_factory=MISSING, **metadata) -> Any:
    """A dataclass field with its :class:`Setting`: ``steps: int = setting(400, label="Steps", help=...)``."""
    return dataclasses.field(
        default=default, default_factory=default_factory, metadata={METADATA_KEY: Setting(**metadata)}
    )


@dataclass(frozen=True)
class SpecField:
    """One field of a spec class: its name, kind, default (MISSING when required) and Setting."""

    name: str
    kind: str
    default: Any
    setting: Setting

    @property
    def has_default(self) -> bool:
        return self.default is not MISSING


def _kind(cls: type, name: str, annotation, meta: Setting) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return "flag"
    if annotation is str:
        return "choice" if meta.choices else "text"
    if annotation is int:
        return "integer"
    if annotation is float:
        return "number"
    if origin is tuple and args == (float, float):
        return "pair"
    if annotation is dict or origin is dict:
        return "json"
    raise TypeError(
        f"{cls.__name__}.{name}: annotation {annotation!r} has no setting kind; use str, int, float, bool, "
        "tuple[float, float] or dict"
    )


@cache
def schema_of(cls: type) -> dict[str, SpecField]:
    """name -> SpecField for every field of the dataclass ``cls``, in declaration order (cached per class)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(METADATA_KEY)
        if not isinstance(meta, Setting):
            raise TypeError(f"{cls.__name__}.{f.name}: declare it with setting(...) so it has a label and help")
        default = f.default if f.default is not MISSING else MISSING
        if f.default_factory is not MISSING:
            default = f.default_factory()
        kind = _kind(cls, f.name, hints[f.name], meta)
        if kind == "text" and meta.max_chars <= 0:
            raise TypeError(f"{cls.__name__}.{f.name}: a text setting needs max_chars (every string is bounded)")
        if kind == "json" and (meta.max_depth <= 0 or meta.max_bytes <= 0):
            raise TypeError(f"{cls.__name__}.{f.name}: a json setting needs max_depth and max_bytes")
        out[f.name] = SpecField(f.name, kind, default, meta)
    return out


# --------------------------------------------------------------------------------------------------- checks
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlong = 40


def _show(value) -> str:
    """A short repr for an error message, whatever the value (reprlib cuts long text; huge ints cannot be printed)."""
    try:
        return _REPR.repr(value)
    except ValueError:
        return f"a {value.bit_length()}-bit integer" if isinstance(value, int) else f"a {type(value).__name__}"


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def describe_range(field: SpecField) -> str:
    """The accepted values in words, e.g. "0 (the mode's default) or 16..512"."""
    s = field.setting
    if s.minimum is not None and s.maximum is not None:
        span = f"{_num(s.minimum)}..{_num(s.maximum)}"
    elif s.minimum is not None:
        span = f">= {_num(s.minimum)}"
    elif s.maximum is not None:
        span = f"<= {_num(s.maximum)}"
    else:
        span = "any finite value"
    if not s.zero_means:
        return span
    if s.minimum is not None and s.minimum > 0:
        return f"0 ({s.zero_means}) or {span}"
    return f"{span}; 0 = {s.zero_means}"


def _in_range(field: SpecField, x: float) -> bool:
    s = field.setting
    if s.zero_means and x == 0:
        return True
    return (s.minimum is None or x >= s.minimum) and (s.maximum is None or x <= s.maximum)


def _text(field: SpecField, value, bad) -> str:
    s = field.setting
    if not isinstance(value, str):
        bad(f"is {type(value).__name__} {_show(value)}; send text")
    if s.max_chars and len(value) > s.max_chars:  # a choice is bounded by its list
        bad(f"is {len(value)} characters; shorten it to at most {s.max_chars}")
    if s.required and not value.strip():
        bad(f"must be a non-empty text {field.name.replace('_', ' ')}")
    if s.choices and value not in s.choice_values:
        bad(f"unknown {field.name} {_show(value)}; choose one of {', '.join(s.choice_values)}")
    return value


def _integer(field: SpecField, value, bad) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        bad(f"is {_show(value)}; use a whole number, {describe_range(field)}")
    value = int(value)
    if not _in_range(field, value):
        bad(f"is {_show(value)}; use a whole number, {describe_range(field)}")
    return value


def _number(field: SpecField, value, bad) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        bad(f"is {_show(value)}; use a number, {describe_range(field)}")
    value = float(value)
    if not math.isfinite(value):
        bad(f"is {value}; use a finite number, {describe_range(field)}")
    if not _in_range(field, value):
        bad(f"is {_num(value)}; use {describe_range(field)}")
    return value


def _pair(field: SpecField, value, bad) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        bad(f"is {_show(value)}; use a pair (low, high) of numbers within {describe_range(field)}")
    lo, hi = (_number(field, x, bad) for x in value)
    if lo > hi:
        bad(f"is ({_num(lo)}, {_num(hi)}); the first number must not exceed the second")
    return (lo, hi)


def _flag(field: SpecField, value, bad) -> bool:
    if not isinstance(value, bool):
        bad(f"is {_show(value)}; use true or false")
    return value


def _json(field: SpecField, value, bad) -> dict:
    s = field.setting
    example = f" such as {s.example}" if s.example else ""
    if not isinstance(value, dict):
        bad(f"is {type(value).__name__}; use an object of settings{example}")
    try:
        return bounded_json(value, max_depth=s.max_depth, max_bytes=s.max_bytes)
    except JSONValueError as err:
        bad(str(err))


_CHECKS = {
    "text": _text,
    "choice": _text,
    "integer": _integer,
    "number": _number,
    "pair": _pair,
    "flag": _flag,
    "json": _json,
}


def check_value(field: SpecField, value, owner: str = "JobSpec"):
    """``value`` in the field's normal form (ints for integers, floats for numbers, a tuple for a pair, a fresh
    JSON copy for json), or JobSpecError "<owner>.<field>: <what is wrong>; <what to use>"."""

    def bad(why: str):
        raise JobSpecError(f"{owner}.{field.name}: {why}")

    return _CHECKS[field.kind](field, value, bad)


__all__ = [
    "KINDS",
    "JobSpecError",
    "Setting",
    "SpecField",
    "check_value",
    "describe_range",
    "schema_of",
    "setting",
]
