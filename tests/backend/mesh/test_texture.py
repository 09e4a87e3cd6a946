"""UV rasterisation, seam padding, xatlas baking and the UV / image-row conventions through a .glb round trip."""

import io
import json
import struct

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from dreamstill.backend.mesh import Mesh, extract_mesh
from dreamstill.backend.mesh import texture as tex
from dreamstill.backend.mesh.export import export_mesh
from dreamstill.backend.mesh.texture import (
    TextureBakeError,
    UnwrapConfig,
    bake_corner_uvs,
    bake_mesh,
    bake_texture,
    dilate,
    rasterize_uv,
    sample_texture,
    split_corner_uvs,
)

RED, BLUE = np.array([255, 0, 0]), np.array([0, 0, 255])


def red_if_x_positive(x):
    return torch.where((x[:, 0] > 0)[:, None], torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0]))


def sphere_density(x):
    return 100.0 * torch.clamp(1.0 - x.norm(dim=-1), min=0.0)  # {density = 50} is the sphere of radius 0.5


@pytest.fixture(scope="module")
def sphere():
    return extract_mesh(sphere_density, bound=1.0, resolution=24, threshold=50.0)


@pytest.fixture(scope="module")
def baked(sphere):
    return bake_texture(sphere.vertices, sphere.faces, red_if_x_positive, size=128, padding=2)


def test_rasterize_closed_form_half_square():
    # triangle (0,0) (1,0) (0,1) in UV; 3D positions equal to (u, v, 0) so interpolation must give the texel centre
    uvs = np.array([[0, 0], [1, 0], [0, 1]], np.float32)
    faces = np.array([[0, 1, 2]])
    size = 4
    texel, face, bary = rasterize_uv(uvs, faces, size)
    rows, cols = np.divmod(texel, size)
    # texel centre u = (c + 1/2)/4, v = 1 - (r + 1/2)/4; inside iff u + v <= 1 iff c <= r: 10 of 16 texels
    assert len(texel) == 10 and (cols <= rows).all() and (face == 0).all()
    points = bary @ uvs.astype(np.float64)
    np.testing.assert_allclose(points[:, 0], (cols + 0.5) / size)
    np.testing.assert_allclose(points[:, 1], 1 - (rows + 0.5) / size)
    np.testing.assert_allclose(bary.sum(1), 1.0)


def test_dilate_grows_one_ring_per_iteration_with_neighbour_means():
    img = np.zeros((7, 7, 3))
    filled = np.zeros((7, 7), bool)
    img[3, 3] = [1.0, 0.5, 0.25]
    filled[3, 3] = True
    one, f1 = dilate(img, filled, 1)
    assert f1.sum() == 9 and f1[2:5, 2:5].all()
    np.testing.assert_allclose(one[2, 2], [1.0, 0.5, 0.25])
    two, f2 = dilate(img, filled, 2)
    assert f2.sum() == 25
    # two filled colours meet: the texel between them takes the mean
    img2 = np.zeros((1, 3, 3))
    img2[0, 0], img2[0, 2] = [1, 0, 0], [0, 0, 1]
    out, _ = dilate(img2, np.array([[True, False, True]]), 1)
    np.testing.assert_allclose(out[0, 1], [0.5, 0, 0.5])


def test_bake_gives_each_surface_point_its_colour(sphere, baked):
    uvs, vertices, faces, texture = baked
    assert texture.shape == (128, 128, 3) and texture.dtype == np.uint8
    assert uvs.shape == (len(vertices), 2) and faces.shape == sphere.faces.shape and faces.dtype == np.int32
    assert uvs.min() >= 0 and uvs.max() <= 1
    assert len(vertices) >= sphere.num_vertices  # split along seams
    # same surface: every split vertex is one of the input vertices
    assert np.isin(vertices.view("V12"), sphere.vertices.view("V12")).all()
    centroid = vertices[faces].mean(1)
    colour = sample_texture(texture, uvs[faces].mean(1))
    far = np.abs(centroid[:, 0]) > 0.05
    expected = np.where((centroid[:, 0] > 0)[:, None], RED, BLUE)
    assert (colour[far] == expected[far]).all(1).mean() > 0.99
    assert not (texture == 0).all(-1).any()  # unreached texels get the mean colour, not black


def test_in_process_unwrap_matches_the_child_process(sphere):
    a = tex.unwrap_uv(sphere.vertices, sphere.faces, 64, UnwrapConfig(isolate=True))
    b = tex.unwrap_uv(sphere.vertices, sphere.faces, 64, UnwrapConfig(isolate=False))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def read_glb(data: bytes):
    """Minimal glTF-binary reader: (json, bin chunk)."""
    magic, version, _ = struct.unpack("<4sII", data[:12])
    assert magic == b"glTF" and version == 2
    jlen, jtype = struct.unpack("<I4s", data[12:20])
    doc = json.loads(data[20 : 20 + jlen])
    blen, btype = struct.unpack("<I4s", data[20 + jlen : 28 + jlen])
    assert jtype == b"JSON" and btype == b"BIN\x00"
    return doc, data[28 + jlen : 28 + jlen + blen]


