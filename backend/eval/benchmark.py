"""The toy benchmark: run methods over fixed toy-world prompts and seeds, score every asset, print a table.

For each method m, prompt y_i and seed s: optimise an asset (engine.AssetOptimizer), render V views all around it
(metrics.evaluation_cameras: 8 azimuths x elevations 0, 20, 45 and 80 degrees, flat albedo), score each view against
the whole prompt set with the toy-world scorer (R@1 and similarity, ScaleDreamer's protocol; the set is the 16
benchmark prompts plus 80 hard negatives: the same colour in every other shape, look-alike shapes, swapped pairs),
extract its mesh and compare it with the ground-truth SDF (volumetric IoU after normalising scale and the rotation
about Z), and keep the renders to measure the spread across seeds. Figures are averaged over seeds, then over prompts.

A pseudo-method "groundtruth" draws the world's own scenes through the same pipeline: the ceiling of every metric
(and a check of the pipeline itself).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .metrics import evaluation_cameras, geometry_iou, occupancy_from_mesh, occupancy_from_sdf, pairwise_diversity
from .metrics import r_at_1 as r_at_1_of
from .metrics import similarity as similarity_of

# 8 single objects (every shape and colour once) and 8 compositions (both relations, every shape and colour again).
BENCHMARK_PROMPTS: tuple[str, ...] = (
    "a red cube",
    "a blue sphere",
    "a yellow cone",
    "a green cylinder",
    "a purple torus",
    "an orange capsule",
    "a cyan pyramid",
    "a pink octahedron",
    "a red cube on top of a blue sphere",
    "a green cone next to a yellow torus",
    "a yellow sphere on top of a purple cube",
    "a blue cylinder next to an orange sphere",
    "a pink cone on top of a green cylinder",
    "a cyan cube next to a red pyramid",
    "an orange torus on top of a cyan capsule",
    "a purple octahedron next to a pink cube",
)
QUICK_PROMPTS: tuple[str, ...] = (
    "a red cube",
    "a yellow cone",
    "a red cube on top of a blue sphere",
    "a green cone next to a yellow torus",
)
PSEUDO_METHODS = ("groundtruth",)

# Each shape's look-alike: the shape an asset most plausibly turns into when the method gets the geometry wrong
# (from the side a cylinder passes for a cube; the feasibility run's "red cube" became a red cylinder).
LOOKALIKE = {
    "cube": "cylinder",
    "cylinder": "cube",
    "cone": "pyramid",
    "pyramid": "cone",
    "sphere": "octahedron",
    "octahedron": "sphere",
    "capsule": "cylinder",
    "torus": "cylinder",
}


def hard_negatives(prompt: str) -> list[str]:
    """Prompts one mistake away from ``prompt``. A single object: the same colour with every other shape (so a
    shapeless blob of the right colour does not pass). A composition: each object's shape replaced by its look-alike,
    and the two objects swapped ("a blue sphere on top of a red cube" for "a red cube on top of a blue sphere")."""
    from ..priors.builtin import world

    scene = world.parse_prompt(prompt)
    if not scene.is_composition:
        o = scene.objects[0]
        return [world.caption(world.Scene.single(o.colour, s)) for s in world.SHAPES if s != o.shape]
    out = []
    for k, o in enumerate(scene.objects):
        objs = list(scene.objects)
        objs[k] = world.SceneObject(o.colour, LOOKALIKE[o.shape])
        if objs[0] == objs[1]:
            continue
        out.append(world.caption(world.Scene(tuple(objs), scene.relation)))
    out.append(world.caption(world.Scene(scene.objects[::-1], scene.relation)))
    return out


def benchmark_prompt_set(prompts=BENCHMARK_PROMPTS) -> tuple[str, ...]:
    """The prompts R@1 chooses among: the benchmark prompts followed by their hard negatives (96 for the
    benchmark). Without the negatives R@1 over 16 prompts of distinct colours would pass a red cylinder, or a red
    blob, as "a red cube"."""
    out = list(prompts)
    for p in prompts:
        out += [q for q in hard_negatives(p) if q not in out]
    return tuple(out)


BENCHMARK_PROMPT_SET = benchmark_prompt_set()


class NotAvailableError(RuntimeError):
    """A part of the benchmark needs a module that is not installed yet."""


@dataclass
class BenchmarkConfig:
    methods: tuple[str, ...] = ("sds",)
    prior: str = "builtin"
    steps: int = 0  # 0 = the JobSpec default
    seeds: int = 3
    seed_start: int = 0  # seeds are seed_start, seed_start + 1, ... (to split a run across processes)
    prompts: tuple[str, ...] = BENCHMARK_PROMPTS
    prompt_set: tuple[str, ...] = BENCHMARK_PROMPT_SET  # the prompts R@1 chooses among
    # ScaleDreamer's R@1 chooses among the evaluation prompts alone (no hard negatives): r_at_1_prompts
    reference_prompts: tuple[str, ...] = BENCHMARK_PROMPTS
    guidance: float = 0.0
    options: dict = field(default_factory=dict)
    n_azimuth: int = 8
    elevations: tuple[float, ...] = (0.0, 20.0, 45.0, 80.0)
    render_size: int = 32
    shading: str = "albedo"  # how assets are drawn for scoring (the scorer was trained on flat and shaded renders)
    mesh_resolution: int = 64
    geometry_resolution: int = 48
    device: str | None = None

    @staticmethod
    def quick(**overrides) -> BenchmarkConfig:
        """The smoke setting: 4 prompts, 2 seeds, 50 steps (R@1 still over the full benchmark prompt set)."""
        base = dict(prompts=QUICK_PROMPTS, seeds=2, steps=50)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return BenchmarkConfig(**base)


# ------------------------------------------------------------------------------------------------------------------
# assets


class GroundTruthAsset:
    """The world's scene itself, behind the same render / extract_mesh interface as engine.AssetOptimizer."""

    seconds_per_step = 0.0

    def __init__(self, prompt: str):
        from ..priors.builtin import world

        self.world = world
        self.scene = world.parse_prompt(prompt)

    def render(self, cameras, height: int, width: int, shading: str = "albedo"):
        w = self.world
        cfg = w.RenderConfig(ambient=1.0, diffuse=0.0) if shading == "albedo" else w.RenderConfig()
        rgb, mask = w.render_scenes([self.scene] * len(cameras), cameras, height, cfg, return_mask=True)
        return _Rendered(rgb.permute(0, 2, 3, 1), mask.permute(0, 2, 3, 1))

    def extract_mesh(self, resolution: int = 64, texture_size: int | None = None):
        from skimage.measure import marching_cubes

        bound = self.world.BOUND_RADIUS
        occ_pts = torch.linspace(-bound, bound, resolution)
        x, y, z = torch.meshgrid(occ_pts, occ_pts, occ_pts, indexing="ij")
        sdf = self.world.scene_sdf(self.scene, torch.stack([x, y, z], -1).view(-1, 3)).view(
            resolution, resolution, resolution
        )
        step = 2 * bound / (resolution - 1)
        verts, faces, _, _ = marching_cubes(sdf.numpy(), level=0.0, spacing=(step, step, step))
        return _MeshLike((verts - bound).astype(np.float32), faces.astype(np.int64))


