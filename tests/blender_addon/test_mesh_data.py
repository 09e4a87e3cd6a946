"""mesh_data without bpy: MeshUpdate -> foreach_set arrays, and a Blender mesh -> wire arrays within the protocol's
limits. The bpy side (reading a real mesh object) is tested in test_addon.py."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from dreamstill.blender_addon import mesh_data
from dreamstill.blender_addon.mesh_data import MeshTooLarge, mesh_arrays, mesh_budget, mesh_bytes, outgoing_mesh
from dreamstill.protocol import wire

TETRA = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
TETRA_FACES = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]], np.int32)


def test_bpy_free_modules_import_where_bpy_cannot():
    """The package's __init__ imports bpy only in register(), so these modules load in plain Python."""
    code = (
        "import sys; sys.modules['bpy'] = None; sys.modules['mathutils'] = None\n"
        "import dreamstill.blender_addon.mesh_data, dreamstill.blender_addon.placement, "
        "dreamstill.blender_addon.reporting\n"
        "assert 'bpy' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_mesh_arrays_lay_out_loops_corner_uvs_and_colours():
    uvs = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float32)
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [51, 102, 204]], np.uint8)
    arrays = mesh_arrays(TETRA, TETRA_FACES, colors, uvs)
    assert (arrays.vertex_count, arrays.face_count) == (4, 4)
    np.testing.assert_array_equal(arrays.co, TETRA.ravel())
    np.testing.assert_array_equal(arrays.loop_vertex, [0, 1, 2, 0, 1, 3, 0, 2, 3, 1, 2, 3])
    np.testing.assert_array_equal(arrays.loop_start, [0, 3, 6, 9])
    # loop 5 is corner 2 of face 1, i.e. vertex 3, whose UV is (1, 1)
    np.testing.assert_array_equal(arrays.corner_uv.reshape(12, 2)[5], (1, 1))
    np.testing.assert_array_equal(arrays.corner_uv.reshape(12, 2), uvs[TETRA_FACES.ravel()])
    np.testing.assert_allclose(arrays.colors.reshape(4, 4)[3], (0.2, 0.4, 0.8, 1.0), rtol=1e-6)
    assert arrays.co.dtype == np.float32 and arrays.loop_vertex.dtype == np.int32


def test_mesh_arrays_without_colours_or_uvs_and_empty():
    arrays = mesh_arrays(TETRA, TETRA_FACES)
    assert arrays.corner_uv is None and arrays.colors is None
    empty = mesh_arrays(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 2)))
    assert (empty.vertex_count, empty.face_count) == (0, 0) and empty.corner_uv is None and empty.colors is None


@pytest.mark.parametrize(
    ("faces", "colors", "uvs", "match"),
    [
        ([[0, 1, 5]], None, None, "vertex 5 but the mesh has 4 vertices"),
        ([[0, -1, 2]], None, None, "vertex -1 but the mesh has 4 vertices"),
        ([[0, 1, 2]], np.zeros((3, 3), np.uint8), None, r"vertex colours must be \(4, 3\)"),
        ([[0, 1, 2]], None, np.zeros((4, 3), np.float32), r"UVs must be \(4, 2\)"),
    ],
)
def test_mesh_arrays_refuse_what_does_not_fit_the_vertices(faces, colors, uvs, match):
    with pytest.raises(ValueError, match=match):
        mesh_arrays(TETRA, faces, colors, uvs)


# ---------------------------------------------------------------------------------------------- outgoing
def test_outgoing_mesh_picks_each_corners_uv_through_its_loop():
    """A quad split in two triangles, four loops with distinct UVs: corner k of triangle j gets loop_uvs[loops]."""
    co = [0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0]
    tri_vertices = [0, 1, 2, 0, 2, 3]
    tri_loops = [0, 1, 2, 0, 2, 3]
    loop_uvs = [0.0, 0.0, 0.5, 0.0, 0.5, 0.5, 0.0, 0.5]
    mesh = outgoing_mesh(co, tri_vertices, tri_loops, loop_uvs)
    assert mesh.vertices.shape == (4, 3) and mesh.faces.shape == (2, 3) and mesh.uvs.shape == (2, 3, 2)
    np.testing.assert_array_equal(mesh.uvs[1], [[0, 0], [0.5, 0.5], [0, 0.5]])
    assert mesh.nbytes == mesh_bytes(4, 2, True) == 4 * 12 + 2 * 36
    assert sorted(mesh.arrays()) == ["faces", "uvs", "vertices"]
    plain = outgoing_mesh(co, tri_vertices)
    assert plain.uvs is None and plain.nbytes == 4 * 12 + 2 * 12 and "uvs" not in plain.arrays()


