"""Scoring one asset: R@1 and similarity of its views among the prompt set (the toy-world scorer, ScaleDreamer's
protocol), and its mesh against the ground truth: volumetric IoU (``metrics``) and, in the IoU's alignment, Chamfer
distance, normal angle, topology and size (``geometry``). Also the scores of standalone images (the prior's
samples)."""

from __future__ import annotations

import functools
import math
import time

import torch

from .assets import mesh_of
from .config import BenchmarkConfig
from .geometry import distance_scores, topology_scores
from .metrics import align_occupancy, evaluation_cameras, occupancy_from_mesh, occupancy_from_sdf
from .metrics import r_at_1 as r_at_1_of
from .metrics import similarity as similarity_of

GEOMETRY_KEYS = ("geometry", "chamfer", "normal_angle_deg", "topology_ok", "faces", "components")
_NO_DISTANCES = {"chamfer": math.nan, "normal_angle_deg": math.nan}


@functools.lru_cache(maxsize=64)
def ground_truth_occupancy(prompt: str, resolution: int = 64):
    from ..priors.builtin import world

    scene = world.parse_prompt(prompt)
    b = world.BOUND_RADIUS
    return occupancy_from_sdf(lambda p: world.scene_sdf(scene, p), -b, b, resolution)


def render_views(asset, cameras, cfg: BenchmarkConfig) -> torch.Tensor:
    """The asset's evaluation views (V, 3, H, W) in [0, 1]: the one place eval renders an asset."""
    out = asset.render(cameras, cfg.render_size, cfg.render_size, shading=cfg.shading)
    return out.rgb.permute(0, 3, 1, 2).float().cpu().clamp(0, 1)


def geometry_scores(mesh, prompt: str, cfg: BenchmarkConfig) -> dict:
    """IoU with the truth; aligned as the IoU aligns, Chamfer distance and normal angle; Euler number against the
    truth's, components and faces. A missing or empty mesh, or one that encloses nothing, scores IoU 0 and NaN
    distances (left out of the means); a missing or empty one also topology_ok 0."""
    if mesh is None or len(mesh.faces) == 0:
        return {**_NO_DISTANCES, "geometry": 0.0, "topology_ok": 0.0, "faces": 0, "components": 0, "euler": None}
    topology = topology_scores(mesh.vertices, mesh.faces, prompt)
    try:
        pred = occupancy_from_mesh(mesh.vertices, mesh.faces, cfg.geometry_resolution)
        alignment = align_occupancy(pred, ground_truth_occupancy(prompt))
    except ValueError:  # nothing inside the surface: no solid to compare
        return {**topology, **_NO_DISTANCES, "geometry": 0.0}
    distances = distance_scores(mesh.vertices, mesh.faces, prompt, alignment)
    return {**topology, **distances, "geometry": alignment.iou}


def _mesh_or_none(asset, cfg: BenchmarkConfig):
    """(mesh or None, seconds): an empty field (EmptyFieldError is a ValueError) has no mesh."""
    start = time.perf_counter()
    try:
        mesh = mesh_of(asset, cfg.mesh_resolution)
    except ValueError:
        return None, 0.0
    return mesh, time.perf_counter() - start


def score_asset(asset, prompt: str, scorer, cfg: BenchmarkConfig, cameras=None) -> dict:
    """R@1, similarity (over the views, against cfg.prompt_set), the geometry scores, and the renders, features and
    mesh."""
    cams = cameras if cameras is not None else evaluation_cameras(cfg.n_azimuth, cfg.elevations)
    images = render_views(asset, cams, cfg)
    prompt_set = list(cfg.prompt_set)
    if prompt not in prompt_set:
        raise ValueError(f"prompt {prompt!r} is not in the R@1 prompt set; add it to prompt_set")
    target = prompt_set.index(prompt)
    scores = scorer.score(images, prompt_set, cams)
    reference = [prompt_set.index(p) for p in cfg.reference_prompts if p in prompt_set]
    mesh, mesh_seconds = _mesh_or_none(asset, cfg)
    return {
        "r_at_1": r_at_1_of(scores, target),
        "r_at_1_prompts": r_at_1_of(scores[:, reference], reference.index(target))
        if target in reference
        else float("nan"),
        "similarity": similarity_of(scores, target),
        **geometry_scores(mesh, prompt, cfg),
        "mesh_seconds": mesh_seconds,
        "renders": images,
        "features": scorer.embed(images, cams),
        "mesh": mesh,
    }


@torch.no_grad()
def score_images(
    images: torch.Tensor, prompts: list[str], prompt_set: list[str] | None = None, cameras=None, scorer=None
) -> dict:
    """Score standalone images (e.g. the prior's DDIM samples): image i was made for prompts[i]; R@1 picks among
    ``prompt_set`` (default: the distinct prompts given). Returns {"r_at_1", "similarity", "per_image": [...]}.
    ``cameras`` (Cameras or (N, 4) rows) lets the scorer read "next to" pairs in the right order."""
    from .scorer import load_scorer

    scorer = scorer or load_scorer()
    pset = list(prompt_set) if prompt_set is not None else list(dict.fromkeys(prompts))
    if images.shape[0] != len(prompts):
        raise ValueError(f"{images.shape[0]} images but {len(prompts)} prompts; give one prompt per image")
    missing = [p for p in prompts if p not in pset]
    if missing:
        raise ValueError(f"prompts {missing[:3]} are not in the prompt set; add them to prompt_set")
    s = scorer.score(images.float().clamp(0, 1), pset, cameras)
    target = torch.tensor([pset.index(p) for p in prompts])
    hit = s.argmax(1) == target
    sim = s.gather(1, target[:, None])[:, 0]
    return {
        "r_at_1": hit.float().mean().item(),
        "similarity": sim.mean().item(),
        "per_image": [
            {"prompt": p, "hit": bool(h), "similarity": float(v), "best": pset[int(b)]}
            for p, h, v, b in zip(prompts, hit, sim, s.argmax(1))
        ],
    }
