"""Reading an artist's mesh object for the backend (texture the selected object, start from it).

The evaluated mesh (modifiers applied) is read with ``foreach_get``: vertex positions in the object's own frame,
its loop triangles (Blender's triangulation of every polygon) and, when it has a UV map, the active map's UV of
each loop. ``mesh_data.outgoing_mesh`` turns them into the wire arrays and checks them against the protocol's
limits, raising MeshTooLarge with a text for the panel.
"""

from __future__ import annotations

import bpy
import numpy as np

from .mesh_data import OutgoingMesh, outgoing_mesh


def read_mesh(obj: bpy.types.Object, depsgraph=None, max_request_bytes: int | None = None) -> OutgoingMesh:
    """The wire arrays of ``obj``'s evaluated mesh. ValueError (MeshTooLarge among them) says what to change."""
    if obj is None or obj.type != "MESH":
        kind = "nothing" if obj is None else f"{obj.name!r}, a {obj.type.lower()}"
        raise ValueError(f"select a mesh object first (the active object is {kind})")
    depsgraph = depsgraph or bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        mesh.calc_loop_triangles()
        co = np.empty(3 * len(mesh.vertices), dtype=np.float32)
        mesh.vertices.foreach_get("co", co)
        tri_vertices = np.empty(3 * len(mesh.loop_triangles), dtype=np.int32)
        mesh.loop_triangles.foreach_get("vertices", tri_vertices)
        tri_loops = loop_uvs = None
        layer = mesh.uv_layers.active
        if layer is not None:
            tri_loops = np.empty(3 * len(mesh.loop_triangles), dtype=np.int32)
            mesh.loop_triangles.foreach_get("loops", tri_loops)
            loop_uvs = np.empty(2 * len(mesh.loops), dtype=np.float32)
            layer.data.foreach_get("uv", loop_uvs)
    finally:
        evaluated.to_mesh_clear()
    return outgoing_mesh(
        co, tri_vertices, tri_loops, loop_uvs, name=f"the mesh {obj.name!r}", max_request_bytes=max_request_bytes
    )


def check_paintable(obj: bpy.types.Object, sent: OutgoingMesh) -> None:
    """ValueError when a texture job could not write its UVs back: the object has no UV map and its modifiers change
    its triangles (the unwrap of the evaluated mesh would not fit the object's own faces)."""
    if sent.uvs is not None:
        return  # baked into its own UV map, which modifiers carry along
    obj.data.calc_loop_triangles()
    if len(obj.data.loop_triangles) != len(sent.faces):
        raise ValueError(
            f"{obj.name!r} has no UV map and modifiers that change its faces ({len(obj.data.loop_triangles):,} "
            f"triangles, {len(sent.faces):,} after the modifiers); give it a UV map (UV > Smart UV Project) or "
            "apply the modifiers, then texture it"
        )