def accessor(doc, binary, index):
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[acc["type"]]
    dtype = {5126: np.float32, 5125: np.uint32, 5123: np.uint16, 5121: np.uint8}[acc["componentType"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    return np.frombuffer(binary, dtype, acc["count"] * width, start).reshape(acc["count"], width)


def test_glb_round_trip_puts_the_colour_at_the_right_place(tmp_path, sphere, baked):
    uvs, vertices, faces, texture = baked
    path = tmp_path / "baked.glb"
    export_mesh(Mesh(vertices, faces, uvs=uvs, texture=texture), path)

    # 1. through trimesh, as a user would: load -> to_geometry -> uv + texture lookup
    geom = trimesh.load(path).to_geometry()
    image = np.asarray(geom.visual.material.baseColorTexture.convert("RGB"))
    np.testing.assert_array_equal(image, texture)
    world = np.asarray(geom.vertices) @ np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]])  # back to Z up
    centroid = world[geom.faces].mean(1)
    colour = sample_texture(image, np.asarray(geom.visual.uv)[geom.faces].mean(1))
    far = np.abs(centroid[:, 0]) > 0.05
    expected = np.where((centroid[:, 0] > 0)[:, None], RED, BLUE)
    assert (colour[far] == expected[far]).all(1).mean() > 0.99

    # 2. the raw file, as glTF defines it: TEXCOORD_0 origin top-left (v down), image row 0 at the top
    doc, binary = read_glb(path.read_bytes())
    prim = doc["meshes"][0]["primitives"][0]
    uv_gltf = accessor(doc, binary, prim["attributes"]["TEXCOORD_0"]).astype(np.float64)
    position = accessor(doc, binary, prim["attributes"]["POSITION"]).astype(np.float64)
    index = accessor(doc, binary, prim["indices"]).reshape(-1, 3)
    view = doc["bufferViews"][doc["images"][0]["bufferView"]]
    png = binary[view.get("byteOffset", 0) : view.get("byteOffset", 0) + view["byteLength"]]
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    h, w = img.shape[:2]
    c = uv_gltf[index].mean(1)
    looked_up = img[np.clip((c[:, 1] * h).astype(int), 0, h - 1), np.clip((c[:, 0] * w).astype(int), 0, w - 1)]
    x = position[index].mean(1)[:, 0]  # x is the same axis in both frames
    far = np.abs(x) > 0.05
    expected = np.where((x > 0)[:, None], RED, BLUE)
    assert (looked_up[far] == expected[far]).all(1).mean() > 0.99
    mat = doc["materials"][0]["pbrMetallicRoughness"]
    assert mat.get("metallicFactor", 1.0) == 0.0  # glTF's default metal would look black in Blender


def test_bake_mesh_carries_vertex_colours_through_the_split(sphere):
    coloured = sphere.copy(vertex_colors=np.tile(np.array([[1, 2, 3]], np.uint8), (sphere.num_vertices, 1)))
    out = bake_mesh(coloured, red_if_x_positive, size=64, padding=1)
    assert out.uvs.shape == (out.num_vertices, 2) and out.texture.shape == (64, 64, 3)
    assert (out.vertex_colors == [1, 2, 3]).all()


def test_missing_xatlas_says_how_to_fix(monkeypatch, sphere):
    monkeypatch.setattr(tex, "xatlas_available", lambda: False)
    with pytest.raises(ImportError, match=r"pip install xatlas.*texture_size=0"):
        bake_texture(sphere.vertices, sphere.faces, red_if_x_positive, size=64)


