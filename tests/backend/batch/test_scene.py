"""Scenes of a batch: a .usda layer referencing every asset on the grid, and a .blend through bpy."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dreamstill.backend.batch.layout import grid_translations
from dreamstill.backend.batch.scene import scene_format, write_scene
from dreamstill.backend.mesh import Mesh, export_mesh

pytest.importorskip("pxr")
from pxr import Usd, UsdGeom  # noqa: E402

TETRA_V = np.array([[0, 0, 1], [0.9, 0, -0.3], [-0.45, 0.8, -0.3], [-0.45, -0.8, -0.3]], np.float32)
TETRA_F = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]], np.int32)
PROMPTS = ["a red cube", "a blue sphere", "a red cube", "a big green torus"]


@pytest.fixture
def assets(tmp_path):
    """Four assets in three formats: glb, usdz (textured), glb, ply; the last one twice as large."""
    folder = tmp_path / "out"
    folder.mkdir()
    tex = np.full((4, 4, 3), 90, np.uint8)
    uvs = np.zeros((4, 2), np.float32)
    meshes = [Mesh(TETRA_V, TETRA_F), Mesh(TETRA_V, TETRA_F, uvs=uvs, texture=tex), Mesh(TETRA_V + 5, TETRA_F)]
    meshes.append(Mesh(TETRA_V * 2, TETRA_F, vertex_colors=np.full((4, 3), 200, np.uint8)))
    paths = []
    for i, (mesh, fmt) in enumerate(zip(meshes, ["glb", "usdz", "glb", "ply"]), 1):
        paths.append(folder / f"{i:03d}_asset.{fmt}")
        export_mesh(mesh, paths[-1])
    return list(zip(PROMPTS, paths)), meshes


def expected_boxes(meshes, gap):
    bounds = [(m.vertices.min(0), m.vertices.max(0)) for m in meshes]
    moves = grid_translations(bounds, gap)
    return [(lo + t, hi + t) for (lo, hi), t in zip(bounds, moves)]


def test_usda_scene_references_every_asset_on_the_grid_named_from_prompts(assets, tmp_path):
    pairs, meshes = assets
    scene = write_scene(pairs, tmp_path / "out" / "set.usda", gap=0.5)
    assert "@./001_asset" not in scene.read_text()  # the glb is converted, never referenced directly
    stage = Usd.Stage.Open(str(scene))
    assert UsdGeom.GetStageUpAxis(stage) == "Z" and UsdGeom.GetStageMetersPerUnit(stage) == 1.0
    root = stage.GetDefaultPrim()
    assert root.GetName() == "set"
    children = list(root.GetChildren())
    assert [c.GetName() for c in children] == ["a_red_cube", "a_blue_sphere", "a_red_cube_2", "a_big_green_torus"]
    assert [c.GetDisplayName() for c in children] == PROMPTS
    assert [c.GetCustomDataByKey("dreamstill:prompt") for c in children] == PROMPTS
    references = [c.GetPrimStack()[0].referenceList.prependedItems[0].assetPath for c in children]
    assert references == ["./usd/001_asset.usdc", "./002_asset.usdz", "./usd/003_asset.usdc", "./usd/004_asset.usdc"]
    cache = UsdGeom.BBoxCache(Usd.TimeCode.Default(), [UsdGeom.Tokens.default_])
    for child, (low, high) in zip(children, expected_boxes(meshes, 0.5)):
        box = cache.ComputeWorldBound(child).ComputeAlignedRange()
        np.testing.assert_allclose(np.array(box.GetMin()), low, atol=1e-5)
        np.testing.assert_allclose(np.array(box.GetMax()), high, atol=1e-5)
        assert box.GetMin()[2] == pytest.approx(0.0, abs=1e-6)  # standing on the ground
    texture_mesh = [p for p in Usd.PrimRange(children[1]) if p.IsA(UsdGeom.Mesh)]
    assert len(texture_mesh) == 1  # the usdz's mesh composed into the scene


def test_a_scene_follows_a_remade_asset(assets, tmp_path):
    pairs, _ = assets
    scene = tmp_path / "out" / "set.usda"
    write_scene(pairs, scene)
    converted = tmp_path / "out" / "usd" / "001_asset.usdc"
    before = converted.stat().st_mtime_ns
    os.utime(pairs[0][1], ns=(before + 10**9, before + 10**9))  # the glb is newer than its conversion
    write_scene(pairs, scene)
    assert converted.stat().st_mtime_ns > before
    assert not [p for p in scene.parent.iterdir() if p.name.startswith(".")]


def test_scene_format_is_checked_before_anything_runs(tmp_path):
    assert scene_format(tmp_path / "a.USDA") == "usda"
    with pytest.raises(ValueError, match=r"\.usda.*\.blend"):
        scene_format(tmp_path / "a.usdc")


BLEND_REPORT = """
import json, sys
import bpy
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
col = bpy.data.collections[sys.argv[2]]
out = {}
for holder in [o for o in col.objects if "dreamstill_prompt" in o]:
    meshes = [c for c in holder.children_recursive if c.type == "MESH"]
    corners = [c.matrix_world @ v.co for c in meshes for v in c.data.vertices]
    out[holder.name] = {
        "prompt": holder["dreamstill_prompt"],
        "low": [min(p[k] for p in corners) for k in range(3)],
        "high": [max(p[k] for p in corners) for k in range(3)],
        "in_collection": all(col in c.users_collection for c in meshes),
    }
print("REPORT" + json.dumps(out))
"""


@pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="bpy (Blender as a module) is not installed")
def test_blend_scene_imports_every_asset_under_an_empty_named_after_its_prompt(assets, tmp_path):
    pairs, meshes = assets
    scene = write_scene(pairs, tmp_path / "set.blend", gap=0.5)
    proc = subprocess.run(
        [sys.executable, "-c", BLEND_REPORT, str(scene), "set"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.split("REPORT", 1)[1])
    assert sorted(report) == sorted(["a red cube", "a blue sphere", "a red cube_2", "a big green torus"])
    names = ["a red cube", "a blue sphere", "a red cube_2", "a big green torus"]
    for name, prompt, (low, high) in zip(names, PROMPTS, expected_boxes(meshes, 0.5)):
        assert report[name]["prompt"] == prompt and report[name]["in_collection"]
        np.testing.assert_allclose(report[name]["low"], low, atol=1e-5)  # same grid as the .usda, Z up
        np.testing.assert_allclose(report[name]["high"], high, atol=1e-5)
