"""USD export (.usda/.usdc/.usdz): each required item checked with pxr, round trips, relinking, Blender's importer."""

import importlib.util
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from dreamstill.backend.mesh import Mesh
from dreamstill.backend.mesh import usd as usd_module
from dreamstill.backend.mesh.export import export_mesh, load_mesh

pxr = pytest.importorskip("pxr")
from pxr import Sdf, Usd, UsdGeom, UsdShade  # noqa: E402

V = np.array([[0, 0, 1], [0.9, 0, -0.3], [-0.45, 0.8, -0.3], [-0.45, -0.8, -0.3]], np.float32)
F = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]], np.int32)
UV = np.array([[0.5, 0.9], [0.1, 0.1], [0.9, 0.1], [0.5, 0.5]], np.float32)
COLORS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8)


def textured(offset=0.0, flip=False):
    tex = np.zeros((8, 8, 3), np.uint8)
    tex[:4] = [200, 10, 10]
    tex[4:] = [10, 10, 200]
    return Mesh(V + offset, F, uvs=UV, texture=255 - tex if flip else tex)


def only_mesh(stage):
    meshes = [p for p in stage.Traverse() if p.IsA(UsdGeom.Mesh)]
    assert len(meshes) == 1
    return UsdGeom.Mesh(meshes[0])


def shader_by_id(material, shader_id):
    for prim in Usd.PrimRange(material.GetPrim()):
        shader = UsdShade.Shader(prim)
        if shader and shader.GetIdAttr().Get() == shader_id:
            return shader
    raise AssertionError(f"no {shader_id} in {material.GetPath()}")


@pytest.mark.parametrize("fmt", ["usda", "usdc", "usdz"])
def test_every_required_item_is_in_the_file(tmp_path, fmt):
    files = export_mesh(textured(), tmp_path / f"asset.{fmt}")
    assert files[0] == str(tmp_path / f"asset.{fmt}")
    stage = Usd.Stage.Open(files[0])
    assert UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.z
    assert UsdGeom.GetStageMetersPerUnit(stage) == 1.0
    assert stage.GetDefaultPrim().GetName() == "asset"
    mesh = only_mesh(stage)
    np.testing.assert_array_equal(np.asarray(mesh.GetPointsAttr().Get()), V)  # world frame, Z up: no rotation
    np.testing.assert_array_equal(np.asarray(mesh.GetFaceVertexCountsAttr().Get()), [3, 3, 3, 3])
    np.testing.assert_array_equal(np.asarray(mesh.GetFaceVertexIndicesAttr().Get()).reshape(-1, 3), F)
    assert mesh.GetSubdivisionSchemeAttr().Get() == UsdGeom.Tokens.none
    normals = np.asarray(mesh.GetNormalsAttr().Get())
    assert mesh.GetNormalsInterpolation() == UsdGeom.Tokens.vertex
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
    assert np.all(np.sum(normals * (V - V.mean(0)), axis=1) > 0)  # outward on this convex solid
    np.testing.assert_allclose(normals[0], [0, 0, 1], atol=1e-3)  # the apex points up
    st = UsdGeom.PrimvarsAPI(mesh).GetPrimvar("st")
    assert st.GetTypeName() == Sdf.ValueTypeNames.TexCoord2fArray
    assert st.GetInterpolation() in (UsdGeom.Tokens.vertex, UsdGeom.Tokens.faceVarying)
    np.testing.assert_array_equal(np.asarray(st.Get()), UV)
    material = UsdShade.MaterialBindingAPI(mesh.GetPrim()).ComputeBoundMaterial()[0]
    surface = shader_by_id(material, "UsdPreviewSurface")
    assert material.GetSurfaceOutput().GetConnectedSources()[0][0].source.GetPrim() == surface.GetPrim()
    texture = shader_by_id(material, "UsdUVTexture")
    diffuse_source = surface.GetInput("diffuseColor").GetConnectedSources()[0][0]
    assert diffuse_source.source.GetPrim() == texture.GetPrim() and diffuse_source.sourceName == "rgb"
    assert texture.GetInput("sourceColorSpace").Get() == "sRGB"
    image = usd_module._read_texture(texture.GetInput("file").Get())
    np.testing.assert_array_equal(image, textured().texture)


def test_usdz_packs_the_texture_and_usda_usdc_write_it_next_to_the_file(tmp_path):
    assert export_mesh(textured(), tmp_path / "a.usdz") == [str(tmp_path / "a.usdz")]
    with zipfile.ZipFile(tmp_path / "a.usdz") as archive:
        assert archive.namelist() == ["a.usdc", "a_texture.png"]  # the root layer first, as usdz requires
    names = sorted(os.path.basename(p) for p in export_mesh(textured(), tmp_path / "b.usdc"))
    assert names == ["b.usdc", "b_texture.png"]
    assert (tmp_path / "b.usdc").read_bytes()[:8] == b"PXR-USDC"
    assert (tmp_path / "b.usdc").stat().st_size > 0 and not [p for p in tmp_path.iterdir() if p.name[0] == "."]


