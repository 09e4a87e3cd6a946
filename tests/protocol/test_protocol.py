"""Protocol: every message round-trips, arrays travel without copies, limits and versions are enforced on both
sides, and the decoder turns any malformed input into a ProtocolError (hypothesis fuzzing)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dreamstill.protocol import (
    Cancelled,
    Done,
    Failed,
    JobSpec,
    JobSpecError,
    MeshUpdate,
    Preview,
    Progress,
    ProtocolError,
)
from dreamstill.protocol.jobspec import MAX_PROMPT_CHARS, MAX_STEPS
from dreamstill.protocol.messages import EVENTS, REPLIES, REQUESTS, Message, decode, encode
from dreamstill.protocol.wire import MAX_HEADER_BYTES, PROTOCOL_VERSION, pack, unpack


def mesh(n=5, textured=True) -> MeshUpdate:
    rng = np.random.default_rng(0)
    faces = np.array([[0, 1, 2], [2, 3, 4]], dtype=np.int32)
    return MeshUpdate(
        step=7,
        vertices=rng.standard_normal((n, 3)).astype(np.float32),
        faces=faces,
        vertex_colors=rng.integers(0, 255, (n, 3), dtype=np.uint8),
        uvs=rng.random((n, 2), dtype=np.float32) if textured else None,
        texture=rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) if textured else None,
        final=True,
    )


EVENT_EXAMPLES = {
    "progress": Progress(step=3, total=10, loss=0.25, eta_s=1.5, elapsed_s=0.5),
    "preview": Preview(step=2, rgba=np.arange(6 * 5 * 4, dtype=np.uint8).reshape(6, 5, 4)),
    "mesh": mesh(),
    "done": Done(files=["/srv/jobs/x/asset.glb"], seconds=2.5, metrics={"seconds_per_step": 0.1}),
    "failed": Failed(code="out_of_memory", message="lower the resolution"),
    "cancelled": Cancelled(step=4),
}
OTHER_EXAMPLES = {
    "submit": Message("submit", payload=JobSpec(prompt="a red cube", steps=10, options={"eta": 0.1})),
    "cancel": Message("cancel", job_id="job-1"),
    "status": Message("status", job_id="job-1"),
    "list_jobs": Message("list_jobs", payload={"limit": 5}),
    "fetch_result": Message("fetch_result", job_id="job-1", payload={"name": "asset.glb", "offset": 10}),
    "attach": Message("attach", job_id="job-1"),
    "ping": Message("ping"),
    "accepted": Message("accepted", job_id="job-1", payload={"position": 2}),
    "job_status": Message("job_status", job_id="job-1", payload={"status": {"state": "running", "step": 3}}),
    "job_list": Message("job_list", payload={"jobs": [{"job_id": "a", "state": "done"}]}),
    "result_files": Message(
        "result_files", job_id="job-1", payload={"files": [{"name": "asset.glb", "size": 3, "sha256": "00"}]}
    ),
    "file_chunk": Message(
        "file_chunk",
        job_id="job-1",
        payload={"name": "asset.glb", "offset": 0, "size": 3, "eof": True, "data": np.frombuffer(b"abc", np.uint8)},
    ),
    "pong": Message("pong", payload={"server_id": "s1", "time": 1.5}),
    "error": Message("error", payload={"code": "malformed", "message": "header is not JSON"}),
}


def assert_same(a, b):
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif a is not None and hasattr(a, "__dataclass_fields__"):
        assert type(a) is type(b)
        for k in a.__dataclass_fields__:
            assert_same(getattr(a, k), getattr(b, k))
    else:
        assert a == b


def test_examples_cover_every_type():
    assert set(EVENT_EXAMPLES) | set(OTHER_EXAMPLES) == set(REQUESTS) | set(REPLIES) | set(EVENTS)


@pytest.mark.parametrize("kind", sorted(EVENT_EXAMPLES))
def test_events_round_trip(kind):
    event = EVENT_EXAMPLES[kind]
    msg = decode(encode(event, job_id="job-1"))
    assert msg.type == kind and msg.job_id == "job-1" and msg.version == PROTOCOL_VERSION
    assert_same(event, msg.payload)


@pytest.mark.parametrize("kind", sorted(OTHER_EXAMPLES))
def test_requests_and_replies_round_trip(kind):
    sent = OTHER_EXAMPLES[kind]
    sent.rid = "r7"
    msg = decode(encode(sent))
    assert (msg.type, msg.job_id, msg.rid) == (kind, sent.job_id, "r7")
    if kind == "submit":
        assert msg.payload == sent.payload
    else:
        assert_same(dict(sent.payload or {}), msg.payload)


def test_mesh_without_texture_and_nan_loss_round_trip():
    plain = mesh(textured=False)
    got = decode(encode(plain, job_id="j")).payload
    assert got.uvs is None and got.texture is None
    assert_same(plain, got)
    loss = decode(encode(Progress(1, 2, float("nan"), 0.0), job_id="j")).payload.loss
    assert math.isnan(loss)


def test_arrays_are_zero_copy_read_only_views_of_the_frames():
    frames = encode(mesh(), job_id="j")
    received = [bytes(f) if i == 0 else bytearray(memoryview(f).cast("B")) for i, f in enumerate(frames)]
    got = decode(received).payload
    assert np.shares_memory(np.frombuffer(received[1], np.uint8), got.vertices)
    assert not got.vertices.flags.writeable


def test_encode_casts_to_wire_dtypes():
    m = mesh()
    m.vertices = m.vertices.astype(">f8")  # big-endian float64
    m.faces = m.faces.astype(np.int64)
    got = decode(encode(m, job_id="j")).payload
    assert got.vertices.dtype == np.float32 and got.faces.dtype == np.int32
    np.testing.assert_allclose(got.vertices, m.vertices.astype(np.float32))


def raw(header: dict, *arrays) -> list:
    return [json.dumps(header).encode(), *arrays]


def test_unknown_version_is_refused_with_a_clear_message():
    frames = encode(Message("ping", rid="5"))
    header = json.loads(frames[0])
    header["v"] = 99
    with pytest.raises(ProtocolError) as err:
        decode(raw(header))
    assert err.value.code == "unsupported_version" and err.value.rid == "5"
    assert "version 1" in str(err.value) and "99" in str(err.value)


@pytest.mark.parametrize(
    "mutate, code",
    [
        (lambda h, a: (h, a[:-1]), "malformed"),  # a frame missing
        (lambda h, a: ({**h, "arrays": [{**h["arrays"][0], "dtype": "object"}] + h["arrays"][1:]}, a), "bad_array"),
        (lambda h, a: ({**h, "arrays": [{**h["arrays"][0], "dtype": "float128"}] + h["arrays"][1:]}, a), "bad_array"),
        (lambda h, a: ({**h, "arrays": [{**h["arrays"][0], "shape": [6, 3]}] + h["arrays"][1:]}, a), "bad_array"),
        (lambda h, a: ({**h, "arrays": [{**h["arrays"][0], "shape": [-5, -3]}] + h["arrays"][1:]}, a), "bad_array"),
        (lambda h, a: (h, [a[0][:-4]] + a[1:]), "bad_array"),  # truncated buffer
        (lambda h, a: ({**h, "type": "teleport"}, a), "unknown_type"),
        (lambda h, a: ({**h, "body": {"final": True}}, a), "bad_field"),  # step missing
        (lambda h, a: ({**h, "body": {"step": "seven"}}, a), "bad_field"),
        (lambda h, a: ({k: v for k, v in h.items() if k != "job"}, a), "bad_field"),
        (lambda h, a: ({**h, "body": []}, a), "malformed"),
    ],
)
def test_malformed_mesh_messages_are_refused(mutate, code):
    frames = encode(mesh(), job_id="j")
    header, arrays = json.loads(frames[0]), [np.asarray(a).tobytes() for a in frames[1:]]
    header, arrays = mutate(header, arrays)
    with pytest.raises(ProtocolError) as err:
        decode(raw(header, *arrays))
    assert err.value.code == code


def test_mesh_face_indices_and_rows_are_checked():
    bad = mesh()
    bad.faces = np.array([[0, 1, 9]], dtype=np.int32)  # vertex 9 of 5
    frames = encode(bad, job_id="j")  # the sender does not scan faces; the receiver does
    with pytest.raises(ProtocolError, match="face indices"):
        decode(frames)
    bad = mesh()
    bad.vertex_colors = bad.vertex_colors[:3]
    with pytest.raises(ProtocolError, match="rows"):
        encode(bad, job_id="j")


def test_size_limits():
    frames = encode(Preview(1, np.zeros((64, 64, 4), np.uint8)), job_id="j")
    with pytest.raises(ProtocolError) as err:
        unpack(frames, max_bytes=1000)
    assert err.value.code == "too_large"
    with pytest.raises(ProtocolError) as err:
        decode([b"{" + b" " * MAX_HEADER_BYTES + b"}"])
    assert err.value.code == "too_large"
    with pytest.raises(ProtocolError) as err:  # preview wider than any screen
        encode(Preview(1, np.zeros((1, 10_000, 4), np.uint8)), job_id="j")
    assert err.value.code == "too_large"


def test_spec_limits_are_checked_on_both_sides():
    # sending side: a JobSpec cannot even be made out of range, so nothing bad reaches encode
    with pytest.raises(JobSpecError, match="prompt"):
        encode(JobSpec(prompt="x" * (MAX_PROMPT_CHARS + 1)))
    with pytest.raises(JobSpecError, match="steps"):
        encode(JobSpec(prompt="a cube", steps=MAX_STEPS + 1))
    # receiving side: a peer that skipped the check is refused with the same field named
    for field, value in [
        ("prompt", "x" * (MAX_PROMPT_CHARS + 1)),
        ("steps", MAX_STEPS + 1),
        ("steps", 10.0),
        ("steps", True),
        ("resolution", 5000),
        ("steps", "many"),
        ("guidance", {"a": 1}),
        ("negative_prompt", "x" * (MAX_PROMPT_CHARS + 1)),
        ("bogus", 1),
    ]:
        spec = JobSpec(prompt="a cube").to_dict()
        spec[field] = value
        with pytest.raises(ProtocolError) as err:
            decode(pack("submit", {"spec": spec}, rid="3"))
        assert err.value.code == "bad_spec" and err.value.rid == "3"
        assert field in str(err.value)


def test_expect_limits_direction():
    with pytest.raises(ProtocolError, match="not accepted here"):
        decode(encode(EVENT_EXAMPLES["done"], job_id="j"), expect=REQUESTS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=64), min_size=0, max_size=4))
def test_decoder_fuzz_random_frames(frames):
    try:
        decode(frames)
    except ProtocolError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(sorted(EVENT_EXAMPLES) + ["submit", "file_chunk", "fetch_result"]),
    path=st.lists(
        st.sampled_from(
            [
                "v",
                "type",
                "job",
                "rid",
                "body",
                "arrays",
                0,
                "name",
                "dtype",
                "shape",
                "step",
                "spec",
                "steps",
                "prompt",
                "rgba",
                "faces",
                "data",
            ]
        ),
        min_size=1,
        max_size=3,
    ),
    value=json_values,
    drop_frame=st.booleans(),
)
def test_decoder_fuzz_mutated_valid_messages(kind, path, value, drop_frame):
    """Replace one field (at any depth) of a valid header with random JSON: a Message or a ProtocolError."""
    sent = EVENT_EXAMPLES.get(kind) or OTHER_EXAMPLES[kind]
    frames = encode(sent, job_id="j")
    header = json.loads(frames[0])
    node = header
    for key in path[:-1]:
        nxt = (
            node.get(key)
            if isinstance(node, dict)
            else (node[key] if isinstance(key, int) and isinstance(node, list) and key < len(node) else None)
        )
        if not isinstance(nxt, (dict, list)):
            break
        node = nxt
    key = path[-1]
    if isinstance(node, dict):
        node[str(key)] = value
    elif isinstance(node, list) and node:
        node[0] = value
    arrays = [np.asarray(a).tobytes() for a in frames[1:]]
    if drop_frame and arrays:
        arrays = arrays[1:]
    try:
        decode([json.dumps(header).encode(), *arrays])
    except ProtocolError:
        pass


def test_protocol_imports_without_torch():
    code = (
        "import sys; import dreamstill.protocol as p; from dreamstill.protocol import client; "
        "assert 'torch' not in sys.modules, 'protocol imported torch'; print(p.Client.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Client"


def test_client_address_is_checked():
    from dreamstill.protocol.client import check_address

    assert check_address("tcp://127.0.0.1:5555") == "tcp://127.0.0.1:5555"
    assert check_address("tcp://gpu-box.local:6000")
    for bad in ["127.0.0.1:5555", "tcp://127.0.0.1", "http://x:1", "", "tcp://a b:1"]:
        with pytest.raises(ValueError, match="tcp://HOST:PORT"):
            check_address(bad)