@dataclass
class _Rendered:
    rgb: torch.Tensor
    opacity: torch.Tensor


@dataclass
class _MeshLike:
    vertices: np.ndarray
    faces: np.ndarray


def make_asset(method: str, prompt: str, seed: int, cfg: BenchmarkConfig, prior):
    """Optimise one asset; returns (asset with render/extract_mesh, seconds spent optimising, seconds per step)."""
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
    )
    if cfg.steps:
        kwargs["steps"] = cfg.steps
    opt = AssetOptimizer(JobSpec(**kwargs), prior=prior)
    start = time.perf_counter()
    for _ in opt.run():
        pass
    return opt, time.perf_counter() - start, opt.seconds_per_step


def sample_corpus_prompts(corpus: str, split: str, n: int = 16, seed: int = 0) -> list[str]:
    """A fixed sample of n prompts of a generator corpus ("train") or of the held-out compositions ("heldout"): the
    prompts ``dreamstill eval --prompts`` scores a generator, or a per-prompt method beside it, on."""
    from ..generators.config import load_corpus

    pool = load_corpus(corpus, split)
    g = torch.Generator().manual_seed(1234 + seed)
    idx = sorted(torch.randperm(len(pool), generator=g)[: min(n, len(pool))].tolist())
    return [pool[i] for i in idx]


