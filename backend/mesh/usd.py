"""Write and read meshes as USD (.usda text, .usdc binary crate, .usdz package) through usd-core's ``pxr``.

    pip install "dreamstill[usd]"      # usd-core; imported lazily, only when a USD file is written or read

One file holds a stage whose default prim is an Xform named after the file, with one ``UsdGeom.Mesh`` per part:

- ``points`` (world frame), ``faceVertexCounts`` (all 3) and ``faceVertexIndices`` (counter-clockwise seen from
  outside, ``orientation = rightHanded``), ``normals`` (area-weighted vertex normals, ``vertex`` interpolation),
  ``extent``, and ``subdivisionScheme = none`` so that importers show the triangles as they are.
- Textured parts: an ``st`` texCoord2f primvar (``vertex`` interpolation; origin at the bottom-left of the image, the
  convention of ``Mesh.uvs``) and a ``UsdPreviewSurface`` material (metallic 0, roughness 1) whose ``diffuseColor``
  comes from a ``UsdUVTexture`` reading the texture PNG (sRGB) at ``st``; .usda/.usdc reference a PNG next to the
  file, ``<stem>_texture.png`` (``<stem>_texture_<i>.png`` for part i of several); a .usdz packs it inside.
- Vertex-coloured parts: a ``displayColor`` primvar (linear, converted from the sRGB bytes) read by the material
  through a ``UsdPrimvarReader_float3``.

Stage metadata: ``upAxis = Z`` and ``metersPerUnit = 1``, the backend's world frame (Blender's), so points are written
without a change of frame. Files appear whole or not at all (written under a temporary name, then renamed).
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .types import Mesh

USD_FORMATS = ("usda", "usdc", "usdz")
TEXTURE_SUFFIX = "_texture"
INSTALL_HINT = 'USD export needs usd-core: pip install "dreamstill[usd]" (or pip install usd-core)'


def usd_available() -> bool:
    """True when usd-core's ``pxr`` imports."""
    try:
        import pxr.Usd  # noqa: F401
    except ImportError:
        return False
    return True


def _pxr():
    """usd-core's modules (Sdf, Usd, UsdGeom, UsdShade, UsdUtils, Vt), or an ImportError that says what to install."""
    try:
        from pxr import Sdf, Usd, UsdGeom, UsdShade, UsdUtils, Vt
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return SimpleNamespace(Sdf=Sdf, Usd=Usd, UsdGeom=UsdGeom, UsdShade=UsdShade, UsdUtils=UsdUtils, Vt=Vt)


def prim_name(text: str, fallback: str = "asset") -> str:
    """A valid USD prim name from free text: runs of other characters become '_', a leading digit gets a '_'."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_") or fallback
    return f"_{name}" if name[0].isdigit() else name


def texture_file_name(stem: str, index: int, count: int) -> str:
    """``<stem>_texture.png``, or ``<stem>_texture_<index>.png`` when a file holds several textured parts."""
    return f"{stem}{TEXTURE_SUFFIX}.png" if count == 1 else f"{stem}{TEXTURE_SUFFIX}_{index}.png"


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB -> float linear in [0, 1] (IEC 61966-2-1)."""
    c = rgb.astype(np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """float linear in [0, 1] -> uint8 sRGB (the inverse of ``srgb_to_linear`` up to rounding)."""
    c = np.clip(np.asarray(linear, np.float64), 0.0, 1.0)
    s = np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)
    return np.round(s * 255.0).astype(np.uint8)


def vertex_normals(mesh: Mesh) -> np.ndarray:
    """(N, 3) unit vertex normals: the mesh's own when it has them (smooth across UV seams), else area-weighted
    ones (trimesh), outward for an outward-wound mesh."""
    if mesh.normals is not None:
        return mesh.normals
    import trimesh

    return np.asarray(trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).vertex_normals, np.float32)


def _define_mesh(stage, path: str, mesh: Mesh):
    px = _pxr()
    geom = px.UsdGeom.Mesh.Define(stage, path)
    geom.CreatePointsAttr(px.Vt.Vec3fArray.FromNumpy(mesh.vertices))
    geom.CreateFaceVertexCountsAttr(px.Vt.IntArray.FromNumpy(np.full(mesh.num_faces, 3, np.int32)))
    geom.CreateFaceVertexIndicesAttr(px.Vt.IntArray.FromNumpy(mesh.faces.reshape(-1)))
    geom.CreateNormalsAttr(px.Vt.Vec3fArray.FromNumpy(vertex_normals(mesh)))
    geom.SetNormalsInterpolation(px.UsdGeom.Tokens.vertex)
    geom.CreateOrientationAttr(px.UsdGeom.Tokens.rightHanded)
    geom.CreateSubdivisionSchemeAttr(px.UsdGeom.Tokens.none)
    geom.CreateDoubleSidedAttr(False)
    geom.CreateExtentAttr(px.Vt.Vec3fArray.FromNumpy(np.stack([mesh.vertices.min(0), mesh.vertices.max(0)])))
    primvars = px.UsdGeom.PrimvarsAPI(geom)
    if mesh.uvs is not None:
        st = primvars.CreatePrimvar("st", px.Sdf.ValueTypeNames.TexCoord2fArray, px.UsdGeom.Tokens.vertex)
        st.Set(px.Vt.Vec2fArray.FromNumpy(mesh.uvs))
    elif mesh.vertex_colors is not None:
        color = geom.CreateDisplayColorPrimvar(px.UsdGeom.Tokens.vertex)
        color.Set(px.Vt.Vec3fArray.FromNumpy(srgb_to_linear(mesh.vertex_colors).astype(np.float32)))
    return geom


