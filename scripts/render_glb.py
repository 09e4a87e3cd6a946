"""Render a .glb the way a person looks at it in Blender: lit, from a few angles, as one PNG contact sheet.

Imports the file with Blender's own glTF importer (bpy 5.0.1, no GUI), frames it with a camera orbiting at
``--elevation`` degrees, adds a sun, and renders each view with Workbench (fast: studio light, the material's texture
or vertex colours, optional cavity/outline shading) or EEVEE (the sun and Principled BSDF; slow on llvmpipe: ~30 s at
128 px). With ``--shading normal`` Workbench shows the geometry alone (matcap-free, single colour), which is what
betrays pits and lumps. ``--smooth`` marks every face smooth (Blender shows imported glTF without NORMAL flat).

    python scripts/render_glb.py asset.glb -o asset_views.png [--views 4] [--size 384] [--engine workbench|eevee]
        [--shading texture|geometry] [--smooth] [--elevation 25]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("glb", help="the .glb to look at")
    p.add_argument("-o", "--output", help="PNG contact sheet (default: next to the glb, _render.png)")
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--size", type=int, default=384, help="pixels per view (square)")
    p.add_argument("--engine", choices=("workbench", "eevee"), default="workbench")
    p.add_argument("--shading", choices=("texture", "geometry"), default="texture")
    p.add_argument("--smooth", action="store_true", help="shade every face smooth")
    p.add_argument("--elevation", type=float, default=25.0, help="camera elevation in degrees")
    return p.parse_args(argv)


def load_scene(path: Path, smooth: bool):
    """Empty scene with the glb's meshes; returns (mesh objects, bounding-sphere centre, radius)."""
    import bpy
    from mathutils import Vector

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=str(path))
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    if not meshes:
        raise SystemExit(f"{path} holds no mesh")
    corners = [o.matrix_world @ Vector(c) for o in meshes for c in o.bound_box]
    lo = Vector(tuple(min(c[i] for c in corners) for i in range(3)))
    hi = Vector(tuple(max(c[i] for c in corners) for i in range(3)))
    if smooth:
        for o in meshes:
            for poly in o.data.polygons:
                poly.use_smooth = True
    return meshes, (lo + hi) / 2, max((hi - lo).length / 2, 1e-3)


def colour_source(meshes) -> str:
    """Workbench colour type showing the asset's appearance: its image texture, else its vertex colours."""
    for o in meshes:
        for slot in o.material_slots:
            tree = slot.material.node_tree if slot.material and slot.material.use_nodes else None
            if tree and any(n.type == "TEX_IMAGE" and n.image for n in tree.nodes):
                return "TEXTURE"
    return "VERTEX" if any(len(o.data.color_attributes) for o in meshes) else "MATERIAL"


def setup_render(args, meshes):
    import bpy

    scene = bpy.context.scene
    scene.render.resolution_x = scene.render.resolution_y = args.size
    scene.render.film_transparent = False
    world = bpy.data.worlds.new("world")
    world.color = (0.8, 0.8, 0.8)
    scene.world = world
    if args.engine == "eevee":
        scene.render.engine = "BLENDER_EEVEE_NEXT" if "BLENDER_EEVEE_NEXT" in _engines() else "BLENDER_EEVEE"
    else:
        scene.render.engine = "BLENDER_WORKBENCH"
        shading = scene.display.shading
        shading.light = "STUDIO"
        shading.color_type = colour_source(meshes) if args.shading == "texture" else "SINGLE"
        shading.single_color = (0.8, 0.8, 0.8)
        shading.show_cavity = args.shading == "geometry"
    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", type="SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (math.radians(40), math.radians(10), math.radians(30))
    scene.collection.objects.link(sun)
    cam = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    cam.data.lens_unit = "FOV"
    cam.data.angle = math.radians(40)
    scene.collection.objects.link(cam)
    scene.camera = cam
    return cam


def _engines() -> set[str]:
    import bpy

    return {item.identifier for item in bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items}


def render_views(args, cam, centre, radius, folder: Path) -> list[Path]:
    import bpy
    from mathutils import Vector

    distance = radius / math.sin(math.radians(20)) * 1.1  # the bounding sphere fills the 40-degree view
    paths = []
    for i in range(args.views):
        az, el = math.radians(360.0 * i / args.views), math.radians(args.elevation)
        offset = Vector((math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el))) * distance
        cam.location = centre + offset
        cam.rotation_euler = (-offset).to_track_quat("-Z", "Y").to_euler()
        path = folder / f"view_{i}.png"
        bpy.context.scene.render.filepath = str(path)
        bpy.ops.render.render(write_still=True)
        paths.append(path)
    return paths


def contact_sheet(paths: list[Path], output: Path) -> None:
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in paths]
    w, h = images[0].size
    sheet = Image.new("RGB", (w * len(images), h), (255, 255, 255))
    for i, im in enumerate(images):
        sheet.paste(im, (i * w, 0))
    sheet.save(output)


def main(argv=None) -> int:
    import tempfile

    args = parse(argv)
    glb = Path(args.glb)
    if not glb.exists():
        raise SystemExit(f"{glb} does not exist")
    output = Path(args.output) if args.output else glb.with_name(glb.stem + "_render.png")
    meshes, centre, radius = load_scene(glb, args.smooth)
    cam = setup_render(args, meshes)
    with tempfile.TemporaryDirectory(prefix="render_glb_") as tmp:
        contact_sheet(render_views(args, cam, centre, radius, Path(tmp)), output)
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