class GeneratorAssets:
    """issue 7: a prompt-amortized generator as an asset factory: asset(prompt, seed) runs one forward pass
    (generators.instant.InstantAsset) and returns something with render / extract_mesh."""

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


class SavedAsset:
    """An asset kept by an earlier run (its evaluation renders and mesh), behind render / extract_mesh, so a table
    can be scored again (a new scorer, a fixed metric) without optimising anything."""

    def __init__(self, record: dict):
        self.record = record

    def render(self, cameras, height: int, width: int, shading: str = "albedo") -> _Rendered:
        renders = self.record["renders"]
        if len(cameras) != renders.shape[0] or (height, width) != tuple(renders.shape[-2:]):
            raise ValueError(f"saved renders are {tuple(renders.shape)}; rescore with the run's cameras and size")
        rgb = renders.permute(0, 2, 3, 1).float() / 255
        return _Rendered(rgb, torch.ones_like(rgb[..., :1]))

    def extract_mesh(self, resolution: int | None = None, texture_size: int = 0) -> _MeshLike:
        if self.record["vertices"] is None:
            raise ValueError("the run kept no mesh for this asset (the field was empty)")
        return _MeshLike(self.record["vertices"].numpy(), self.record["faces"].numpy())


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


def save_assets(result: dict, path: str | Path) -> None:
    torch.save(result["_assets"], path)


# ------------------------------------------------------------------------------------------------------------------
# scoring one asset


@dataclass
class AssetScore:
    method: str
    prompt: str
    seed: int
    r_at_1: float
    similarity: float
    geometry: float
    seconds_per_step: float
    seconds_per_asset: float
    renders: torch.Tensor = field(repr=False, default=None)  # (V, 3, H, W)
    features: torch.Tensor = field(repr=False, default=None)  # (V, D) scorer features


_GT_OCCUPANCY: dict[str, object] = {}


def ground_truth_occupancy(prompt: str, resolution: int = 64):
    key = f"{prompt}|{resolution}"
    if key not in _GT_OCCUPANCY:
        from ..priors.builtin import world

        scene = world.parse_prompt(prompt)
        b = world.BOUND_RADIUS
        _GT_OCCUPANCY[key] = occupancy_from_sdf(lambda p: world.scene_sdf(scene, p), -b, b, resolution)
    return _GT_OCCUPANCY[key]