def _define_material(stage, path: str, texture_name: str | None):
    """A UsdPreviewSurface material; its diffuseColor reads ``texture_name`` at ``st``, else displayColor."""
    px = _pxr()
    material = px.UsdShade.Material.Define(stage, path)
    surface = px.UsdShade.Shader.Define(stage, f"{path}/PreviewSurface")
    surface.CreateIdAttr("UsdPreviewSurface")
    surface.CreateInput("metallic", px.Sdf.ValueTypeNames.Float).Set(0.0)
    surface.CreateInput("roughness", px.Sdf.ValueTypeNames.Float).Set(1.0)
    material.CreateSurfaceOutput().ConnectToSource(surface.ConnectableAPI(), "surface")
    diffuse = surface.CreateInput("diffuseColor", px.Sdf.ValueTypeNames.Color3f)
    if texture_name is None:
        reader = px.UsdShade.Shader.Define(stage, f"{path}/DisplayColorReader")
        reader.CreateIdAttr("UsdPrimvarReader_float3")
        reader.CreateInput("varname", px.Sdf.ValueTypeNames.Token).Set("displayColor")
        diffuse.ConnectToSource(reader.ConnectableAPI(), "result")
        return material
    st_name = material.CreateInput("frame:stPrimvarName", px.Sdf.ValueTypeNames.Token)
    st_name.Set("st")
    st_reader = px.UsdShade.Shader.Define(stage, f"{path}/STReader")
    st_reader.CreateIdAttr("UsdPrimvarReader_float2")
    st_reader.CreateInput("varname", px.Sdf.ValueTypeNames.Token).ConnectToSource(st_name)
    texture = px.UsdShade.Shader.Define(stage, f"{path}/DiffuseTexture")
    texture.CreateIdAttr("UsdUVTexture")
    texture.CreateInput("file", px.Sdf.ValueTypeNames.Asset).Set(px.Sdf.AssetPath(f"./{texture_name}"))
    texture.CreateInput("st", px.Sdf.ValueTypeNames.Float2).ConnectToSource(st_reader.ConnectableAPI(), "result")
    texture.CreateInput("sourceColorSpace", px.Sdf.ValueTypeNames.Token).Set("sRGB")
    texture.CreateInput("wrapS", px.Sdf.ValueTypeNames.Token).Set("repeat")
    texture.CreateInput("wrapT", px.Sdf.ValueTypeNames.Token).Set("repeat")
    texture.CreateOutput("rgb", px.Sdf.ValueTypeNames.Float3)
    diffuse.ConnectToSource(texture.ConnectableAPI(), "rgb")
    return material


def build_stage(parts: Sequence[Mesh], stem: str):
    """An in-memory stage of ``parts`` (see the module docstring) and {texture file name: (H, W, 3) image}."""
    px = _pxr()
    stage = px.Usd.Stage.CreateInMemory()
    px.UsdGeom.SetStageUpAxis(stage, px.UsdGeom.Tokens.z)
    px.UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    root = f"/{prim_name(stem)}"
    stage.SetDefaultPrim(px.UsdGeom.Xform.Define(stage, root).GetPrim())
    px.UsdGeom.Scope.Define(stage, f"{root}/Looks")
    textured = [p for p in parts if p.uvs is not None]
    textures, k = {}, 0
    for i, part in enumerate(parts):
        name = "mesh" if len(parts) == 1 else f"mesh_{i}"
        geom = _define_mesh(stage, f"{root}/{name}", part)
        texture_name = None
        if part.uvs is not None:
            texture_name = texture_file_name(stem, k, len(textured))
            textures[texture_name] = part.texture
            k += 1
        elif part.vertex_colors is None:
            continue  # no appearance: the importer's default material
        material = _define_material(stage, f"{root}/Looks/{name}_material", texture_name)
        px.UsdShade.MaterialBindingAPI.Apply(geom.GetPrim()).Bind(material)
    return stage, textures


