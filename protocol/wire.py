"""The wire format: one JSON header frame followed by raw array frames.

A message on the wire is a list of frames::

    [header, array_0, array_1, ...]

``header`` is UTF-8 JSON::

    {"v": 1, "type": "mesh", "job": "3f9c...", "rid": "12", "body": {...},
     "arrays": [{"name": "vertices", "dtype": "float32", "shape": [N, 3]}, ...]}

and frame ``i + 1`` holds the C-ordered little-endian bytes of ``arrays[i]``. Arrays go out without copying (numpy
buffers handed to ``send_multipart(copy=False)``) and come back as ``np.frombuffer`` views of the received frames
(read-only, no copy). Nothing is ever unpickled: the header is JSON and arrays are checked against a dtype
whitelist and their frame length (``prod(shape) * itemsize == len(frame)``) before a view is made.

This module knows nothing about message types; ``protocol.messages`` checks each type's fields and arrays.
Pure stdlib + numpy (Blender imports it).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PROTOCOL_VERSION = 1

# Size limits. A peer's message is refused (ProtocolError "too_large") before any array view is made.
MAX_HEADER_BYTES = 1 << 20  # 1 MiB of JSON
MAX_ARRAYS = 8
MAX_NDIM = 4
MAX_REQUEST_BYTES = 8 << 20  # what a server accepts from a client in one request (header and any arrays)
MAX_REQUEST_FRAMES = 1 + MAX_ARRAYS  # a server drops longer messages frame by frame, never decoding them
MAX_DIM = 1 << 31  # any one array axis (a zero-sized array cannot hide a 2**62 axis behind its 0 bytes)
MAX_MESSAGE_BYTES = 1 << 30  # what a client accepts from a server (a mesh with a 4k texture is ~100 MB)

# Arrays travel little-endian; these are the only dtypes a decoder accepts.
DTYPES = {
    "uint8": np.dtype("|u1"),
    "int32": np.dtype("<i4"),
    "uint32": np.dtype("<u4"),
    "int64": np.dtype("<i8"),
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
}


class ProtocolError(ValueError):
    """A message could not be decoded or broke a limit. ``code`` is machine-readable, the text is for a person.

    Codes: ``malformed``, ``unsupported_version``, ``too_large``, ``bad_array``, ``unknown_type``, ``bad_field``,
    ``bad_spec``.
    """

    def __init__(self, code: str, message: str, rid: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.rid = rid  # the request id of the offending message when it could be read (for the error reply)


@dataclass
class RawMessage:
    """A decoded frame list before its type's schema is checked."""

    type: str
    version: int = PROTOCOL_VERSION
    job_id: str | None = None
    rid: str | None = None
    body: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def dtype_name(dtype: np.dtype) -> str:
    """The wire name of a numpy dtype, or ProtocolError when it is not on the whitelist."""
    dtype = np.dtype(dtype)
    for name, allowed in DTYPES.items():
        if dtype.kind == allowed.kind and dtype.itemsize == allowed.itemsize:  # either byte order
            return name
    raise ProtocolError("bad_array", f"dtype {dtype} cannot travel; use one of {', '.join(DTYPES)}")


def _json_default(value: Any):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.size <= 64:
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(
        f"{type(value).__name__} is not JSON-serializable; put small values in the body and arrays in the array frames"
    )


def pack(
    type: str,
    body: dict | None = None,
    arrays: dict[str, np.ndarray] | None = None,
    *,
    job_id: str | None = None,
    rid: str | None = None,
    version: int = PROTOCOL_VERSION,
) -> list:
    """Frames for one message: ``[header_bytes, *array_buffers]``, arrays neither copied nor pickled.

    Arrays are made C-contiguous and little-endian (a copy only when they were not already).
    """
    specs, buffers = [], []
    for name, array in (arrays or {}).items():
        array = np.asarray(array)
        wire = dtype_name(array.dtype)
        array = np.ascontiguousarray(array, dtype=DTYPES[wire])
        specs.append({"name": name, "dtype": wire, "shape": list(array.shape)})
        buffers.append(array)
    header = {"v": version, "type": type}
    if rid is not None:
        header["rid"] = rid  # early in the header, so a peer can find it even in a message it refuses to parse
    if job_id is not None:
        header["job"] = job_id
    header.update(body=body or {}, arrays=specs)
    data = json.dumps(header, default=_json_default, separators=(",", ":")).encode("utf-8")
    if len(data) > MAX_HEADER_BYTES:
        raise ProtocolError("too_large", f"message header is {len(data)} bytes; the limit is {MAX_HEADER_BYTES}")
    return [data, *buffers]


def _buffer(frame) -> memoryview:
    """A memoryview of one received frame (zmq.Frame, bytes, bytearray, memoryview or ndarray) without copying."""
    buffer = getattr(frame, "buffer", None)  # zmq.Frame
    view = memoryview(buffer if buffer is not None else frame)
    if view.ndim != 1 or view.format not in ("B", "b", "c"):
        view = view.cast("B")
    return view