def score_asset(asset, prompt: str, scorer, cfg: BenchmarkConfig, cameras=None) -> dict:
    """R@1, similarity (over the views, against cfg.prompt_set), geometry IoU, and the renders and features."""
    cams = cameras if cameras is not None else evaluation_cameras(cfg.n_azimuth, cfg.elevations)
    out = asset.render(cams, cfg.render_size, cfg.render_size, shading=cfg.shading)
    images = out.rgb.permute(0, 3, 1, 2).float().cpu().clamp(0, 1)
    prompt_set = list(cfg.prompt_set)
    if prompt not in prompt_set:
        raise ValueError(f"prompt {prompt!r} is not in the R@1 prompt set; add it to prompt_set")
    target = prompt_set.index(prompt)
    scores = scorer.score(images, prompt_set, cams)
    reference = [prompt_set.index(p) for p in cfg.reference_prompts if p in prompt_set]
    geometry, mesh_seconds, mesh = 0.0, 0.0, None
    try:
        start = time.perf_counter()
        mesh = asset.extract_mesh(cfg.mesh_resolution, texture_size=0)
        mesh_seconds = time.perf_counter() - start
        if len(mesh.faces):
            pred = occupancy_from_mesh(mesh.vertices, mesh.faces, cfg.geometry_resolution)
            geometry = geometry_iou(pred, ground_truth_occupancy(prompt))
    except ValueError:  # EmptyFieldError is a ValueError: nothing to mesh, geometry 0
        geometry = 0.0
    return {
        "r_at_1": r_at_1_of(scores, target),
        "r_at_1_prompts": r_at_1_of(scores[:, reference], reference.index(target))
        if target in reference
        else float("nan"),
        "similarity": similarity_of(scores, target),
        "geometry": geometry,
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


# ------------------------------------------------------------------------------------------------------------------
# the run


def _mean(xs):
    xs = [x for x in xs if x == x]  # drop NaN
    return sum(xs) / len(xs) if xs else float("nan")


def run_benchmark(
    cfg: BenchmarkConfig, scorer=None, log=print, generator=None, saved: SavedAssets | None = None
) -> dict:
    """Run every method of cfg over its prompts and seeds. Returns the JSON-ready result:

    {"config", "overall" (first method), "by_method": {m: overall}, "per_prompt": [rows], "grid": [rows drawn]}
    where overall = {"r_at_1", "similarity", "geometry", "diversity", "diversity_features", "seconds_per_step",
    "seconds_per_asset", "r_at_1_single", "r_at_1_composition", "assets"}.
    ``generator`` (issue 7) replaces the per-prompt optimisation by generator.asset(prompt); ``saved`` by the assets
    of an earlier run (SavedAssets: scored again, nothing optimised). result["_assets"] keeps every asset's renders
    and mesh for save_assets.
    """
    from .scorer import load_scorer

    scorer = scorer or load_scorer()
    for p in cfg.prompts:
        if p not in cfg.prompt_set:
            raise ValueError(f"benchmark prompt {p!r} is missing from the R@1 prompt set")
    needs_prior = generator is None and saved is None and any(m not in PSEUDO_METHODS for m in cfg.methods)
    prior = None
    if needs_prior:
        from ..priors import load_prior

        prior = load_prior(cfg.prior, device=cfg.device)
    cams = evaluation_cameras(cfg.n_azimuth, cfg.elevations)
    rows, by_method, grid, kept = [], {}, [], []
    for method in cfg.methods:
        method_rows = []
        for prompt in cfg.prompts:
            seeds_out = []
            seeds = saved.seeds(method, prompt) if saved else range(cfg.seed_start, cfg.seed_start + cfg.seeds)
            for seed in seeds:
                if saved is not None:
                    asset, secs, sps = saved.asset(method, prompt, seed)
                elif generator is not None:
                    start = time.perf_counter()
                    asset = generator.asset(prompt, seed=seed)
                    secs, sps = time.perf_counter() - start, 0.0
                else:
                    asset, secs, sps = make_asset(method, prompt, seed, cfg, prior)
                s = score_asset(asset, prompt, scorer, cfg, cams)
                # time to make the asset: optimisation (or the generator's forward pass) plus mesh extraction
                secs_asset = secs + (s["mesh_seconds"] if method not in PSEUDO_METHODS and saved is None else 0.0)
                seeds_out.append((seed, s, sps, secs_asset))
                mesh = s["mesh"]
                kept.append(
                    {
                        "method": method,
                        "prompt": prompt,
                        "seed": seed,
                        "prompt_set": list(cfg.prompt_set),
                        "reference_prompts": list(cfg.reference_prompts),
                        "renders": (s["renders"] * 255).round().to(torch.uint8),
                        "vertices": None if mesh is None else torch.as_tensor(np.asarray(mesh.vertices, np.float32)),
                        "faces": None if mesh is None else torch.as_tensor(np.asarray(mesh.faces, np.int64)),
                        "seconds_per_asset": secs_asset,
                        "seconds_per_step": sps,
                    }
                )
                log(
                    f"{method:>11} | {prompt:<44} | seed {seed} | R@1 {s['r_at_1']:.2f} sim {s['similarity']:.3f} "
                    f"IoU {s['geometry']:.2f} | {secs_asset:.1f} s"
                )
            if not seeds_out:  # saved runs of this method did not cover this prompt
                continue
            renders = torch.stack([s["renders"] for _, s, _, _ in seeds_out])
            feats = torch.stack([s["features"] for _, s, _, _ in seeds_out])
            row = {
                "method": method,
                "prompt": prompt,
                "composition": " on top of " in prompt or " next to " in prompt,
                "r_at_1": _mean([s["r_at_1"] for _, s, _, _ in seeds_out]),
                "r_at_1_prompts": _mean([s["r_at_1_prompts"] for _, s, _, _ in seeds_out]),
                "similarity": _mean([s["similarity"] for _, s, _, _ in seeds_out]),
                "geometry": _mean([s["geometry"] for _, s, _, _ in seeds_out]),
                "diversity": pairwise_diversity(renders),
                "diversity_features": pairwise_diversity(feats),
                "seconds_per_step": _mean([sps for _, _, sps, _ in seeds_out]),
                "seconds_per_asset": _mean([t for _, _, _, t in seeds_out]),
                "seeds": [
                    {
                        "seed": seed,
                        "r_at_1": s["r_at_1"],
                        "r_at_1_prompts": s["r_at_1_prompts"],
                        "similarity": s["similarity"],
                        "geometry": s["geometry"],
                        "seconds_per_asset": t,
                    }
                    for seed, s, _, t in seeds_out
                ],
            }
            method_rows.append(row)
            grid.append((f"{method}: {prompt}", renders[0]))
        rows += method_rows
        by_method[method] = summarise(method_rows)
    result = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "overall": by_method[cfg.methods[0]],
        "by_method": by_method,
        "per_prompt": rows,
    }
    result["_grid"] = grid  # tensors for save_grid; dropped by save_json
    result["_assets"] = kept  # for save_assets
    return result


