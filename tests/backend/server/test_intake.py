"""Reading requests: who sent it, and a cheap refusal of messages with more frames than a request has."""

from __future__ import annotations

import zmq

from dreamstill.backend.server.intake import owner_of, read_request
from dreamstill.protocol.client import routing_id
from dreamstill.protocol.messages import Message, encode
from dreamstill.protocol.wire import MAX_REQUEST_FRAMES


def test_owner_comes_from_the_curve_key_or_the_clients_owner_tag():
    a1, a2, b = routing_id(b"alice"), routing_id(b"alice"), routing_id(b"bob")
    assert a1 != a2 and owner_of(a1, None) == owner_of(a2, None) != owner_of(b, None)  # one owner, two clients
    assert owner_of(b"\x00\x6b\x8b\x45\x67", None) == "conn:006b8b4567"  # a raw socket: its connection
    assert owner_of(a1, "Z85KEY") == "key:Z85KEY"


def test_a_message_with_many_frames_is_dropped_frame_by_frame_and_the_next_one_is_read():
    ctx = zmq.Context.instance()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    try:
        router.bind("inproc://intake-test")
        dealer.setsockopt(zmq.ROUTING_ID, b"raw-client")
        dealer.connect("inproc://intake-test")
        ping = encode(Message("ping", rid="7"))
        dealer.send_multipart([*ping, *([b""] * 50_000)])
        dealer.send_multipart(encode(Message("ping", rid="8")))
        assert router.poll(5000)
        first = read_request(router, curve=False)
        assert first.ident == b"raw-client" and len(first.frames) == MAX_REQUEST_FRAMES
        assert first.extra_frames == 50_001 - MAX_REQUEST_FRAMES  # read and dropped, never kept
        assert first.rid == "7"  # found without decoding: the refusal can name the request
        second = read_request(router, curve=False)
        assert second.extra_frames == 0 and second.rid == "8"
        assert read_request(router, curve=False) is None
    finally:
        router.close(0)
        dealer.close(0)
