"""The assets the benchmark scores, behind one interface (the engine's Asset protocol):

    device: torch.device
    warnings: list[str]
    render(cameras, height, width, shading="albedo") -> an output with .rgb (B, H, W, 3) and .opacity (B, H, W, 1)
    to_mesh(resolution, texture_size=0, max_faces=None) -> mesh.Mesh

Here: the world's own scene (``GroundTruthAsset``, the pseudo-method "groundtruth": the ceiling of every metric),
an asset kept by an earlier run (``SavedAsset``, for --rescore), and the factories of optimised assets
(``make_asset``: engine.AssetOptimizer) and of a prompt-amortized generator's (``GeneratorAssets``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import BenchmarkConfig
from .prompts import BENCHMARK_PROMPTS

PSEUDO_METHODS = ("groundtruth",)


class NotAvailableError(RuntimeError):
    """A part of the benchmark needs a module that is not installed yet."""


@dataclass
class AssetRender:
    """What scoring reads of a render: rgb (B, H, W, 3) and opacity (B, H, W, 1), channels last."""

    rgb: torch.Tensor
    opacity: torch.Tensor


def mesh_of(asset, resolution: int, max_faces: int | None = None):
    """The asset's mesh at ``resolution`` without a texture: the one place eval asks an asset for its mesh."""
    return asset.to_mesh(resolution, texture_size=0, max_faces=max_faces)


class GroundTruthAsset:
    """The world's scene itself: sphere-traced renders, and a marching-cubes mesh of its exact signed distance."""

    seconds_per_step = 0.0

    def __init__(self, prompt: str):
        from ..priors.builtin import world

        self.world = world
        self.scene = world.parse_prompt(prompt)
        self.device = torch.device("cpu")
        self.warnings: list[str] = []

    def render(self, cameras, height: int, width: int, shading: str = "albedo") -> AssetRender:
        w = self.world
        cfg = w.RenderConfig(ambient=1.0, diffuse=0.0) if shading == "albedo" else w.RenderConfig()
        rgb, mask = w.render_scenes([self.scene] * len(cameras), cameras, height, cfg, return_mask=True)
        return AssetRender(rgb.permute(0, 2, 3, 1), mask.permute(0, 2, 3, 1))

    def to_mesh(self, resolution: int = 64, texture_size: int = 0, max_faces: int | None = None):
        """Marching cubes of phi on a ``resolution``^3 grid over the world's bounding cube, faces wound outward, the
        objects' flat colours as vertex colours (the truth needs no texture: ``texture_size`` is not used)."""
        from skimage.measure import marching_cubes

        from ..mesh import Mesh
        from ..priors.builtin.exact_sdf import exact_scene_sdf

        bound = self.world.BOUND_RADIUS
        ax = torch.linspace(-bound, bound, resolution)
        points = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).view(-1, 3)
        phi = exact_scene_sdf(self.scene, points).view(resolution, resolution, resolution)
        step = 2 * bound / (resolution - 1)
        verts, faces, _, _ = marching_cubes(phi.numpy(), level=0.0, spacing=(step, step, step))
        verts = torch.from_numpy((verts - bound).astype(np.float32))
        mesh = Mesh(verts.numpy(), faces, vertex_colors=self._colours(verts))
        if max_faces is not None and mesh.num_faces > max_faces:
            from ..mesh.simplify import decimate

            mesh = decimate(mesh, max_faces, albedo_fn=lambda p: self.world.scene_albedo(self.scene, p))
        return mesh

    def _colours(self, points: torch.Tensor) -> np.ndarray:
        return (self.world.scene_albedo(self.scene, points) * 255).round().byte().numpy()


class SavedAsset:
    """An asset kept by an earlier run (its evaluation renders and mesh), so a table can be scored again (a new
    scorer, a fixed metric) without optimising anything."""

    def __init__(self, record: dict):
        self.record = record
        self.device = torch.device("cpu")
        self.warnings: list[str] = []

    def render(self, cameras, height: int, width: int, shading: str = "albedo") -> AssetRender:
        renders = self.record["renders"]
        if len(cameras) != renders.shape[0] or (height, width) != tuple(renders.shape[-2:]):
            raise ValueError(f"saved renders are {tuple(renders.shape)}; rescore with the run's cameras and size")
        rgb = renders.permute(0, 2, 3, 1).float() / 255
        return AssetRender(rgb, torch.ones_like(rgb[..., :1]))

    def to_mesh(self, resolution: int | None = None, texture_size: int = 0, max_faces: int | None = None):
        """The kept mesh as it was made (``resolution`` and ``texture_size`` cannot change it now)."""
        from ..mesh import Mesh

        if self.record["vertices"] is None:
            raise ValueError("the run kept no mesh for this asset (the field was empty)")
        mesh = Mesh(self.record["vertices"].numpy(), self.record["faces"].numpy())
        if max_faces is not None and mesh.num_faces > max_faces:
            from ..mesh.simplify import decimate

            mesh = decimate(mesh, max_faces)
        return mesh


