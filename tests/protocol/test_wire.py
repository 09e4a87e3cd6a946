"""Wire-level refusals: impossible shapes and too many frames become ProtocolError, and the rid is found even
in a header that cannot be parsed."""

from __future__ import annotations

import json

import pytest

from dreamstill.protocol.messages import Message, encode
from dreamstill.protocol.wire import ProtocolError, sniff_rid, unpack


def header(**kw) -> bytes:
    return json.dumps({"v": 1, "type": "preview", "job": "j", "body": {"step": 1}, **kw}).encode()


def test_a_zero_byte_array_cannot_claim_a_huge_axis():
    frames = [header(arrays=[{"name": "rgba", "dtype": "uint8", "shape": [0, 2**62, 4]}]), b""]
    with pytest.raises(ProtocolError) as err:
        unpack(frames)
    assert err.value.code == "bad_array"


def test_too_many_frames_and_the_rid_of_a_broken_header():
    with pytest.raises(ProtocolError) as err:
        unpack([header(arrays=[]), *([b""] * 20)])
    assert err.value.code == "malformed"
    frames = encode(Message("ping", rid="r42"))
    assert sniff_rid(frames[0]) == "r42" and frames[0].startswith(b'{"v":1,"type":"ping","rid":"r42"')
    assert sniff_rid(b'{"v":1,"type":"submit","rid":"77","body":{"spec":') == "77"
    with pytest.raises(ProtocolError) as err:
        unpack([b'{"v":1,"rid":"9","type":"ping","body":'])
    assert err.value.rid == "9"
    assert sniff_rid(b"\xff\xfe garbage") is None
