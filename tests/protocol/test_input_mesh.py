"""The mesh that travels with a texture or refine submit: round trips, refusals with what to change, the request
limit checked before sending, and the rule that a mesh goes with exactly the modes that use one."""

from __future__ import annotations

import numpy as np
import pytest

from dreamstill.protocol import InputMesh, JobSpec, JobSpecError, ProtocolError, check_mesh_for_mode
from dreamstill.protocol.messages import Message, decode, encode
from dreamstill.protocol.wire import MAX_REQUEST_BYTES, pack, unpack

QUAD = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
QUAD_FACES = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
QUAD_UVS = np.array([[[0, 0], [1, 0], [1, 1]], [[0, 0], [1, 1], [0, 1]]], np.float32)


def received(frames: list) -> list[bytes]:
    """Frames as a socket delivers them (bytes), arrays included."""
    return [f if isinstance(f, bytes) else np.asarray(f).tobytes() for f in frames]


def texture_spec(**changes) -> JobSpec:
    return JobSpec(prompt="a red cube", mode="texture", steps=10, **changes)


def test_a_submit_with_a_mesh_and_its_uvs_round_trips():
    frames = encode(Message("submit", payload=texture_spec(), mesh=InputMesh(QUAD, QUAD_FACES, QUAD_UVS), rid="7"))
    msg = decode(frames, max_bytes=MAX_REQUEST_BYTES, expect=("submit",))
    assert msg.payload == texture_spec() and msg.rid == "7"
    np.testing.assert_array_equal(msg.mesh.vertices, QUAD)
    np.testing.assert_array_equal(msg.mesh.faces, QUAD_FACES)
    np.testing.assert_array_equal(msg.mesh.uvs, QUAD_UVS)
    assert msg.mesh.summary() == {"vertices": 4, "faces": 2, "uvs": True}


def test_a_mesh_without_uvs_and_a_submit_without_a_mesh_round_trip():
    refine = JobSpec(prompt="a red cube", mode="refine", keep_shape=0.8)
    msg = decode(encode(Message("submit", payload=refine, mesh=InputMesh(QUAD, QUAD_FACES))))
    assert msg.mesh.uvs is None and msg.payload.keep_shape == 0.8
    plain = decode(encode(JobSpec(prompt="a red cube")))
    assert plain.mesh is None and plain.payload.mode == "optimize"


@pytest.mark.parametrize(
    ("mode", "has_mesh", "match"),
    [
        ("texture", False, "'texture' works on a mesh, and none was sent"),
        ("refine", False, "'refine' works on a mesh"),
        ("optimize", True, "'optimize' makes an asset from the prompt alone, and a mesh was sent"),
        ("instant", True, "use mode 'texture'"),
    ],
)
def test_a_mesh_goes_with_exactly_the_modes_that_use_one(mode, has_mesh, match):
    with pytest.raises(JobSpecError, match=match):
        check_mesh_for_mode(mode, has_mesh)
    spec = JobSpec(prompt="a red cube", mode=mode)
    mesh = InputMesh(QUAD, QUAD_FACES) if has_mesh else None
    with pytest.raises(JobSpecError, match=match):  # the sender is stopped before anything is packed
        encode(Message("submit", payload=spec, mesh=mesh))
    arrays = mesh.arrays() if mesh is not None else {}
    frames = pack("submit", {"spec": spec.to_dict()}, arrays, rid="3")  # a sender that skipped the check
    with pytest.raises(ProtocolError, match=match) as err:
        decode(frames)
    assert err.value.code == "bad_spec" and err.value.rid == "3"


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"vertices": QUAD, "faces": np.array([[0, 1, 4]], np.int32)}, "index vertices 0..3"),
        ({"vertices": QUAD, "faces": np.array([[0, -1, 2]], np.int32)}, "index vertices 0..3"),
        ({"vertices": QUAD * np.nan, "faces": QUAD_FACES}, "vertices must be finite"),
        ({"vertices": QUAD, "faces": QUAD_FACES, "uvs": np.full((2, 3, 2), np.inf, np.float32)}, "uvs must be finite"),
        ({"vertices": QUAD}, "needs both 'vertices' and 'faces'"),
        ({"vertices": QUAD, "faces": np.zeros((0, 3), np.int32)}, "has no faces"),
    ],
)
def test_broken_meshes_are_refused_on_receipt_with_what_is_wrong(arrays, match):
    frames = pack("submit", {"spec": texture_spec().to_dict()}, arrays, rid="9")
    with pytest.raises(ProtocolError, match=match) as err:
        decode(received(frames))
    assert err.value.code == "bad_array" and err.value.rid == "9"
    with pytest.raises(ValueError, match=match):
        InputMesh.from_arrays(arrays)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"vertices": QUAD, "faces": QUAD_FACES, "uvs": QUAD_UVS[:1]}, "has 1 rows where the other arrays have 2"),
        ({"vertices": QUAD, "faces": QUAD_FACES, "uvs": QUAD_UVS.reshape(2, 6)}, r"must have shape \('M', 3, 2\)"),
        ({"vertices": QUAD.astype(np.float64), "faces": QUAD_FACES}, "must be float32, got float64"),
        ({"vertices": QUAD, "faces": QUAD_FACES, "normals": QUAD}, "unexpected array"),
    ],
)
def test_arrays_of_the_wrong_shape_or_type_are_refused(arrays, match):
    with pytest.raises(ProtocolError, match=match):
        decode(pack("submit", {"spec": texture_spec().to_dict()}, arrays))


def test_a_mesh_over_the_request_limit_is_refused_before_sending_with_a_count_that_fits():
    """Closed form: with UVs a triangle costs 36 bytes; a mesh of one vertex and F triangles over 8 MiB is refused
    by encode (the client's submit), and the suggested count packs into a request the server accepts."""
    faces = MAX_REQUEST_BYTES // 36 + 10
    big = InputMesh(np.zeros((1, 3), np.float32), np.zeros((faces, 3), np.int32), np.zeros((faces, 3, 2), np.float32))
    with pytest.raises(ProtocolError, match=r"8\.0 MiB in one request; decimate the mesh to about ([\d,]+)") as err:
        encode(Message("submit", payload=texture_spec(), mesh=big))
    assert err.value.code == "too_large"
    fits = int(err.value.message.split("about ")[1].split(" ")[0].replace(",", ""))
    assert faces - 200 < fits < faces
    small = InputMesh(big.vertices, big.faces[:fits], big.uvs[:fits])
    frames = encode(Message("submit", payload=texture_spec(), mesh=small))
    assert unpack(frames, max_bytes=MAX_REQUEST_BYTES).arrays["faces"].shape == (fits, 3)