_RID = re.compile(rb'"rid"\s*:\s*"([A-Za-z0-9_.:-]{1,64})"')


def sniff_rid(frame) -> str | None:
    """The request id of a header frame that may be too large, cut or malformed (searched, not parsed)."""
    try:
        head = _buffer(frame)
    except TypeError:
        return None
    match = _RID.search(bytes(head[:4096]))
    return match.group(1).decode("ascii") if match else None


def peek_header(frames: Sequence) -> dict:
    """The parsed JSON header of a frame list (version and size checks included), without touching arrays."""
    if not frames:
        raise ProtocolError("malformed", "empty message: expected a JSON header frame")
    head = _buffer(frames[0])
    if len(head) > MAX_HEADER_BYTES:
        raise ProtocolError(
            "too_large", f"header frame is {len(head)} bytes; the limit is {MAX_HEADER_BYTES}", sniff_rid(head)
        )
    try:
        header = json.loads(bytes(head).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(
            "malformed",
            f"header frame is not UTF-8 JSON ({exc.__class__.__name__}: {str(exc)[:200]})",
            sniff_rid(head),
        ) from None
    if not isinstance(header, dict):
        raise ProtocolError("malformed", "header must be a JSON object", sniff_rid(head))
    rid = header.get("rid")
    rid = rid if isinstance(rid, str) and len(rid) <= 64 else None
    version = header.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            "unsupported_version",
            f"this side speaks Dreamstill protocol version {PROTOCOL_VERSION}, the message has version {version!r}; "
            "install the same dreamstill version on both sides (add-on and server)",
            rid,
        )
    return header


def unpack(frames: Sequence, max_bytes: int = MAX_MESSAGE_BYTES) -> RawMessage:
    """Decode a frame list into a RawMessage; arrays are zero-copy read-only views of the frames.

    Every failure is a ProtocolError (never another exception), so a server can answer it and keep serving.
    """
    header = peek_header(frames)
    rid = header.get("rid") if isinstance(header.get("rid"), str) and len(header["rid"]) <= 64 else None

    def bad(code, text):
        raise ProtocolError(code, text, rid)

    total = sum(len(_buffer(f)) for f in frames)
    if total > max_bytes:
        bad("too_large", f"message is {total} bytes; the limit here is {max_bytes}")
    if len(frames) > 1 + MAX_ARRAYS:
        bad("malformed", f"message has {len(frames)} frames; at most {1 + MAX_ARRAYS} are allowed")
    kind = header.get("type")
    if not isinstance(kind, str) or not 0 < len(kind) <= 32:
        bad("malformed", "header.type must be a short string naming the message type")
    job_id = header.get("job")
    if job_id is not None and not isinstance(job_id, str):
        bad("malformed", "header.job must be a string job id")
    body = header.get("body", {})
    if not isinstance(body, dict):
        bad("malformed", "header.body must be a JSON object")
    specs = header.get("arrays", [])
    if not isinstance(specs, list) or len(specs) > MAX_ARRAYS:
        bad("malformed", f"header.arrays must be a list of at most {MAX_ARRAYS} array descriptions")
    if len(specs) != len(frames) - 1:
        bad("malformed", f"header lists {len(specs)} arrays but the message has {len(frames) - 1} array frames")
    arrays: dict[str, np.ndarray] = {}
    for spec, frame in zip(specs, frames[1:]):
        if not isinstance(spec, dict):
            bad("bad_array", "each header.arrays entry must be an object {name, dtype, shape}")
        name, wire, shape = spec.get("name"), spec.get("dtype"), spec.get("shape")
        if not isinstance(name, str) or not 0 < len(name) <= 64 or name in arrays:
            bad("bad_array", f"array name {name!r} must be a unique short string")
        if not isinstance(wire, str) or wire not in DTYPES:
            bad("bad_array", f"array {name!r}: dtype {wire!r} is not allowed; use one of {', '.join(DTYPES)}")
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_NDIM
            or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < MAX_DIM for n in shape)
        ):
            bad(
                "bad_array",
                f"array {name!r}: shape must be a list of at most {MAX_NDIM} integers in 0..{MAX_DIM - 1}",
            )
        dtype = DTYPES[wire]
        buffer = _buffer(frame)
        expected = math.prod(shape) * dtype.itemsize
        if expected != len(buffer):
            bad(
                "bad_array",
                f"array {name!r}: shape {shape} of {wire} needs {expected} bytes but its frame has {len(buffer)}",
            )
        try:
            array = np.frombuffer(buffer, dtype=dtype).reshape(shape)
        except ValueError as exc:  # e.g. a shape numpy cannot represent
            bad("bad_array", f"array {name!r}: shape {shape} cannot be made ({exc})")
        array.flags.writeable = False
        arrays[name] = array
    return RawMessage(type=kind, version=PROTOCOL_VERSION, job_id=job_id, rid=rid, body=body, arrays=arrays)
