"""Reading requests off the ROUTER: who sent it, its frames, and a cheap refusal of anything longer.

A request is a JSON header frame and at most MAX_ARRAYS array frames (protocol.wire.MAX_REQUEST_FRAMES); today's
request types carry no arrays, so they are one frame. libzmq hands a multipart message over only
once it has arrived whole, and caps each frame (MAXMSGSIZE) but not their count, so a message of a million empty
frames reaches the server as a million frames. They are read here one at a time into a scratch buffer and
dropped: no list, no zmq.Frame objects, no decoding, so the cost is a few microseconds a frame and the memory is
released as they are read.

The sender's *owner* is its CURVE public key when the server uses CURVE, else the owner tag in the routing id a
dreamstill Client chooses (protocol.client.routing_id), else the routing id itself (one connection).
"""

from __future__ import annotations

from dataclasses import dataclass

from dreamstill.protocol.wire import MAX_REQUEST_FRAMES, sniff_rid


@dataclass
class Request:
    ident: bytes  # the routing id of the connection (where replies go)
    owner: str  # who the sender is, for job ownership and quotas
    frames: list  # at most MAX_REQUEST_FRAMES
    extra_frames: int = 0  # frames beyond the limit, read and dropped

    @property
    def rid(self) -> str | None:
        return sniff_rid(self.frames[0]) if self.frames else None


def owner_of(ident: bytes, curve_user: str | None) -> str:
    if curve_user:
        return f"key:{curve_user}"
    if len(ident) == 16 and ident.startswith(b"ds"):
        return f"tag:{ident[2:10].hex()}"
    return f"conn:{ident.hex()}"


def read_request(sock, curve: bool) -> Request | None:
    """The next request from the ROUTER without blocking, or None when none is waiting."""
    import zmq

    try:
        ident = sock.recv(zmq.NOBLOCK)
    except zmq.Again:
        return None
    frames, extra, user = [], 0, None
    if sock.getsockopt(zmq.RCVMORE):
        head = sock.recv(copy=False)
        frames.append(head)
        if curve:
            try:
                user = head.get("User-Id")
            except zmq.ZMQError:
                user = None
        more = head.more
        while more and len(frames) < MAX_REQUEST_FRAMES:
            frame = sock.recv(copy=False)
            frames.append(frame)
            more = frame.more
        if more:
            extra = _drop_rest(sock)
    return Request(ident, owner_of(ident, user), frames, extra)


def _drop_rest(sock) -> int:
    """Read and drop the rest of a multipart message; how many frames that was."""
    import zmq

    scratch = bytearray(64)
    get, recv_into, rcvmore = sock.get, sock.recv_into, zmq.RCVMORE
    count = 0
    while get(rcvmore):
        recv_into(scratch)
        count += 1
    return count


__all__ = ["Request", "owner_of", "read_request"]
