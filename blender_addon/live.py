"""Applying streamed results to the scene, in place: one object, one mesh, one material and images per job.

Each update rewrites the same datablocks: the mesh with ``clear_geometry`` then ``vertices.add`` / ``loops.add`` /
``polygons.add`` and ``foreach_set`` (about 0.1 s for 65k vertices, where ``from_pydata`` takes 35x longer), images
with ``pixels.foreach_set`` (scaled in place when the size changes). No datablock is created per update, so a long
run does not pile up orphan meshes or images. Main thread only (bpy is not thread-safe). The arrays come from
``mesh_data`` and the placement from ``placement`` (both without bpy).

Frames: mesh vertices arrive in the backend's world frame, right-handed and Z up like Blender's. Each update is
stood on its base and scaled to the object's asset size (``placement``), relative to the object's origin (the
3D cursor, grid cell or curve point the job was given). Images arrive with row 0 at the top; Blender stores row 0
at the bottom, so rows are flipped. UVs arrive per vertex with the origin at the bottom left, as Blender's; they are
spread to the face corners.
"""

from __future__ import annotations

import bpy
import numpy as np

from .mesh_data import mesh_arrays
from .placement import Placement, placement_for

COLLECTION = "Dreamstill"
COLOR_ATTRIBUTE = "Col"
UV_MAP = "UVMap"
SIZE_PROPERTY = "dreamstill_size"  # the asset's largest extent in metres (0 = the backend's own size)
ANCHOR_PROPERTY = "dreamstill_anchor"  # the placement of the last update (see placement.Placement)
FACTOR_PROPERTY = "dreamstill_factor"


def root_collection(scene) -> bpy.types.Collection:
    """The scene's "Dreamstill" collection (made once, linked under the scene collection)."""
    coll = bpy.data.collections.get(COLLECTION)
    if coll is None:
        coll = bpy.data.collections.new(COLLECTION)
    if scene.collection.children.get(coll.name) is None:
        scene.collection.children.link(coll)
    return coll


def child_collection(scene, name: str) -> bpy.types.Collection:
    """A collection ``name`` inside the Dreamstill collection (a batch); made once."""
    parent = root_collection(scene)
    coll = bpy.data.collections.get(name)
    if coll is None:
        coll = bpy.data.collections.new(name)
    if parent.children.get(coll.name) is None:
        parent.children.link(coll)
    return coll


def new_asset_object(name: str, location, collection) -> bpy.types.Object:
    """An object with an empty mesh at ``location`` in ``collection``; streamed meshes fill it later."""
    mesh = bpy.data.meshes.new(name)
    obj = bpy.data.objects.new(name, mesh)
    obj.location = tuple(location)
    collection.objects.link(obj)
    return obj


def image_pixels(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3|4) uint8 with row 0 at the top -> Blender's flat float32 RGBA, row 0 at the bottom."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError(f"an image must be (H, W, 3) or (H, W, 4), got {rgb.shape}")
    h, w = rgb.shape[:2]
    rgba = np.empty((h, w, 4), dtype=np.float32)
    rgba[..., :3] = rgb[..., :3]
    rgba[..., 3] = rgb[..., 3] if rgb.shape[2] == 4 else 255
    rgba *= 1.0 / 255.0
    return np.ascontiguousarray(rgba[::-1]).ravel()


def set_image(image: bpy.types.Image | None, name: str, rgb: np.ndarray) -> bpy.types.Image:
    """Write ``rgb`` into ``image`` (made once when None; scaled in place when the size changed)."""
    h, w = rgb.shape[:2]
    if image is None:
        image = bpy.data.images.new(name, width=w, height=h, alpha=True)
    elif tuple(image.size) != (w, h):
        image.scale(w, h)
    image.pixels.foreach_set(image_pixels(rgb))
    image.update()
    return image


