"""Bounded JSON values: checked without recursion, so a hostile nesting costs microseconds, not a RecursionError.

:func:`bounded_json` accepts what JSON can carry back unchanged (dicts with text keys, lists, tuples, text, finite
numbers, booleans, None) within a nesting depth and a serialised size, and returns a fresh copy (tuples become
lists, as they would after a trip through JSON), so the caller's object can change later without touching the copy.
"""

from __future__ import annotations

import json
import math

_SCALARS = (str, int, float, bool, type(None))


class JSONValueError(ValueError):
    """The value is not plain JSON within the limits; the message says what is wrong and where."""


def bounded_json(value, *, max_depth: int, max_bytes: int):
    """A copy of ``value`` after checking it is plain JSON, at most ``max_depth`` containers deep and at most
    ``max_bytes`` long when serialised (compact UTF-8); JSONValueError otherwise.

    The walk is iterative and stops at the first container past ``max_depth`` or once the running size estimate
    passes ``max_bytes``, so its cost is bounded by the limits, not by the input.
    """
    budget = max_bytes
    stack = [(value, 0, "")]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, dict | list | tuple):
            if depth >= max_depth:
                raise JSONValueError(f"nested deeper than {max_depth} levels at {where or 'the top'}")
            budget -= 2 + len(item)  # brackets and separators, before walking a container of any length
            if budget < 0:
                break
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise JSONValueError(f"key {key!r} at {where or 'the top'} is not text")
                    budget -= len(key) + 3
                    stack.append((child, depth + 1, f"{where}.{key}" if where else key))
            else:
                stack.extend((child, depth + 1, f"{where}[{i}]") for i, child in enumerate(item))
        elif isinstance(item, _SCALARS):
            if isinstance(item, float) and not math.isfinite(item):
                raise JSONValueError(f"{where or 'the value'} is {item}; JSON numbers must be finite")
            budget -= len(item) + 2 if isinstance(item, str) else 4
        else:
            raise JSONValueError(
                f"{where or 'the value'} is a {type(item).__name__}; use text, numbers, true/false, null, "
                "lists and objects"
            )
        if budget < 0:
            break
    if budget < 0:
        raise JSONValueError(f"is more than {max_bytes} bytes as JSON; keep it under {max_bytes}")
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as err:  # e.g. an integer with more digits than Python converts to text
        raise JSONValueError(f"cannot be written as JSON ({err})") from None
    if len(text.encode()) > max_bytes:
        raise JSONValueError(f"is more than {max_bytes} bytes as JSON; keep it under {max_bytes}")
    return json.loads(text)


__all__ = ["JSONValueError", "bounded_json"]