@pytest.mark.parametrize(
    ("co", "tris", "match"),
    [
        (np.zeros(12), [], "has no faces"),
        (np.zeros(12), [0, 1, 4], "vertex 4 but the mesh has 4"),
        ([0, 0, np.nan, 1, 0, 0, 0, 1, 0], [0, 1, 2], "not finite"),
    ],
)
def test_outgoing_mesh_says_what_is_wrong(co, tris, match):
    with pytest.raises(ValueError, match=match):
        outgoing_mesh(co, tris, name="the mesh 'Cube'")


def _grid_like(faces: int, vertices: int):
    """Arrays of the given sizes (the content does not matter to the limits)."""
    tris = np.arange(3 * faces, dtype=np.int32) % vertices
    return np.zeros(3 * vertices, np.float32), tris, tris.copy(), np.zeros(2 * 3 * faces, np.float32)


def test_a_mesh_at_the_budget_travels_in_one_request_and_one_triangle_more_does_not():
    """Closed form: 12 bytes a vertex, 36 a triangle with UVs; the largest mesh that outgoing_mesh accepts packs, with
    a JobSpec header, into a message the server's unpack takes (MAX_REQUEST_BYTES), and one more triangle is refused
    with the sizes and the decimate ratio that fits."""
    vertices = 1000
    faces = (mesh_budget() - 12 * vertices) // 36
    co, tris, loops, uvs = _grid_like(faces, vertices)
    mesh = outgoing_mesh(co, tris, loops, uvs)
    assert mesh.nbytes == 12 * vertices + 36 * faces <= mesh_budget() < mesh.nbytes + 36
    spec = {"prompt": "x" * 1000, "negative_prompt": "y" * 1000, "options": {"k": "v" * 1000}}
    frames = wire.pack("texture", {"spec": spec}, mesh.arrays(), job_id="j1", rid="1")
    raw = wire.unpack(frames, max_bytes=wire.MAX_REQUEST_BYTES)
    assert raw.arrays["uvs"].shape == (faces, 3, 2)
    co, tris, loops, uvs = _grid_like(faces + 1, vertices)
    with pytest.raises(MeshTooLarge) as err:
        outgoing_mesh(co, tris, loops, uvs, name="the mesh 'Scan'")
    text = str(err.value)
    assert f"{faces + 1:,} triangles" in text and "the mesh 'Scan'" in text and "with its UVs" in text
    assert "7.9 MiB" in text and f"about {faces:,} such triangles" in text and "ratio 0.99" in text


def test_the_suggested_ratio_counts_each_triangles_share_of_the_vertices():
    """500 vertices (6000 B) and 1000 triangles (12000 B) without UVs: 18 B a triangle with its share of vertices,
    so a 12000 B budget holds 666 such triangles, ratio 0.66; 666 triangles with their 333 vertices fit."""
    budget = 12_000 + mesh_data.HEADER_ALLOWANCE
    with pytest.raises(MeshTooLarge, match=r"1,000 triangles take 17\.6 KiB, .* 11\.7 KiB \(about 666 .* ratio 0\.66"):
        mesh_data.check_mesh_limits(500, 1000, False, max_request_bytes=budget)
    mesh_data.check_mesh_limits(333, 666, False, max_request_bytes=budget)


def test_vertex_and_face_count_limits_of_the_protocol(monkeypatch):
    messages = mesh_data.protocol.messages
    monkeypatch.setattr(messages, "MAX_MESH_VERTICES", 10)
    with pytest.raises(MeshTooLarge, match="11 vertices .* at most 10 vertices"):
        mesh_data.check_mesh_limits(11, 1, False)
    monkeypatch.setattr(messages, "MAX_MESH_FACES", 5)
    with pytest.raises(MeshTooLarge, match="6 triangles"):
        mesh_data.check_mesh_limits(3, 6, False)