class SavedAssets:
    """Assets from ``dreamstill eval --json F`` (written to F's .assets.pt), by (method, prompt, seed)."""

    def __init__(self, paths):
        self.records = [r for p in paths for r in torch.load(p, weights_only=True)]
        if not self.records:
            raise ValueError("the saved-asset files hold no assets")
        self.prompt_set = tuple(self.records[0]["prompt_set"])
        if any(tuple(r["prompt_set"]) != self.prompt_set for r in self.records):
            raise ValueError("the saved assets were scored against different prompt sets; rescore them apart")
        self.by_key = {(r["method"], r["prompt"], r["seed"]): r for r in self.records}

    def config(self, **overrides) -> BenchmarkConfig:
        cfg = BenchmarkConfig(**overrides)
        cfg.methods = tuple(dict.fromkeys(r["method"] for r in self.records))
        cfg.prompts = tuple(dict.fromkeys(r["prompt"] for r in self.records))
        cfg.prompt_set = self.prompt_set
        cfg.reference_prompts = tuple(self.records[0].get("reference_prompts", BENCHMARK_PROMPTS))
        return cfg

    def seeds(self, method: str, prompt: str) -> list[int]:
        return sorted(s for m, p, s in self.by_key if (m, p) == (method, prompt))

    def asset(self, method: str, prompt: str, seed: int):
        r = self.by_key[(method, prompt, seed)]
        return SavedAsset(r), r["seconds_per_asset"], r["seconds_per_step"]


def asset_record(method: str, prompt: str, seed: int, cfg: BenchmarkConfig, scored: dict, seconds: float, sps: float):
    """What --json keeps of one asset for --rescore: its renders (uint8), its mesh and its times."""
    mesh = scored["mesh"]
    return {
        "method": method,
        "prompt": prompt,
        "seed": seed,
        "prompt_set": list(cfg.prompt_set),
        "reference_prompts": list(cfg.reference_prompts),
        "renders": (scored["renders"] * 255).round().to(torch.uint8),
        "vertices": None if mesh is None else torch.as_tensor(np.asarray(mesh.vertices, np.float32)),
        "faces": None if mesh is None else torch.as_tensor(np.asarray(mesh.faces, np.int64)),
        "seconds_per_asset": seconds,
        "seconds_per_step": sps,
    }


def save_assets(result: dict, path: str | Path) -> None:
    torch.save(result["_assets"], path)


def make_asset(method: str, prompt: str, seed: int, cfg: BenchmarkConfig, prior):
    """Optimise one asset; returns (the asset, seconds spent optimising, seconds per step)."""
    if method == "groundtruth":
        return GroundTruthAsset(prompt), 0.0, 0.0
    from dreamstill.protocol import JobSpec

    from ..engine import AssetOptimizer

    kwargs = dict(
        prompt=prompt,
        method=method,
        seed=seed,
        prior=cfg.prior,
        guidance=cfg.guidance,
        options=dict(cfg.options),
        preview_every=0,
        mesh_resolution=cfg.mesh_resolution,
        texture_size=0,
        surface=cfg.surface,
    )
    if cfg.steps:
        kwargs["steps"] = cfg.steps
    opt = AssetOptimizer(JobSpec(**kwargs), prior=prior)
    start = time.perf_counter()
    for _ in opt.run():
        pass
    return opt, time.perf_counter() - start, opt.seconds_per_step


class GeneratorAssets:
    """issue 7: a prompt-amortized generator as an asset factory: asset(prompt, seed) runs one forward pass
    (generators.instant.InstantAsset)."""

    def __init__(self, checkpoint: str, mesh_resolution: int = 64):
        try:
            from ..generators.instant import InstantAsset, load_generator
        except ImportError as err:
            raise NotAvailableError(
                f"`dreamstill eval --generator` is not available: the amortized generators could not be imported ({err})"
            ) from None
        self.checkpoint = checkpoint
        self.mesh_resolution = mesh_resolution
        self._asset_cls = InstantAsset
        try:
            _, _, self.config = load_generator(checkpoint)
        except FileNotFoundError as err:
            raise NotAvailableError(str(err)) from None

    def asset(self, prompt: str, seed: int = 0):
        from dreamstill.protocol import JobSpec

        spec = JobSpec(
            prompt=prompt,
            mode="instant",
            generator=self.checkpoint,
            seed=seed,
            texture_size=0,
            mesh_resolution=self.mesh_resolution,
        )
        return self._asset_cls(spec)


def load_generator_assets(checkpoint: str, mesh_resolution: int = 64) -> GeneratorAssets:
    return GeneratorAssets(checkpoint, mesh_resolution)