def test_round_trips_textured_vertex_coloured_and_parts(tmp_path):
    back = load_mesh(export_mesh(textured(), tmp_path / "t.usdz")[0])
    np.testing.assert_array_equal(back.vertices, V)
    np.testing.assert_array_equal(back.faces, F)
    np.testing.assert_array_equal(back.uvs, UV)
    np.testing.assert_array_equal(back.texture, textured().texture)
    colored = load_mesh(export_mesh(Mesh(V, F, vertex_colors=COLORS), tmp_path / "c.usda")[0])
    np.testing.assert_array_equal(colored.vertex_colors, COLORS)  # sRGB -> linear displayColor -> sRGB
    stage = Usd.Stage.Open(str(tmp_path / "c.usda"))
    color = UsdGeom.Mesh(stage.GetPrimAtPath("/c/mesh")).GetDisplayColorPrimvar()
    np.testing.assert_allclose(np.asarray(color.Get())[3], [(9 / 255) / 12.92] * 3, rtol=1e-6)  # linear segment
    files = export_mesh([textured(), textured(offset=3.0, flip=True)], tmp_path / "two.usda")
    assert sorted(os.path.basename(p) for p in files) == ["two.usda", "two_texture_0.png", "two_texture_1.png"]
    parts = usd_module.read_usd(files[0])
    np.testing.assert_array_equal(parts[1].vertices, V + 3.0)
    np.testing.assert_array_equal(parts[1].texture, 255 - textured().texture)


def test_srgb_linear_conversion_is_inverse_on_every_byte():
    every = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(usd_module.linear_to_srgb(usd_module.srgb_to_linear(every)), every)
    assert usd_module.srgb_to_linear(np.array([255]))[0] == pytest.approx(1.0)


def test_relink_textures_follows_a_rename(tmp_path):
    export_mesh(textured(), tmp_path / "asset.usdc")
    os.rename(tmp_path / "asset.usdc", tmp_path / "cube.usdc")
    os.rename(tmp_path / "asset_texture.png", tmp_path / "cube_texture.png")
    assert load_mesh(tmp_path / "cube.usdc").texture is None  # the reference is broken
    assert usd_module.relink_textures(tmp_path / "cube.usdc") == ["cube_texture.png"]
    np.testing.assert_array_equal(load_mesh(tmp_path / "cube.usdc").texture, textured().texture)
    assert usd_module.relink_textures(tmp_path / "cube.usdc") == []  # nothing left to fix


def test_prim_names_are_valid_identifiers():
    assert usd_module.prim_name("001_a red cube!") == "_001_a_red_cube"
    assert usd_module.prim_name("***") == "asset"
    assert Sdf.Path.IsValidIdentifier(usd_module.prim_name("a 3-legged stool"))


def test_missing_usd_core_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pxr", None)
    assert not usd_module.usd_available()
    with pytest.raises(ImportError, match=r"dreamstill\[usd\]"):
        export_mesh(textured(), tmp_path / "a.usdc")
    assert list(tmp_path.iterdir()) == []


BLENDER_IMPORT = """
import json, sys
import bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
report = {}
for path in sys.argv[1:]:
    before = set(bpy.data.objects)
    assert bpy.ops.wm.usd_import(filepath=path) == {"FINISHED"}
    (obj,) = [o for o in bpy.data.objects if o not in before and o.type == "MESH"]
    nodes = obj.data.materials[0].node_tree.nodes
    images = [n.image for n in nodes if n.type == "TEX_IMAGE" and n.image is not None]
    report[path] = {
        "vertices": [list(obj.matrix_world @ v.co) for v in obj.data.vertices],
        "faces": len(obj.data.polygons),
        "uv_layers": list(obj.data.uv_layers.keys()),
        "image_size": list(images[0].size) if images else None,
        "pixel": list(images[0].pixels[:4]) if images else None,
    }
print("REPORT" + json.dumps(report))
"""


@pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="bpy (Blender as a module) is not installed")
def test_blender_imports_the_mesh_its_material_and_texture(tmp_path):
    paths = [export_mesh(textured(), tmp_path / f"asset.{fmt}")[0] for fmt in ("usdc", "usdz")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", BLENDER_IMPORT, *paths], capture_output=True, text=True, timeout=600, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.split("REPORT", 1)[1])
    for path in paths:
        item = report[path]
        np.testing.assert_allclose(item["vertices"], V, atol=1e-6)  # Z up, metres: no rotation, no scale
        assert item["faces"] == 4 and item["uv_layers"] == ["st"]
        assert item["image_size"] == [8, 8]
        # Blender's pixel rows start at the bottom: row 7 of the PNG (blue), in linear float
        np.testing.assert_allclose(item["pixel"][:3], [10 / 255, 10 / 255, 200 / 255], atol=2e-3)


def test_a_meshs_own_normals_are_the_usd_normals():
    v = np.array([[0, 0, 1], [0.9, 0, -0.3], [-0.45, 0.8, -0.3], [-0.45, -0.8, -0.3]], np.float32)
    f = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]], np.int32)
    own = np.tile(np.array([[0.0, 0.0, 1.0]], np.float32), (4, 1))
    np.testing.assert_array_equal(usd_module.vertex_normals(Mesh(v, f, normals=own)), own)
    computed = usd_module.vertex_normals(Mesh(v, f))
    assert computed[0] @ np.array([0, 0, 1.0]) > 0.5 and not np.array_equal(computed, own)
