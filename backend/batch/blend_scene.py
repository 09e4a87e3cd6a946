"""Make a .blend of placed assets inside Blender's Python module (run by ``scene.write_blend_scene``).

    python -m dreamstill.backend.batch.blend_scene job.json

job.json: {"output": ".../scene.blend", "collection": "scene",
           "assets": [{"name": ..., "prompt": ..., "path": ".../001_a_red_cube.glb", "translate": [x, y, z]}, ...]}

Each asset is imported with Blender's own importer for its format (glTF, OBJ, PLY, USD) into the collection, under
an Empty named ``name`` at ``translate`` that carries the prompt as the custom property ``dreamstill_prompt``.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path


def import_file(bpy, path: str) -> None:
    """Blender's importer for the file's suffix (Z up after import, like the backend's world frame)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".glb":
        result = bpy.ops.import_scene.gltf(filepath=path)
    elif suffix == ".obj":
        result = bpy.ops.wm.obj_import(filepath=path)
    elif suffix == ".ply":
        result = bpy.ops.wm.ply_import(filepath=path)
    elif suffix in (".usda", ".usdc", ".usdz"):
        result = bpy.ops.wm.usd_import(filepath=path)
    else:
        raise ValueError(f"no Blender importer for {path}")
    if result != {"FINISHED"}:
        raise RuntimeError(f"Blender could not import {path}: {result}")


def add_asset(bpy, collection, asset: dict) -> None:
    before = set(bpy.data.objects)
    import_file(bpy, asset["path"])
    new = [obj for obj in bpy.data.objects if obj not in before]
    holder = bpy.data.objects.new(asset["name"], None)
    holder.location = asset["translate"]
    holder["dreamstill_prompt"] = asset["prompt"]
    collection.objects.link(holder)
    for obj in new:
        for owner in list(obj.users_collection):
            owner.objects.unlink(obj)
        collection.objects.link(obj)
        if obj.parent is None:
            obj.parent = holder


def main(argv: list[str]) -> int:
    import bpy

    job = json.loads(Path(argv[0]).read_text())
    bpy.ops.wm.read_factory_settings(use_empty=True)
    collection = bpy.data.collections.new(job["collection"])
    bpy.context.scene.collection.children.link(collection)
    for asset in job["assets"]:
        add_asset(bpy, collection, asset)
    output = Path(job["output"])
    tmp = output.with_name(f".{output.stem}.{secrets.token_hex(4)}.blend")
    try:
        bpy.ops.wm.save_as_mainfile(filepath=str(tmp), check_existing=False, compress=True)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