def summarise(rows: list[dict]) -> dict:
    single = [r for r in rows if not r["composition"]]
    comp = [r for r in rows if r["composition"]]
    keys = (
        "r_at_1",
        "r_at_1_prompts",
        "similarity",
        "geometry",
        "diversity",
        "diversity_features",
        "seconds_per_step",
        "seconds_per_asset",
    )
    out = {k: _mean([r[k] for r in rows]) for k in keys}
    out["r_at_1_single"] = _mean([r["r_at_1"] for r in single])
    out["r_at_1_composition"] = _mean([r["r_at_1"] for r in comp])
    out["assets"] = sum(len(r["seeds"]) for r in rows)
    return out


# ------------------------------------------------------------------------------------------------------------------
# output


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x != x else f"{x:.{digits}f}"


def format_table(result: dict) -> str:
    """One line per method: R@1 among the prompt set with its hard negatives (all / single objects / compositions),
    R@1 among the reference prompts alone (ScaleDreamer's protocol: the benchmark's 16), similarity, geometry IoU,
    diversity, seconds per step and per asset."""
    head = (
        f"{'method':<12} {'R@1':>6} {'R@1 ref':>7} {'R@1 1obj':>8} {'R@1 2obj':>8} {'sim':>6} {'geom IoU':>8} {'divers.':>7} "
        f"{'s/step':>7} {'s/asset':>8} {'assets':>6}"
    )
    lines = [head, "-" * len(head)]
    for m, o in result["by_method"].items():
        lines.append(
            f"{m:<12} {_fmt(o['r_at_1']):>6} {_fmt(o['r_at_1_prompts']):>7} {_fmt(o['r_at_1_single']):>8} {_fmt(o['r_at_1_composition']):>8} "
            f"{_fmt(o['similarity']):>6} {_fmt(o['geometry']):>8} {_fmt(o['diversity']):>7} "
            f"{_fmt(o['seconds_per_step']):>7} {_fmt(o['seconds_per_asset'], 1):>8} {o['assets']:>6}"
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
