"""Applying a texture job's updates to the artist's own object: its geometry is never touched; the result is an image
(or vertex colours when the job bakes no texture) in a NEW material on the object, read through the object's own UV
map, or through a new "Dreamstill UV" map written from the backend's unwrap when the object had none.

The job was sent the object's evaluated mesh as triangles (``scene_mesh.read_mesh``: Blender's loop triangles, in
order) and, when it had one, the active UV map's UV of every triangle corner; ``dreamstill_uv_map`` on the object
names that map ("" when it had none). An update carries the same triangles in the same order, split along UV seams
(``MeshUpdate.faces`` into ``vertices``, a UV per vertex), so corner k of triangle j has the UV
``uvs[faces[j, k]]``, and that corner is the loop ``loop_triangles[j].loops[k]`` of the object's mesh. Images are
rewritten in place (``live.set_image``); main thread only.
"""

from __future__ import annotations

import bpy
import numpy as np

from .live import principled_nodes, set_image

UV_MAP = "Dreamstill UV"
COLOR_ATTRIBUTE = "Dreamstill"
UV_PROPERTY = "dreamstill_uv_map"  # the UV map the job bakes into ("" = the backend unwrapped; make UV_MAP)
IMAGE_PROPERTY = "dreamstill_paint_image"
MATERIAL_PROPERTY = "dreamstill_paint_material"


def loop_triangles(mesh: bpy.types.Mesh, expected: int) -> np.ndarray:
    """(M, 3) loop indices of the mesh's loop triangles; ValueError when there are not ``expected`` of them."""
    mesh.calc_loop_triangles()
    count = len(mesh.loop_triangles)
    if count != expected:
        raise ValueError(
            f"the object's mesh has {count} triangles where the job was sent {expected}: its faces changed, or "
            "modifiers change them (apply the modifiers, or give it a UV map before texturing)"
        )
    loops = np.empty(3 * count, np.int32)
    mesh.loop_triangles.foreach_get("loops", loops)
    return loops.reshape(count, 3)


def write_corner_uvs(obj: bpy.types.Object, corner_uvs: np.ndarray) -> str:
    """Write (M, 3, 2) per-corner UVs into the object's "Dreamstill UV" map (made once, made active); its name."""
    mesh = obj.data
    loops = loop_triangles(mesh, len(corner_uvs))
    layer = mesh.uv_layers.get(UV_MAP) or mesh.uv_layers.new(name=UV_MAP)
    per_loop = np.zeros((len(mesh.loops), 2), np.float32)
    layer.data.foreach_get("uv", per_loop.ravel())
    per_loop[loops.ravel()] = np.asarray(corner_uvs, np.float32).reshape(-1, 2)
    layer.data.foreach_set("uv", per_loop.ravel())
    mesh.uv_layers.active = layer
    return layer.name


def write_vertex_colors(obj: bpy.types.Object, colors: np.ndarray) -> None:
    """(N, 3) uint8 colours, one per vertex of the object's mesh, as the "Dreamstill" colour attribute."""
    mesh = obj.data
    if len(colors) != len(mesh.vertices):
        raise ValueError(
            f"the job sent {len(colors)} vertex colours for a mesh of {len(mesh.vertices)} vertices; apply the "
            "object's modifiers, or bake a texture (texture size above 0)"
        )
    rgba = np.ones((len(colors), 4), np.float32)
    rgba[:, :3] = np.asarray(colors, np.float32) / 255.0
    attr = mesh.color_attributes.get(COLOR_ATTRIBUTE) or mesh.color_attributes.new(
        COLOR_ATTRIBUTE, "BYTE_COLOR", "POINT"
    )
    attr.data.foreach_set("color_srgb", rgba.ravel())


def paint_material(obj: bpy.types.Object, image: bpy.types.Image | None, uv_map: str) -> bpy.types.Material:
    """The object's Dreamstill material (made once, added as a new slot and given to every face): Principled BSDF
    whose Base Color is ``image`` read through the UV map ``uv_map``, or the "Dreamstill" colour attribute."""
    mat = bpy.data.materials.get(obj.get(MATERIAL_PROPERTY, ""))
    if mat is None:
        mat = bpy.data.materials.new(f"{obj.name} Dreamstill")
        obj[MATERIAL_PROPERTY] = mat.name
    nodes, links, bsdf = principled_nodes(mat)
    if image is not None:
        source = _image_nodes(nodes, links, image, uv_map, bsdf.location)
    else:
        source = nodes.get("Dreamstill Colors") or nodes.new("ShaderNodeAttribute")
        source.name, source.attribute_name = "Dreamstill Colors", COLOR_ATTRIBUTE
    base = bsdf.inputs["Base Color"]
    if not base.links or base.links[0].from_socket != source.outputs["Color"]:
        links.new(source.outputs["Color"], base)
    _assign(obj, mat)
    return mat


def _image_nodes(nodes, links, image, uv_map: str, at):
    tex = nodes.get("Dreamstill Texture") or nodes.new("ShaderNodeTexImage")
    tex.name = tex.label = "Dreamstill Texture"
    tex.location = (at.x - 320, at.y)
    tex.image = image
    uv = nodes.get("Dreamstill UV") or nodes.new("ShaderNodeUVMap")
    uv.name, uv.uv_map = "Dreamstill UV", uv_map
    uv.location = (at.x - 520, at.y)
    if not tex.inputs["Vector"].links:
        links.new(uv.outputs["UV"], tex.inputs["Vector"])
    return tex


def _assign(obj: bpy.types.Object, mat: bpy.types.Material) -> None:
    """Add ``mat`` as a slot of the object's mesh (once) and give it to every face; other slots stay as they were."""
    materials = obj.data.materials
    index = next((i for i, m in enumerate(materials) if m == mat), None)
    if index is None:
        materials.append(mat)
        index = len(materials) - 1
    polygons = obj.data.polygons
    polygons.foreach_set("material_index", np.full(len(polygons), index, np.int32))
    obj.data.update()


def apply_texture(obj: bpy.types.Object, update) -> None:
    """Apply a texture job's ``MeshUpdate`` to the artist's object (module docstring); ValueError when it does not
    fit the object any more."""
    if update.texture is None or update.uvs is None:
        if update.vertex_colors is None:
            raise ValueError("the update carries neither a texture nor vertex colours")
        write_vertex_colors(obj, update.vertex_colors)
        paint_material(obj, None, "")
        return
    uv_map = obj.get(UV_PROPERTY, "")
    corner_uvs = np.asarray(update.uvs)[np.asarray(update.faces)]
    if not uv_map or obj.data.uv_layers.get(uv_map) is None:  # baked into the backend's unwrap: write it
        uv_map = obj[UV_PROPERTY] = write_corner_uvs(obj, corner_uvs)
    image = set_image(bpy.data.images.get(obj.get(IMAGE_PROPERTY, "")), f"{obj.name} Dreamstill", update.texture)
    obj[IMAGE_PROPERTY] = image.name
    paint_material(obj, image, uv_map)
    if update.final:
        image.pack()  # saved inside the .blend with the object