def test_crash_in_the_unwrap_child_becomes_a_clear_error(monkeypatch, sphere):
    monkeypatch.setattr(tex, "_CHILD", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(TextureBakeError, match=r"SIGSEGV.*texture_size=0"):
        bake_texture(sphere.vertices, sphere.faces, red_if_x_positive, size=64, unwrap=UnwrapConfig(isolate=True))


def test_bad_sizes():
    v = np.zeros((3, 3), np.float32)
    f = np.array([[0, 1, 2]])
    with pytest.raises(ValueError, match="texture_size=0"):
        bake_texture(v, f, red_if_x_positive, size=0)
    with pytest.raises(ValueError, match="padding"):
        bake_texture(v, f, red_if_x_positive, size=16, padding=-1)


def test_mesh_form_returns_a_textured_mesh(sphere):
    out = bake_texture(sphere, red_if_x_positive, size=32, padding=1)
    assert isinstance(out, Mesh) and out.texture.shape == (32, 32, 3) and out.num_faces == sphere.num_faces
    with pytest.raises(TypeError, match="albedo_fn"):
        bake_texture(sphere.vertices, sphere.faces)


# ---------------------------------------------------------------------------------------------- given UVs
# A unit square in the z = 0 plane, two triangles, laid out on the left half of the texture (u in 0..1/2): each
# point (x, y, 0) sits at uv (x / 2, y). Its four vertices share their UVs, so nothing is split.
SQUARE = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
SQUARE_FACES = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
SQUARE_UVS = SQUARE[SQUARE_FACES][..., :2] * np.array([0.5, 1.0], np.float32)


def x_ramp(x):
    """albedo (x, 0.25, 0.75): red follows the 3D x coordinate."""
    return torch.stack([x[:, 0], torch.full_like(x[:, 0], 0.25), torch.full_like(x[:, 0], 0.75)], dim=1)


def test_bake_onto_given_uvs_closed_form():
    """Texel (row r, column c) of a 16 x 16 texture has its centre at u = (c + 1/2) / 16; on the left half it maps to
    the 3D point x = 2 u, so its red is round(255 * 2u); the right half, outside the layout, takes the mean colour;
    the triangles, their UVs and the vertex count come back unchanged."""
    size = 16
    baked = bake_corner_uvs(SQUARE, SQUARE_FACES, SQUARE_UVS, x_ramp, size=size, padding=0)
    cols = np.arange(size // 2)
    expected_red = np.round(255 * 2 * (cols + 0.5) / size)
    np.testing.assert_array_equal(baked.texture[:, : size // 2, 0], np.tile(expected_red, (size, 1)))
    np.testing.assert_array_equal(baked.texture[:, :, 1:], np.broadcast_to([64, 191], (size, size, 2)))
    assert (baked.texture[:, size // 2 :, 0] == round(expected_red.mean())).all()
    assert len(baked.vertices) == 4 and len(baked.faces) == 2
    np.testing.assert_array_equal(baked.vertices[baked.faces], SQUARE[SQUARE_FACES])
    np.testing.assert_array_equal(baked.uvs[baked.faces], SQUARE_UVS)


def test_a_constant_colour_fills_every_texel_of_the_layout_and_tiles_wrap():
    """A constant albedo gives that colour on every texel (layout, padding and the background alike); a layout moved
    by whole tiles (u + 2, v - 1) bakes to the same texture, and the UVs that come back are the ones given."""

    def orange(x):
        return torch.tensor([1.0, 0.5, 0.0]).expand(len(x), 3)

    baked = bake_corner_uvs(SQUARE, SQUARE_FACES, SQUARE_UVS, orange, size=8)
    assert (baked.texture == [255, 128, 0]).all()
    shifted = SQUARE_UVS + np.array([2.0, -1.0], np.float32)
    moved = bake_corner_uvs(SQUARE, SQUARE_FACES, shifted, x_ramp, size=16, padding=0)
    np.testing.assert_array_equal(
        moved.texture, bake_corner_uvs(SQUARE, SQUARE_FACES, SQUARE_UVS, x_ramp, 16, 0).texture
    )
    np.testing.assert_array_equal(moved.uvs[moved.faces], shifted)


def test_split_corner_uvs_splits_only_seams_and_keeps_unused_vertices():
    """Vertex 0 has two UVs (a seam), vertex 4 no face: 5 input vertices become 6, in input order, the triangles
    are the same, and each corner keeps its UV."""
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uvs = np.array([[[0, 0], [1, 0], [1, 1]], [[0.5, 0], [1, 1], [0, 1]]], np.float32)
    vmapping, new_faces, new_uvs = split_corner_uvs(faces, uvs, 5)
    np.testing.assert_array_equal(vmapping, [0, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(vmapping[new_faces], faces)
    np.testing.assert_array_equal(new_uvs[new_faces], uvs)
    np.testing.assert_array_equal(new_uvs[5], [0, 0])
    negative_zero = uvs.copy()
    negative_zero[1, 0] = [-0.0, 0.0]  # the same UV as corner (0, 0): no extra split
    assert len(split_corner_uvs(faces, negative_zero, 5)[0]) == 5


def test_bake_onto_given_uvs_refuses_uvs_that_do_not_fit():
    with pytest.raises(ValueError, match=r"corner UVs must be \(2, 3, 2\)"):
        bake_corner_uvs(SQUARE, SQUARE_FACES, SQUARE_UVS[:1], x_ramp, size=8)
