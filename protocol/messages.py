"""Message types of the Dreamstill protocol, their schemas, and ``encode`` / ``decode``.

Three families (all carry the protocol version in their header, see ``protocol.wire``):

- requests, client -> server: ``submit`` (a JobSpec, and for the texture and refine modes the artist's mesh as
  array frames, ``protocol.input_mesh``), ``cancel``, ``status``, ``list_jobs``, ``fetch_result``,
  ``attach`` (re-subscribe to a job after a reconnect), ``ping``;
- replies, server -> client: ``accepted``, ``job_status``, ``job_list``, ``result_files``, ``file_chunk``, ``pong``,
  ``error``; a reply carries the ``rid`` (request id) of its request;
- job events, server -> client: ``progress``, ``preview``, ``mesh``, ``done``, ``failed``, ``cancelled``: one per
  class in ``protocol.events``, decoded back into that very class.

Every reply carries the ``rid`` of its request, errors included (a server reads the rid before anything else can
fail). Two requests are paced by the reader: ``list_jobs`` answers one page (``next`` names the cursor to pass as
``before`` for the next one) and each ``file_chunk`` carries a ``token`` that the next ``fetch_result`` of the same
client must echo, so a server never queues more than one unread chunk per client.

Every field and array is checked against its type's schema on decode (and on encode, so a sender learns of a
broken limit before the peer does); a failure is a ``ProtocolError`` whose text says what to change.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .events import Cancelled, Done, Failed, MeshUpdate, Preview, Progress
from .input_mesh import InputMesh, check_mesh_for_mode
from .jobspec import MAX_TEXTURE_SIZE, JobSpec, JobSpecError
from .newest import STATE_KINDS, TERMINAL_KINDS
from .wire import MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES, PROTOCOL_VERSION, ProtocolError, RawMessage, pack, unpack

REQUESTS = ("submit", "cancel", "status", "list_jobs", "fetch_result", "attach", "ping")
REPLIES = ("accepted", "job_status", "job_list", "result_files", "file_chunk", "pong", "error")
EVENTS = ("progress", "preview", "mesh", "done", "failed", "cancelled")
TERMINAL = TERMINAL_KINDS
STATE_EVENTS = STATE_KINDS  # only the newest of each kind matters to a viewer (protocol.newest)

EVENT_TYPES = {
    Progress: "progress",
    Preview: "preview",
    MeshUpdate: "mesh",
    Done: "done",
    Failed: "failed",
    Cancelled: "cancelled",
}

MAX_TEXT = 64 * 1024  # characters in any one string field
MAX_IMAGE_SIDE = 8192
MAX_MESH_VERTICES = 50_000_000
MAX_MESH_FACES = 100_000_000
MAX_CHUNK_BYTES = 8 << 20
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# Field rules: name -> (kind, required). Kinds: int, num (int or float), bool, str, dict, list (of dicts),
# strs (list of str). Unknown body fields are ignored (additions within one protocol version stay compatible).
_BODY = {
    "submit": {"spec": ("dict", True)},
    "cancel": {},
    "status": {},
    "list_jobs": {"limit": ("int", False), "before": ("str", False)},
    "fetch_result": {"name": ("str", False), "offset": ("int", False), "token": ("str", False)},
    "attach": {},
    "ping": {},
    "accepted": {"position": ("int", True)},
    "job_status": {"status": ("dict", True)},
    "job_list": {"jobs": ("list", True), "next": ("str", False)},
    "result_files": {"files": ("list", True)},
    "file_chunk": {
        "name": ("str", True),
        "offset": ("int", True),
        "size": ("int", True),
        "eof": ("bool", True),
        "token": ("str", False),
    },
    "pong": {"server_id": ("str", True), "time": ("num", True)},
    "error": {"code": ("str", True), "message": ("str", True)},
    "progress": {
        "step": ("int", True),
        "total": ("int", True),
        "loss": ("num", True),
        "eta_s": ("num", True),
        "elapsed_s": ("num", False),
        "phase": ("str", False),
    },
    "preview": {"step": ("int", True)},
    "mesh": {"step": ("int", True), "final": ("bool", False)},
    "done": {"files": ("strs", True), "seconds": ("num", False), "metrics": ("dict", False)},
    "failed": {"code": ("str", True), "message": ("str", True)},
    "cancelled": {"step": ("int", False)},
}
# Types whose header must name a job.
_NEEDS_JOB = {
    "cancel",
    "status",
    "fetch_result",
    "attach",
    "accepted",
    "job_status",
    "result_files",
    "file_chunk",
    *EVENTS,
}
# Array rules: name -> (dtype, shape with symbolic sizes tied across arrays, required).
_ARRAYS = {
    "submit": {  # the input mesh of a texture / refine job (protocol.input_mesh)
        "vertices": ("float32", ("N", 3), False),
        "faces": ("int32", ("M", 3), False),
        "uvs": ("float32", ("M", 3, 2), False),
    },
    "preview": {"rgba": ("uint8", ("H", "W", 4), True)},
    "mesh": {
        "vertices": ("float32", ("N", 3), True),
        "faces": ("int32", ("M", 3), True),
        "vertex_colors": ("uint8", ("N", 3), False),
        "uvs": ("float32", ("N", 2), False),
        "texture": ("uint8", ("T", "U", 3), False),
    },
    "file_chunk": {"data": ("uint8", ("K",), True)},
}
_SIZE_LIMITS = {
    "H": MAX_IMAGE_SIDE,
    "W": MAX_IMAGE_SIDE,
    "N": MAX_MESH_VERTICES,
    "M": MAX_MESH_FACES,
    "T": MAX_TEXTURE_SIZE,
    "U": MAX_TEXTURE_SIZE,
    "K": MAX_CHUNK_BYTES,
}


@dataclass
class Message:
    """One decoded message.

    ``payload`` is the protocol.events instance for event types, the JobSpec for ``submit``, and a dict for the
    rest (its body fields, plus ``data`` as a uint8 array for ``file_chunk``). ``mesh`` is the InputMesh a
    ``submit`` carries (texture and refine modes), else None.
    """

    type: str
    job_id: str | None = None
    payload: Any = None
    rid: str | None = None
    version: int = PROTOCOL_VERSION
    mesh: InputMesh | None = None

    @property
    def is_event(self) -> bool:
        return self.type in EVENTS

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL


def _check_body(kind: str, body: dict, rid: str | None) -> None:
    for name, (rule, required) in _BODY[kind].items():
        if name not in body or body[name] is None:
            if required:
                raise ProtocolError("bad_field", f"{kind}: field {name!r} is missing", rid)
            continue
        value = body[name]
        ok = {
            "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "num": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "bool": lambda v: isinstance(v, bool),
            "str": lambda v: isinstance(v, str) and len(v) <= MAX_TEXT,
            "dict": lambda v: isinstance(v, dict),
            "list": lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v),
            "strs": lambda v: isinstance(v, list) and all(isinstance(x, str) and len(x) <= MAX_TEXT for x in v),
        }[rule](value)
        if not ok:
            what = {
                "int": "a whole number",
                "num": "a number",
                "bool": "true or false",
                "str": f"a string of at most {MAX_TEXT} characters",
                "dict": "an object",
                "list": "a list of objects",
                "strs": "a list of strings",
            }[rule]
            raise ProtocolError("bad_field", f"{kind}: field {name!r} must be {what}, got {type(value).__name__}", rid)


def _check_arrays(kind: str, arrays: dict[str, np.ndarray], rid: str | None, deep: bool) -> None:
    rules = _ARRAYS.get(kind, {})
    extra = sorted(set(arrays) - set(rules))
    if extra:
        raise ProtocolError(
            "bad_array", f"{kind}: unexpected array(s) {extra}; expected {sorted(rules) or 'none'}", rid
        )
    sizes: dict[str, int] = {}
    for name, (dtype, shape, required) in rules.items():
        if name not in arrays:
            if required:
                raise ProtocolError("bad_array", f"{kind}: array {name!r} is missing", rid)
            continue
        array = arrays[name]
        if array.dtype != np.dtype(dtype):
            raise ProtocolError("bad_array", f"{kind}: array {name!r} must be {dtype}, got {array.dtype}", rid)
        if array.ndim != len(shape):
            raise ProtocolError("bad_array", f"{kind}: array {name!r} must have shape {shape}, got {array.shape}", rid)
        for want, got in zip(shape, array.shape):
            if isinstance(want, int):
                if got != want:
                    raise ProtocolError(
                        "bad_array", f"{kind}: array {name!r} must have shape {shape}, got {array.shape}", rid
                    )
            elif sizes.setdefault(want, got) != got:
                raise ProtocolError(
                    "bad_array", f"{kind}: array {name!r} has {got} rows where the other arrays have {sizes[want]}", rid
                )
            elif got > _SIZE_LIMITS[want]:
                raise ProtocolError(
                    "too_large",
                    f"{kind}: array {name!r} has size {got} on an axis limited to {_SIZE_LIMITS[want]}",
                    rid,
                )
    if kind == "mesh" and deep and arrays["faces"].size:
        faces, count = arrays["faces"], arrays["vertices"].shape[0]
        if int(faces.view(np.uint32).max()) >= count:  # one pass: negatives wrap to >= 2**31
            raise ProtocolError("bad_array", f"mesh: face indices must lie in 0..{count - 1} (the vertex count)", rid)
    if kind == "mesh" and deep and not np.isfinite(arrays["vertices"]).all():
        raise ProtocolError("bad_array", "mesh: vertices must be finite numbers", rid)
    if kind == "submit" and deep and arrays:
        try:
            InputMesh.from_arrays(arrays)
        except ValueError as err:
            raise ProtocolError("bad_array", f"submit: {err}", rid) from None


def _event_body(event) -> tuple[str, dict, dict]:
    kind = EVENT_TYPES[type(event)]
    if kind == "preview":
        return kind, {"step": int(event.step)}, {"rgba": event.rgba}
    if kind == "mesh":
        arrays = {
            "vertices": np.asarray(event.vertices, dtype=np.float32),
            "faces": np.asarray(event.faces, dtype=np.int32),
        }
        for name in ("vertex_colors", "uvs", "texture"):
            value = getattr(event, name)
            if value is not None:
                arrays[name] = np.asarray(value, dtype=np.float32 if name == "uvs" else np.uint8)
        return kind, {"step": int(event.step), "final": bool(event.final)}, arrays
    body = dataclasses.asdict(event)
    if kind == "progress":
        body = {
            "step": int(body["step"]),
            "total": int(body["total"]),
            "loss": float(body["loss"]),
            "eta_s": float(body["eta_s"]),
            "elapsed_s": float(body["elapsed_s"]),
            "phase": str(body["phase"]),
        }
    elif kind == "done":
        body["files"] = [str(f) for f in body["files"]]
        body["seconds"] = float(body["seconds"])
    return kind, body, {}


def event_from(kind: str, body: dict, arrays: dict | None = None):
    """Build the protocol.events instance for an event type from its (already checked) body and arrays."""
    arrays = arrays or {}
    if kind == "progress":
        return Progress(
            step=body["step"],
            total=body["total"],
            loss=float(body["loss"]),
            eta_s=float(body["eta_s"]),
            elapsed_s=float(body.get("elapsed_s") or 0.0),
            phase=str(body.get("phase") or "optimize"),
        )
    if kind == "preview":
        return Preview(step=body["step"], rgba=arrays["rgba"])
    if kind == "mesh":
        return MeshUpdate(
            step=body["step"],
            vertices=arrays["vertices"],
            faces=arrays["faces"],
            vertex_colors=arrays.get("vertex_colors"),
            uvs=arrays.get("uvs"),
            texture=arrays.get("texture"),
            final=bool(body.get("final", False)),
        )
    if kind == "done":
        return Done(
            files=list(body["files"]),
            seconds=float(body.get("seconds") or 0.0),
            metrics=dict(body.get("metrics") or {}),
        )
    if kind == "failed":
        return Failed(code=body["code"], message=body["message"])
    if kind == "cancelled":
        return Cancelled(step=int(body.get("step") or 0))
    raise ProtocolError("unknown_type", f"{kind!r} is not a job event type")


def event_fields(event) -> tuple[str, dict]:
    """(type, JSON body) of a small event (progress/done/failed/cancelled), e.g. for an on-disk event log."""
    kind, body, arrays = _event_body(event)
    if arrays:
        raise ValueError(f"{kind} events carry arrays; log only small events")
    return kind, body


def encode(obj, *, job_id: str | None = None, rid: str | None = None) -> list:
    """Frames for a Message, a protocol.events instance (give ``job_id``) or a JobSpec (a ``submit`` request).

    A JobSpec is validated first (JobSpecError names the field to change), and every message is checked against
    its type's schema, so limits are enforced on the sending side as well as on the receiving one.
    """
    if isinstance(obj, JobSpec):
        obj = Message("submit", payload=obj)
    elif type(obj) in EVENT_TYPES:
        obj = Message(EVENT_TYPES[type(obj)], job_id=job_id, payload=obj)
    if not isinstance(obj, Message):
        raise TypeError(f"cannot encode {type(obj).__name__}; pass a Message, a JobSpec or a protocol.events event")
    kind = obj.type
    job_id = obj.job_id if obj.job_id is not None else job_id
    rid = obj.rid if obj.rid is not None else rid
    if kind not in _BODY:
        raise ProtocolError("unknown_type", f"unknown message type {kind!r}")
    if kind == "submit":
        spec = obj.payload if isinstance(obj.payload, JobSpec) else JobSpec.from_dict(dict(obj.payload["spec"]))
        check_mesh_for_mode(spec.mode, obj.mesh is not None)
        body, arrays = {"spec": spec.to_dict()}, ({} if obj.mesh is None else obj.mesh.arrays())
    elif kind in EVENTS:
        if type(obj.payload) not in EVENT_TYPES or EVENT_TYPES[type(obj.payload)] != kind:
            raise TypeError(f"a {kind!r} message needs a {kind} event payload, got {type(obj.payload).__name__}")
        _, body, arrays = _event_body(obj.payload)
    else:
        payload = dict(obj.payload or {})
        arrays = {k: v for k, v in payload.items() if isinstance(v, np.ndarray)}
        body = {k: v for k, v in payload.items() if k not in arrays}
    if kind in _NEEDS_JOB and (job_id is None or not JOB_ID.match(job_id)):
        raise ProtocolError("bad_field", f"{kind}: needs a job id of 1-64 letters, digits, '-' or '_', got {job_id!r}")
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    _check_body(kind, body, rid)
    _check_arrays(kind, arrays, rid, deep=False)
    frames = pack(kind, body, arrays, job_id=job_id, rid=rid)
    if kind == "submit" and obj.mesh is not None:
        _check_request_size(frames, obj.mesh)
    return frames


def _check_request_size(frames: list, mesh: InputMesh) -> None:
    """ProtocolError ``too_large`` before sending a submit whose mesh makes it longer than a server accepts
    (wire.MAX_REQUEST_BYTES), naming the sizes and a triangle count that fits."""
    total = sum(memoryview(f).nbytes for f in frames)
    if total <= MAX_REQUEST_BYTES:
        return
    fits = int(mesh.face_count * (MAX_REQUEST_BYTES - (total - mesh.nbytes)) / mesh.nbytes)
    what = f"{mesh.vertex_count:,} vertices and {mesh.face_count:,} triangles" + (
        " with per-corner UVs" if mesh.uvs is not None else ""
    )
    raise ProtocolError(
        "too_large",
        f"the mesh ({what}) makes the request {total / 2**20:.1f} MiB, and a server takes at most "
        f"{MAX_REQUEST_BYTES / 2**20:.1f} MiB in one request; decimate the mesh to about {max(fits, 0):,} "
        "triangles or fewer and send it again",
    )


def check(raw: RawMessage, expect: Sequence[str] | None = None) -> Message:
    """Check a RawMessage against its type's schema and build the typed Message."""
    kind, rid = raw.type, raw.rid
    if kind not in _BODY:
        raise ProtocolError("unknown_type", f"unknown message type {kind!r}; this side knows {', '.join(_BODY)}", rid)
    if expect is not None and kind not in expect:
        raise ProtocolError(
            "unknown_type", f"a {kind!r} message is not accepted here; send one of {', '.join(expect)}", rid
        )
    if kind in _NEEDS_JOB and (raw.job_id is None or not JOB_ID.match(raw.job_id)):
        raise ProtocolError(
            "bad_field",
            f"{kind}: header.job must be a job id of 1-64 letters, digits, '-' or '_', got {raw.job_id!r}",
            rid,
        )
    _check_body(kind, raw.body, rid)
    _check_arrays(kind, raw.arrays, rid, deep=True)
    mesh = None
    if kind in EVENTS:
        for name in ("loss", "eta_s", "elapsed_s", "seconds"):
            value = raw.body.get(name)
            if isinstance(value, float) and math.isinf(value) and name != "loss":
                raise ProtocolError("bad_field", f"{kind}: field {name!r} must be finite", rid)
        payload = event_from(kind, raw.body, raw.arrays)
    elif kind == "submit":
        try:
            payload = JobSpec.from_dict(raw.body["spec"])  # checked as it is made
            mesh = InputMesh.from_arrays(raw.arrays)  # checked by _check_arrays above
            check_mesh_for_mode(payload.mode, mesh is not None)
        except JobSpecError as exc:
            raise ProtocolError("bad_spec", str(exc), rid) from None
        except Exception as exc:  # a wrong type anywhere in the spec: never let it escape as another error
            raise ProtocolError(
                "bad_spec",
                f"JobSpec: a field has the wrong type ({exc.__class__.__name__}: "
                f"{str(exc)[:200]}); send numbers as numbers and text as text",
                rid,
            ) from None
    else:
        payload = dict(raw.body)
        payload.update(raw.arrays)
    return Message(kind, job_id=raw.job_id, payload=payload, rid=rid, version=raw.version, mesh=mesh)


def decode(frames: Sequence, *, max_bytes: int = MAX_MESSAGE_BYTES, expect: Sequence[str] | None = None) -> Message:
    """Decode a frame list into a Message (arrays are zero-copy, read-only views of the frames).

    ``expect`` limits the accepted types (a server passes REQUESTS). Any problem is a ProtocolError.
    """
    return check(unpack(frames, max_bytes=max_bytes), expect)
