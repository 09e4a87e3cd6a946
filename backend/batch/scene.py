"""One scene holding every asset of a batch, placed on a grid (``layout.py``) and named after its prompt.

- ``.usda``: a USD layer (Z up, metres) whose default prim holds one Xform per asset, named from the prompt (the
  prompt itself is its displayName and ``customData["dreamstill:prompt"]``), translated onto the grid and
  *referencing* the asset's USD file by a relative path, so the scene stays small and follows re-made assets.
  Assets in another format are converted once to ``usd/<stem>.usdc`` next to them.
- ``.blend``: Blender (the ``bpy`` module) imports every asset into a collection named after the scene, one Empty
  per asset named after its prompt with the asset's objects as children; run in a child process, so Blender's
  state never mixes with the caller's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..mesh.usd import INSTALL_HINT as USD_INSTALL_HINT
from ..mesh.usd import USD_FORMATS, prim_name
from .layout import grid_translations, mesh_bounds
from .prompts import prompt_slug

SCENE_FORMATS = ("usda", "blend")


@dataclass(frozen=True)
class Placed:
    """One asset of a scene: its prompt, file and translation (metres, Z up)."""

    prompt: str
    path: Path
    translate: tuple[float, float, float]


def scene_format(path: Path) -> str:
    """'usda' or 'blend' from the suffix; ValueError naming the choices otherwise (checked before a batch runs)."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in SCENE_FORMATS:
        raise ValueError(f"--scene {path}: write the scene as .usda (USD layer) or .blend (Blender file)")
    if fmt == "usda" and importlib.util.find_spec("pxr") is None:
        raise ValueError(f"--scene {path}: {USD_INSTALL_HINT}")
    if fmt == "blend" and importlib.util.find_spec("bpy") is None:
        raise ValueError(f"--scene {path}: a .blend scene needs bpy (pip install bpy==5.0.1 on Python 3.11); or .usda")
    return fmt


def place(assets: list[tuple[str, Path]], gap: float = 0.25) -> list[Placed]:
    """(prompt, asset file) pairs on the grid, in order."""
    moves = grid_translations([mesh_bounds(path) for _, path in assets], gap)
    return [Placed(prompt, Path(path), tuple(float(x) for x in t)) for (prompt, path), t in zip(assets, moves)]


def unique_names(prompts: list[str], make) -> list[str]:
    """``make(prompt)`` for each prompt, with _2, _3 ... added to repeats."""
    seen: dict[str, int] = {}
    names = []
    for prompt in prompts:
        base = make(prompt)
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return names


def usd_asset(path: Path) -> Path:
    """``path`` itself when it is USD, else ``usd/<stem>.usdc`` next to it (converted when missing or older)."""
    if path.suffix.lower().lstrip(".") in USD_FORMATS:
        return path
    from ..mesh.export import export_mesh, load_mesh

    converted = path.parent / "usd" / f"{path.stem}.usdc"
    if not converted.exists() or converted.stat().st_mtime < path.stat().st_mtime:
        converted.parent.mkdir(exist_ok=True)
        export_mesh(load_mesh(path), converted)
    return converted


def _author_scene(stage, placed: list[Placed], root_name: str, folder: Path) -> None:
    from pxr import UsdGeom

    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    root = f"/{root_name}"
    stage.SetDefaultPrim(UsdGeom.Xform.Define(stage, root).GetPrim())
    names = unique_names([p.prompt for p in placed], lambda prompt: prim_name(prompt_slug(prompt)))
    for item, name in zip(placed, names):
        xform = UsdGeom.Xform.Define(stage, f"{root}/{name}")
        prim = xform.GetPrim()
        reference = os.path.relpath(usd_asset(item.path).resolve(), folder)
        prim.GetReferences().AddReference(f"./{Path(reference).as_posix()}")
        UsdGeom.XformCommonAPI(xform).SetTranslate(item.translate)
        prim.SetDisplayName(item.prompt)
        prim.SetCustomDataByKey("dreamstill:prompt", item.prompt)
        prim.SetMetadata("kind", "component")


def write_usd_scene(placed: list[Placed], path: Path) -> Path:
    """The .usda layer described in the module docstring, written whole (temporary name, then rename)."""
    from pxr import Usd

    path = Path(path).resolve()
    # made under a temporary name in the scene's folder, so the relative references resolve while it is built
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.usda")
    try:
        stage = Usd.Stage.CreateNew(str(tmp))
        _author_scene(stage, placed, prim_name(path.stem, "scene"), path.parent)
        stage.GetRootLayer().Save()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_blend_scene(placed: list[Placed], path: Path, timeout_s: float = 1800.0) -> Path:
    """The .blend described in the module docstring, made by ``blend_scene.py`` in a child Python."""
    path = Path(path).resolve()
    names = unique_names([p.prompt for p in placed], lambda prompt: prompt[:60])
    job = {
        "output": str(path),
        "collection": path.stem,
        "assets": [
            {"name": n, "prompt": p.prompt, "path": str(p.path.resolve()), "translate": list(p.translate)}
            for p, n in zip(placed, names)
        ],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(job, f)
    try:
        cmd = [sys.executable, "-m", "dreamstill.backend.batch.blend_scene", f.name]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    finally:
        os.unlink(f.name)
    if proc.returncode != 0 or not path.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"Blender could not write {path}: " + " | ".join(tail))
    return path


def write_scene(assets: list[tuple[str, Path]], path: Path, gap: float = 0.25) -> Path:
    """Place ``assets`` (prompt, file) on the grid and write the scene as .usda or .blend (from the suffix)."""
    placed = place(assets, gap)
    if scene_format(path) == "usda":
        return write_usd_scene(placed, path)
    return write_blend_scene(placed, path)


__all__ = [
    "SCENE_FORMATS",
    "Placed",
    "place",
    "scene_format",
    "unique_names",
    "usd_asset",
    "write_blend_scene",
    "write_scene",
    "write_usd_scene",
]
