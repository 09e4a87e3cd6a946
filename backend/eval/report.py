"""The benchmark's outputs: the table printed by ``dreamstill eval``, the JSON figures, and the PNG grid of renders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x != x else f"{x:.{digits}f}"


def format_table(result: dict) -> str:
    """One line per method: R@1 among the prompt set with its hard negatives (all / single objects / compositions),
    R@1 among the reference prompts alone (ScaleDreamer's protocol: the benchmark's 16), similarity, geometry IoU,
    Chamfer distance (world units), mean normal angle (degrees), the share of assets with the true Euler number, mean
    faces, diversity, seconds per step and per asset."""
    head = (
        f"{'method':<12} {'R@1':>6} {'R@1 ref':>7} {'R@1 1obj':>8} {'R@1 2obj':>8} {'sim':>6} {'geom IoU':>8} "
        f"{'CD':>6} {'normal':>6} {'topo':>5} {'faces':>7} {'divers.':>7} {'s/step':>7} {'s/asset':>8} {'assets':>6}"
    )
    lines = [head, "-" * len(head)]
    for m, o in result["by_method"].items():
        lines.append(
            f"{m:<12} {_fmt(o['r_at_1']):>6} {_fmt(o['r_at_1_prompts']):>7} {_fmt(o['r_at_1_single']):>8} "
            f"{_fmt(o['r_at_1_composition']):>8} {_fmt(o['similarity']):>6} {_fmt(o['geometry']):>8} "
            f"{_fmt(o['chamfer']):>6} {_fmt(o['normal_angle_deg'], 1):>6} {_fmt(o['topology_ok'], 2):>5} "
            f"{_fmt(o['faces'], 0):>7} {_fmt(o['diversity']):>7} {_fmt(o['seconds_per_step']):>7} "
            f"{_fmt(o['seconds_per_asset'], 1):>8} {o['assets']:>6}"
        )
    return "\n".join(lines)


def save_json(result: dict, path: str | Path) -> None:
    data = {k: v for k, v in result.items() if not k.startswith("_")}

    def clean(x):
        if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    Path(path).write_text(json.dumps(clean(data), indent=2))


def save_grid(result: dict, path: str | Path, cell: int = 64, views_per_row: int = 8) -> None:
    """PNG grid: one row per (method, prompt) (seed 0), the first ``views_per_row`` views at 20 degrees elevation and
    the top-down ones, each row under a caption strip."""
    from PIL import Image, ImageDraw

    grid = result["_grid"]
    if not grid:
        raise ValueError("nothing to draw: the benchmark produced no assets")
    cfg = result["config"]
    n_az, elevs = cfg["n_azimuth"], cfg["elevations"]
    ring = lambda e: [elevs.index(e) * n_az + k for k in range(n_az)]  # noqa: E731
    pick = (ring(20.0) if 20.0 in elevs else list(range(n_az)))[:views_per_row]
    top = max(elevs)
    if top != 20.0:
        pick += ring(top)[: max(1, views_per_row // 4)]
    label_h = 12
    width = cell * len(pick)
    sheet = Image.new("RGB", (width, len(grid) * (cell + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, renders) in enumerate(grid):
        y = r * (cell + label_h)
        draw.text((2, y), label[: width // 6], fill=(0, 0, 0))
        for c, v in enumerate(pick):
            img = (renders[v].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
            sheet.paste(Image.fromarray(img).resize((cell, cell), Image.NEAREST), (c * cell, y + label_h))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