def apply_mesh(obj: bpy.types.Object, vertices: np.ndarray, faces: np.ndarray, vertex_colors=None, uvs=None) -> None:
    """Replace the geometry of ``obj.data`` in place with the triangle mesh (vertices (N,3), faces (M,3))."""
    arrays = mesh_arrays(vertices, faces, vertex_colors, uvs)
    mesh = obj.data
    mesh.clear_geometry()  # also drops the colour and UV layers; they are rebuilt below
    mesh.vertices.add(arrays.vertex_count)
    mesh.vertices.foreach_set("co", arrays.co)
    mesh.loops.add(len(arrays.loop_vertex))
    mesh.loops.foreach_set("vertex_index", arrays.loop_vertex)
    mesh.polygons.add(arrays.face_count)
    mesh.polygons.foreach_set("loop_start", arrays.loop_start)
    if arrays.colors is not None:
        attr = mesh.color_attributes.new(COLOR_ATTRIBUTE, "BYTE_COLOR", "POINT")
        attr.data.foreach_set("color_srgb", arrays.colors)
        mesh.color_attributes.active_color = attr
        mesh.color_attributes.render_color_index = mesh.color_attributes.active_color_index
    if arrays.corner_uv is not None:
        layer = mesh.uv_layers.new(name=UV_MAP)
        layer.data.foreach_set("uv", arrays.corner_uv)
    mesh.update(calc_edges=True)


def principled_nodes(mat: bpy.types.Material):
    """(nodes, links, Principled BSDF) of ``mat``'s node tree, the BSDF wired to the output (made when missing)."""
    if mat.node_tree is None:  # Blender < 5.0 makes materials without nodes; 5.0 always has them
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes.get("Principled BSDF") or nodes.new("ShaderNodeBsdfPrincipled")
    output = nodes.get("Material Output") or nodes.new("ShaderNodeOutputMaterial")
    if not bsdf.outputs["BSDF"].links:
        links.new(bsdf.outputs["BSDF"], output.inputs["Surface"])
    return nodes, links, bsdf


def ensure_material(obj: bpy.types.Object, texture: bpy.types.Image | None) -> bpy.types.Material:
    """The object's material (made once): Principled BSDF whose Base Color comes from ``texture`` through the UV
    map when there is one, else from the vertex colours; relinked in place when that changes."""
    mat = obj.data.materials[0] if len(obj.data.materials) else None
    if mat is None:
        mat = bpy.data.materials.get(obj.name) or bpy.data.materials.new(obj.name)
        obj.data.materials.append(mat)
    nodes, links, bsdf = principled_nodes(mat)
    tex = nodes.get("Dreamstill Texture")
    if tex is None:
        tex = nodes.new("ShaderNodeTexImage")
        tex.name = tex.label = "Dreamstill Texture"
        tex.location = (bsdf.location.x - 320, bsdf.location.y)
    col = nodes.get("Dreamstill Colors")
    if col is None:
        col = nodes.new("ShaderNodeAttribute")
        col.name = col.label = "Dreamstill Colors"
        col.attribute_name = COLOR_ATTRIBUTE
        col.location = (bsdf.location.x - 320, bsdf.location.y - 300)
    if texture is not None:
        tex.image = texture
    source = tex.outputs["Color"] if texture is not None else col.outputs["Color"]
    base = bsdf.inputs["Base Color"]
    if not base.links or base.links[0].from_socket != source:
        for link in list(base.links):
            links.remove(link)
        links.new(source, base)
    return mat


def apply_update(obj: bpy.types.Object, update) -> None:
    """Apply a protocol ``MeshUpdate``: geometry stood on its base at the object's size, colours or UVs + texture,
    and the material."""
    uvs = update.uvs if update.texture is not None else None
    place = placement_for(update.vertices, float(obj.get(SIZE_PROPERTY, 0.0)))
    apply_mesh(obj, place.apply(update.vertices), update.faces, update.vertex_colors, uvs)
    obj[ANCHOR_PROPERTY], obj[FACTOR_PROPERTY] = list(place.anchor), place.factor
    texture = None
    if update.texture is not None and uvs is not None:
        texture = set_image(
            bpy.data.images.get(obj.get("dreamstill_texture", "")), f"{obj.name} texture", update.texture
        )
        obj["dreamstill_texture"] = texture.name
    ensure_material(obj, texture)
    if update.final and texture is not None:
        texture.pack()  # saved inside the .blend with the asset


def placement_of(obj: bpy.types.Object) -> Placement:
    """The placement of the object's last update (identity before the first)."""
    anchor = obj.get(ANCHOR_PROPERTY)
    return Placement(tuple(float(x) for x in anchor), float(obj.get(FACTOR_PROPERTY, 1.0))) if anchor else Placement()


def redraw() -> None:
    """Ask the 3D viewports and sidebars to redraw (nothing to do without windows, e.g. in background mode)."""
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "IMAGE_EDITOR"}:
                area.tag_redraw()