def _png_bytes(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def encode_usd(parts: Sequence[Mesh], fmt: str, stem: str) -> dict[str, bytes]:
    """{file name: bytes}: ``<stem>.<fmt>`` plus, for .usda/.usdc, the texture PNGs it references."""
    px = _pxr()
    stage, textures = build_stage(parts, stem)
    with tempfile.TemporaryDirectory(prefix="dreamstill_usd_") as tmp:
        folder = Path(tmp)
        pngs = {name: _png_bytes(image) for name, image in textures.items()}
        for name, data in pngs.items():
            (folder / name).write_bytes(data)
        layer_path = folder / f"{stem}.{'usdc' if fmt == 'usdz' else fmt}"
        if not stage.GetRootLayer().Export(str(layer_path)):
            raise OSError(f"usd-core could not write {layer_path.name}")
        if fmt != "usdz":
            return {**pngs, layer_path.name: layer_path.read_bytes()}
        package = folder / f"{stem}.usdz"
        if not px.UsdUtils.CreateNewUsdzPackage(str(layer_path), str(package)):
            raise OSError(f"usd-core could not package {package.name}")
        return {package.name: package.read_bytes()}


def relink_textures(path: str | os.PathLike) -> list[str]:
    """Point the textures of a renamed .usda/.usdc at ``<its stem>_texture*.png``; returns the new names.

    A file written as ``asset.usdc`` references ``./asset_texture.png``; when both are renamed to ``cube.usdc`` and
    ``cube_texture.png`` (as `dreamstill submit` and `batch` do with a server's results), this re-points the reference.
    References to files that exist are left alone.
    """
    px = _pxr()
    path = Path(path)
    stage = px.Usd.Stage.Open(str(path))
    changed = []
    for prim in stage.Traverse():
        shader = px.UsdShade.Shader(prim)
        if not shader or shader.GetIdAttr().Get() != "UsdUVTexture":
            continue
        attr = shader.GetInput("file")
        old = Path(attr.Get().path).name
        match = re.search(rf"{TEXTURE_SUFFIX}(_\d+)?\.png$", old)
        if match is None or (path.parent / old).exists():
            continue
        new = f"{path.stem}{match.group(0)}"
        if (path.parent / new).exists():
            attr.Set(px.Sdf.AssetPath(f"./{new}"))
            changed.append(new)
    if changed:
        stage.GetRootLayer().Save()
    return changed


def _read_texture(asset) -> np.ndarray | None:
    """The image an ``inputs:file`` asset value names (a plain file, or a member of a .usdz package)."""
    import io

    from PIL import Image

    resolved = asset.resolvedPath
    if not resolved:
        return None
    if resolved.endswith("]") and "[" in resolved:  # package.usdz[member.png]
        package, member = resolved[:-1].split("[", 1)
        with zipfile.ZipFile(package) as archive:
            data = archive.read(member)
    else:
        data = Path(resolved).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), np.uint8)


def _mesh_of_prim(prim) -> Mesh:
    px = _pxr()
    geom = px.UsdGeom.Mesh(prim)
    counts = np.asarray(geom.GetFaceVertexCountsAttr().Get(), np.int64)
    if counts.size and np.any(counts != 3):
        raise ValueError(f"{prim.GetPath()} has faces that are not triangles; only triangle meshes are read")
    vertices = np.asarray(geom.GetPointsAttr().Get(), np.float32)
    faces = np.asarray(geom.GetFaceVertexIndicesAttr().Get(), np.int32).reshape(-1, 3)
    primvars = px.UsdGeom.PrimvarsAPI(prim)
    uvs = texture = colors = None
    st = primvars.GetPrimvar("st")
    material = px.UsdShade.MaterialBindingAPI(prim).ComputeBoundMaterial()[0]
    if st and st.HasValue() and material:
        for shader_prim in px.Usd.PrimRange(material.GetPrim()):
            shader = px.UsdShade.Shader(shader_prim)
            if shader and shader.GetIdAttr().Get() == "UsdUVTexture":
                texture = _read_texture(shader.GetInput("file").Get())
        if texture is not None:
            uvs = np.asarray(st.Get(), np.float32)
    color = geom.GetDisplayColorPrimvar()
    if texture is None and color and color.HasValue():
        colors = linear_to_srgb(np.asarray(color.Get(), np.float32))
    return Mesh(vertices, faces, vertex_colors=colors, uvs=uvs, texture=texture)


def read_usd(path: str | os.PathLike) -> list[Mesh]:
    """Every UsdGeom.Mesh of the file as a Mesh in the world frame (Z up), with its texture or vertex colours.

    Points are taken as authored (no transforms applied): meant for files written by ``encode_usd``.
    """
    px = _pxr()
    stage = px.Usd.Stage.Open(str(path))
    if stage is None:
        raise ValueError(f"{path} is not a USD file usd-core can open")
    meshes = [_mesh_of_prim(prim) for prim in stage.Traverse() if prim.IsA(px.UsdGeom.Mesh)]
    if not meshes:
        raise ValueError(f"{path} holds no UsdGeom.Mesh")
    return meshes


__all__ = [
    "INSTALL_HINT",
    "USD_FORMATS",
    "build_stage",
    "encode_usd",
    "linear_to_srgb",
    "prim_name",
    "read_usd",
    "relink_textures",
    "srgb_to_linear",
    "texture_file_name",
    "usd_available",
    "vertex_normals",
]
