"""Write meshes as .glb (default), .obj (+ .mtl + .png), .ply (trimesh) or .usda/.usdc/.usdz (usd-core), atomically.

Frames. The backend's world frame is Z up (Blender's). glTF 2.0 is Y up by specification and Blender's OBJ importer
also assumes Y up (forward -Z), so for .glb and .obj every point is rotated by -90 degrees about X:

    (x, y, z)_world  ->  (x, z, -y)_file,

which those importers turn back into (x, y, z). It is a proper rotation (det +1), so the face winding (outward
normals) is kept. Blender's PLY importer is Z up, so .ply is written in the world frame; USD files declare
``upAxis = Z`` and ``metersPerUnit = 1`` and are written in the world frame too (see ``usd.py``).

Normals. A mesh with ``normals`` gets them written as smooth vertex normals (glTF NORMAL, rotated with the points;
OBJ vn; USD normals), so importers shade it smooth; without them importers shade it flat.

Appearance. A mesh with ``uvs`` and ``texture`` is written textured (glTF: a metallic 0, roughness 1 material whose
base colour is the texture; OBJ: map_Kd). Otherwise ``vertex_colors`` are written (glTF COLOR_0, OBJ/PLY per-vertex
colours). PLY has no textures: a textured mesh is written with its texture sampled at the vertices.

Atomic writes: every file is first written to a temporary name in the target folder and then renamed with
os.replace; for .obj (and .usda/.usdc) the main file is renamed last, so it always has its .mtl and .png.

File modes: results are created with mode 0o666 minus the process umask (0644 under the usual umask 022), like
any file a program writes, not with ``tempfile.mkstemp``'s private 0600.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .texture import sample_texture
from .types import Mesh
from .usd import USD_FORMATS

FORMATS = ("glb", "obj", "ply", *USD_FORMATS)

# (x, y, z) Z-up world -> (x, z, -y) Y-up file: rows are the file axes expressed in world coordinates.
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], np.float64)


def resolve_format(path: str | os.PathLike, format: str | None = None) -> str:
    """'glb' | 'obj' | 'ply' | 'usda' | 'usdc' | 'usdz' from ``format`` or else the file suffix (no suffix -> glb)."""
    if format is None:
        suffix = Path(path).suffix.lower().lstrip(".")
        format = suffix or "glb"
    fmt = format.lower().lstrip(".")
    if fmt == "gltf":
        raise ValueError("Only binary glTF is written: use a .glb path (or format='glb'), or .obj / .ply")
    if fmt not in FORMATS:
        raise ValueError(
            f"Unknown mesh format {format!r} for {str(path)!r}: use one of .glb (default), .obj, .ply, "
            ".usda, .usdc, .usdz"
        )
    return fmt


def _as_parts(mesh_or_parts: Mesh | Sequence[Mesh]) -> list[Mesh]:
    parts = [mesh_or_parts] if isinstance(mesh_or_parts, Mesh) else list(mesh_or_parts)
    if not parts:
        raise ValueError("export_mesh got no meshes: pass a Mesh or a non-empty list of Mesh parts")
    for i, p in enumerate(parts):
        if not isinstance(p, Mesh):
            raise TypeError(f"part {i} is a {type(p).__name__}, expected dreamstill.backend.mesh.Mesh")
        if p.num_faces == 0:
            raise ValueError(f"part {i} has no faces; nothing would be written (check extraction: EmptyFieldError)")
    return parts


def _material_name(stem: str, index: int, count: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", stem) or "mesh"
    return safe if count == 1 else f"{safe}_{index}"


def to_trimesh(mesh: Mesh, y_up: bool, name: str = "mesh", obj_material: bool = False):
    """A trimesh.Trimesh of ``mesh`` (rotated to Y up when ``y_up``), textured or vertex-coloured."""
    import trimesh
    from PIL import Image

    vertices = mesh.vertices.astype(np.float64)
    normals = None if mesh.normals is None else mesh.normals.astype(np.float64)
    if y_up:
        vertices = vertices @ Z_UP_TO_Y_UP.T
        normals = None if normals is None else normals @ Z_UP_TO_Y_UP.T
    visual = None
    if mesh.uvs is not None:
        image = Image.fromarray(mesh.texture, mode="RGB")
        if obj_material:
            material = trimesh.visual.material.SimpleMaterial(
                name=name,
                image=image,
                diffuse=[255, 255, 255, 255],
                ambient=[255, 255, 255, 255],
                specular=[0, 0, 0, 255],
            )
        else:
            material = trimesh.visual.material.PBRMaterial(
                name=name,
                baseColorTexture=image,
                metallicFactor=0.0,
                roughnessFactor=1.0,
                baseColorFactor=[255, 255, 255, 255],
            )
        visual = trimesh.visual.TextureVisuals(uv=mesh.uvs.astype(np.float64), material=material)
    elif mesh.vertex_colors is not None:
        rgba = np.concatenate([mesh.vertex_colors, np.full((mesh.num_vertices, 1), 255, np.uint8)], axis=1)
        visual = trimesh.visual.ColorVisuals(vertex_colors=rgba)
    # vertex normals given here stay in trimesh's cache, which is what makes its glTF writer store them (NORMAL)
    return trimesh.Trimesh(vertices=vertices, faces=mesh.faces, visual=visual, vertex_normals=normals, process=False)


def _concatenate_colored(parts: list[Mesh]) -> Mesh:
    """One vertex-coloured Mesh from parts (textures sampled at the vertices, missing colours white)."""
    verts, faces, colors, offset = [], [], [], 0
    any_color = any(p.vertex_colors is not None or p.uvs is not None for p in parts)
    for p in parts:
        verts.append(p.vertices)
        faces.append(p.faces + offset)
        offset += p.num_vertices
        if p.uvs is not None:
            colors.append(sample_texture(p.texture, p.uvs))
        elif p.vertex_colors is not None:
            colors.append(p.vertex_colors)
        else:
            colors.append(np.full((p.num_vertices, 3), 255, np.uint8))
    return Mesh(
        vertices=np.concatenate(verts),
        faces=np.concatenate(faces),
        vertex_colors=np.concatenate(colors) if any_color else None,
    )


def _open_temp(path: Path) -> tuple[int, str]:
    """A new file next to ``path`` under a hidden temporary name, mode 0o666 & ~umask (mkstemp would give 0600)."""
    while True:
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _write_atomic(path: Path, data: bytes) -> None:
    write_files_atomic([(path, data)])


def write_files_atomic(files: list[tuple[Path, bytes]]) -> None:
    """Write every (path, bytes) to a temporary name first, then rename them in order (the last one is the 'main'
    file, so a reader that finds it finds the others); on failure no temporary file is left behind."""
    tmps = []
    try:
        for path, data in files:
            fd, tmp = _open_temp(path)
            tmps.append(tmp)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for (path, _), tmp in zip(files, tmps):
            os.replace(tmp, path)
    finally:
        for tmp in tmps:
            if os.path.exists(tmp):
                os.unlink(tmp)


def encode_glb(parts: list[Mesh], stem: str = "mesh") -> bytes:
    """glTF binary of the parts (Y up), one node per part."""
    import trimesh

    scene = trimesh.Scene()
    for i, p in enumerate(parts):
        name = _material_name(stem, i, len(parts))
        scene.add_geometry(to_trimesh(p, y_up=True, name=name), geom_name=name, node_name=name)
    return scene.export(file_type="glb")


def encode_obj(parts: list[Mesh], stem: str) -> dict[str, bytes]:
    """{file name: bytes} for ``stem``.obj, ``stem``.mtl (if textured) and the texture PNGs (Y up)."""
    import trimesh

    meshes = [
        to_trimesh(p, y_up=True, name=_material_name(stem, i, len(parts)), obj_material=True)
        for i, p in enumerate(parts)
    ]
    target = (
        meshes[0]
        if len(meshes) == 1
        else trimesh.Scene({_material_name(stem, i, len(parts)): m for i, m in enumerate(meshes)})
    )
    text, extra = trimesh.exchange.obj.export_obj(
        target,
        include_normals=any(p.normals is not None for p in parts),
        include_color=True,
        include_texture=True,
        return_texture=True,
        mtl_name=f"{stem}.mtl",
    )
    files = {name: (data if isinstance(data, bytes) else data.encode()) for name, data in extra.items()}
    files[f"{stem}.obj"] = text.encode()
    return files


def encode_ply(parts: list[Mesh]) -> bytes:
    """Binary PLY (Z up, world frame) with per-vertex colours when the mesh has any appearance."""
    mesh = _concatenate_colored(parts)
    return to_trimesh(mesh, y_up=False).export(file_type="ply", encoding="binary")


def export_mesh(mesh_or_parts: Mesh | Sequence[Mesh], path: str | os.PathLike, format: str | None = None) -> list[str]:
    """Write a Mesh (or a list of parts) to ``path`` as glb/obj/ply/usd*; returns the paths written, main file first.

    The format comes from ``format`` or the suffix of ``path`` (no suffix = glb). The folder must exist. Nothing is
    left half-written: files appear whole or not at all.
    """
    fmt = resolve_format(path, format)
    parts = _as_parts(mesh_or_parts)
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"Folder {str(path.parent)!r} does not exist; create it or choose another path")
    stem = path.stem or "mesh"
    if fmt == "glb":
        _write_atomic(path, encode_glb(parts, stem))
        return [str(path)]
    if fmt == "ply":
        _write_atomic(path, encode_ply(parts))
        return [str(path)]
    if fmt in USD_FORMATS:
        from .usd import encode_usd

        files = encode_usd(parts, fmt, stem)
    else:
        files = encode_obj(parts, stem)
    main = files.pop(f"{stem}.{fmt}")
    ordered = [(path.parent / name, data) for name, data in sorted(files.items())] + [(path, main)]
    write_files_atomic(ordered)
    return [str(ordered[-1][0])] + [str(p) for p, _ in ordered[:-1]]


def load_mesh(path: str | os.PathLike) -> Mesh:
    """Read a file written by ``export_mesh`` back into one Mesh in the world frame (Z up); for tests and tools.

    Parts are concatenated; a textured file comes back with uvs and texture (the first part's texture).
    """
    import trimesh

    fmt = resolve_format(path)
    if fmt in USD_FORMATS:
        from .usd import read_usd

        return _concatenate_first_texture(read_usd(path))
    loaded = trimesh.load(str(path), process=False, force=None)
    geom = loaded.to_geometry() if isinstance(loaded, trimesh.Scene) else loaded
    vertices = np.asarray(geom.vertices, np.float64)
    if fmt in ("glb", "obj"):
        vertices = vertices @ Z_UP_TO_Y_UP  # inverse rotation (orthogonal: R^-1 = R^T)
    faces = np.asarray(geom.faces)
    visual = geom.visual
    uvs = texture = colors = None
    if getattr(visual, "kind", None) == "texture" and getattr(visual, "uv", None) is not None:
        material = visual.material
        image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
        if image is not None:
            uvs = np.asarray(visual.uv, np.float32)
            texture = np.asarray(image.convert("RGB"), np.uint8)
    elif getattr(visual, "kind", None) == "vertex":
        colors = np.asarray(visual.vertex_colors, np.uint8)[:, :3]
    return Mesh(vertices=vertices, faces=faces, vertex_colors=colors, uvs=uvs, texture=texture)


def _concatenate_first_texture(parts: list[Mesh]) -> Mesh:
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0] + [p.num_vertices for p in parts[:-1]])
    textured = all(p.uvs is not None for p in parts)
    colored = all(p.vertex_colors is not None for p in parts)
    return Mesh(
        vertices=np.concatenate([p.vertices for p in parts]),
        faces=np.concatenate([p.faces + o for p, o in zip(parts, offsets)]),
        vertex_colors=np.concatenate([p.vertex_colors for p in parts]) if colored and not textured else None,
        uvs=np.concatenate([p.uvs for p in parts]) if textured else None,
        texture=parts[0].texture if textured else None,
    )


def glb_bytes_of(mesh_or_parts: Mesh | Sequence[Mesh]) -> bytes:
    """The .glb encoding without touching the disk (for sending over the wire)."""
    return encode_glb(_as_parts(mesh_or_parts))


__all__ = [
    "FORMATS",
    "Z_UP_TO_Y_UP",
    "encode_glb",
    "encode_obj",
    "encode_ply",
    "export_mesh",
    "glb_bytes_of",
    "load_mesh",
    "resolve_format",
    "to_trimesh",
    "write_files_atomic",
]
