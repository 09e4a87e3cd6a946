"""Write one of Blender's primitive meshes (with its UVs) as a .glb, e.g. to try `dreamstill generate --input-mesh`.

python scripts/blender_primitive.py monkey -o monkey.glb      (monkey, cube, uv_sphere, ico_sphere, cylinder, cone,
                                                               torus; needs the bpy module: pip install bpy)
"""

from __future__ import annotations

import argparse
from pathlib import Path

PRIMITIVES = ("monkey", "cube", "uv_sphere", "ico_sphere", "cylinder", "cone", "torus")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("primitive", choices=PRIMITIVES)
    parser.add_argument("-o", "--output", type=Path, required=True, help="the .glb to write")
    parser.add_argument("--subdivide", type=int, default=0, help="subdivision-surface levels applied (0 = none)")
    args = parser.parse_args(argv)
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    getattr(bpy.ops.mesh, f"primitive_{args.primitive}_add")()
    obj = bpy.context.active_object
    if args.subdivide:
        obj.modifiers.new("subdivide", "SUBSURF").levels = args.subdivide
        bpy.ops.object.modifier_apply(modifier="subdivide")
    obj.data.materials.append(bpy.data.materials.new("plain"))  # trimesh reads a glTF's UVs only with a material
    bpy.ops.export_scene.gltf(filepath=str(args.output.resolve()), export_format="GLB", use_selection=True)
    print(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
