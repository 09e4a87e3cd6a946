"""bounded_json: plain JSON within a depth and a byte size, checked iteratively, returned as a fresh copy."""

from __future__ import annotations

import json
import math

import pytest

from dreamstill.protocol.jsonvalue import JSONValueError, bounded_json


def nest(depth: int, leaf=0):
    value = leaf
    for _ in range(depth - 1):
        value = [value]
    return value


def test_depth_limit_is_exact():
    assert bounded_json(nest(4), max_depth=4, max_bytes=100) == nest(4)  # 3 lists around a number
    assert bounded_json(nest(5), max_depth=4, max_bytes=100) == nest(5)  # 4 lists: depth 4 containers
    with pytest.raises(JSONValueError, match=r"nested deeper than 4 levels at \[0\]\[0\]\[0\]\[0\]"):
        bounded_json(nest(6), max_depth=4, max_bytes=100)


def test_size_limit_is_exact_in_utf8_bytes():
    value = {"k": "é" * 10}
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    assert size == 28
    assert bounded_json(value, max_depth=4, max_bytes=size) == value
    with pytest.raises(JSONValueError, match=f"more than {size - 1} bytes"):
        bounded_json(value, max_depth=4, max_bytes=size - 1)


def test_a_huge_container_is_refused_before_it_is_walked():
    with pytest.raises(JSONValueError, match="more than 1000 bytes"):
        bounded_json(list(range(10**6)), max_depth=4, max_bytes=1000)


def test_copy_is_plain_json():
    value = {"a": (1, 2.5, None, True), "b": {"c": "d"}}
    out = bounded_json(value, max_depth=4, max_bytes=1000)
    assert out == {"a": [1, 2.5, None, True], "b": {"c": "d"}}
    out["b"]["c"] = "changed"
    assert value["b"]["c"] == "d"


@pytest.mark.parametrize(
    "value, why",
    [
        ({"x": math.nan}, "x is nan; JSON numbers must be finite"),
        ({"x": [1, -math.inf]}, r"x\[1\] is -inf"),
        ({"x": b"raw"}, "x is a bytes"),
        ({"x": {2: 1}}, "key 2 at x is not text"),
        ({"x": 10**5000}, "cannot be written as JSON"),
    ],
)
def test_what_json_cannot_carry_is_refused(value, why):
    with pytest.raises(JSONValueError, match=why):
        bounded_json(value, max_depth=8, max_bytes=100_000)
