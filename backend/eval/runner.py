"""Running the benchmark: every method over its prompts and seeds, each asset scored, figures averaged over seeds,
then over prompts."""

from __future__ import annotations

import time
from dataclasses import asdict

import torch

from .assets import PSEUDO_METHODS, SavedAssets, asset_record, make_asset
from .config import BenchmarkConfig
from .metrics import evaluation_cameras, pairwise_diversity
from .scoring import GEOMETRY_KEYS, score_asset

SCORE_KEYS = ("r_at_1", "r_at_1_prompts", "similarity") + GEOMETRY_KEYS
SUMMARY_KEYS = SCORE_KEYS + ("diversity", "diversity_features", "seconds_per_step", "seconds_per_asset")


def _mean(xs):
    xs = [x for x in xs if x is not None and x == x]  # drop NaN and missing
    return sum(xs) / len(xs) if xs else float("nan")


def _load_prior(cfg: BenchmarkConfig, generator, saved):
    """The prior, when some asset is optimised here (not a generator's, not saved, not the ground truth)."""
    if generator is not None or saved is not None or all(m in PSEUDO_METHODS for m in cfg.methods):
        return None
    from ..priors import load_prior

    return load_prior(cfg.prior, device=cfg.device)


def _obtain(method: str, prompt: str, seed: int, cfg: BenchmarkConfig, prior, generator, saved):
    """(asset, seconds to make it, seconds per step) from the saved run, the generator, or an optimisation."""
    if saved is not None:
        return saved.asset(method, prompt, seed)
    if generator is not None:
        start = time.perf_counter()
        asset = generator.asset(prompt, seed=seed)
        return asset, time.perf_counter() - start, 0.0
    return make_asset(method, prompt, seed, cfg, prior)


def _log_line(method: str, prompt: str, seed: int, s: dict, seconds: float) -> str:
    cd = "n/a" if s["chamfer"] != s["chamfer"] else f"{s['chamfer']:.3f}"
    angle = "n/a" if s["normal_angle_deg"] != s["normal_angle_deg"] else f"{s['normal_angle_deg']:.0f}"
    return (
        f"{method:>11} | {prompt:<44} | seed {seed} | R@1 {s['r_at_1']:.2f} sim {s['similarity']:.3f} "
        f"IoU {s['geometry']:.2f} CD {cd} normal {angle} deg chi {s['euler']} faces {s['faces']} | {seconds:.1f} s"
    )


def _prompt_row(method: str, prompt: str, seeds_out: list) -> dict:
    """One (method, prompt): each score averaged over seeds, the spread across seeds, and every seed's scores."""
    renders = torch.stack([s["renders"] for _, s, _, _ in seeds_out])
    feats = torch.stack([s["features"] for _, s, _, _ in seeds_out])
    row = {
        "method": method,
        "prompt": prompt,
        "composition": " on top of " in prompt or " next to " in prompt,
        **{k: _mean([s[k] for _, s, _, _ in seeds_out]) for k in SCORE_KEYS},
        "diversity": pairwise_diversity(renders),
        "diversity_features": pairwise_diversity(feats),
        "seconds_per_step": _mean([sps for _, _, sps, _ in seeds_out]),
        "seconds_per_asset": _mean([secs for _, _, _, secs in seeds_out]),
    }
    row["seeds"] = [
        {"seed": seed, **{k: s[k] for k in SCORE_KEYS}, "euler": s["euler"], "seconds_per_asset": secs}
        for seed, s, _, secs in seeds_out
    ]
    return row


def label(method: str, cfg: BenchmarkConfig, saved=None) -> str:
    """A method's name in the table and the kept assets: "<method>-density" for per-prompt assets made with the
    density stage alone (cfg.surface False), so --rescore can put both stages in one table; a saved run's names
    are kept as they are."""
    if saved is not None or cfg.surface or method in PSEUDO_METHODS or method.startswith("generator:"):
        return method
    return f"{method}-density"


def _run_prompt(method, prompt, cfg, scorer, cams, sources, log, kept: list):
    """Every seed of one (method, prompt): made, scored, logged and kept. Returns (its row, the first seed's renders),
    or None when no seed was run."""
    prior, generator, saved = sources
    name = label(method, cfg, saved)
    seeds = saved.seeds(method, prompt) if saved else range(cfg.seed_start, cfg.seed_start + cfg.seeds)
    seeds_out = []
    for seed in seeds:
        asset, secs, sps = _obtain(method, prompt, seed, cfg, prior, generator, saved)
        s = score_asset(asset, prompt, scorer, cfg, cams)
        # time to make the asset: optimisation (or the generator's forward pass) plus mesh extraction
        secs_asset = secs + (s["mesh_seconds"] if method not in PSEUDO_METHODS and saved is None else 0.0)
        seeds_out.append((seed, s, sps, secs_asset))
        kept.append(asset_record(name, prompt, seed, cfg, s, secs_asset, sps))
        log(_log_line(name, prompt, seed, s, secs_asset))
    return (_prompt_row(name, prompt, seeds_out), seeds_out[0][1]["renders"]) if seeds_out else None


def run_benchmark(
    cfg: BenchmarkConfig, scorer=None, log=print, generator=None, saved: SavedAssets | None = None
) -> dict:
    """Run every method of cfg over its prompts and seeds. Returns the JSON-ready result:

    {"config", "overall" (first method), "by_method": {m: overall}, "per_prompt": [rows]}
    where overall = summarise(rows). ``generator`` (issue 7) replaces the per-prompt optimisation by
    generator.asset(prompt); ``saved`` by the assets of an earlier run (SavedAssets: scored again, nothing
    optimised). result["_grid"] keeps renders for save_grid and result["_assets"] every asset's renders and mesh for
    save_assets.
    """
    from .scorer import load_scorer

    scorer = scorer or load_scorer()
    for p in cfg.prompts:
        if p not in cfg.prompt_set:
            raise ValueError(f"benchmark prompt {p!r} is missing from the R@1 prompt set")
    sources = (_load_prior(cfg, generator, saved), generator, saved)
    cams = evaluation_cameras(cfg.n_azimuth, cfg.elevations)
    rows, by_method, grid, kept = [], {}, [], []
    for method in cfg.methods:
        method_rows = []
        for prompt in cfg.prompts:
            ran = _run_prompt(method, prompt, cfg, scorer, cams, sources, log, kept)
            if ran is None:  # saved runs of this method did not cover this prompt
                continue
            method_rows.append(ran[0])
            grid.append((f"{label(method, cfg, saved)}: {prompt}", ran[1]))
        rows += method_rows
        by_method[label(method, cfg, saved)] = summarise(method_rows)
    return {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "overall": by_method[label(cfg.methods[0], cfg, saved)],
        "by_method": by_method,
        "per_prompt": rows,
        "_grid": grid,  # tensors for save_grid; dropped by save_json
        "_assets": kept,  # for save_assets
    }


def summarise(rows: list[dict]) -> dict:
    """A method's figures: each score averaged over its prompts (NaN left out), R@1 on single objects and on
    compositions apart, topology_ok and faces over its assets (the share with the right Euler number, the mean
    face count), and the number of assets."""
    single = [r for r in rows if not r["composition"]]
    comp = [r for r in rows if r["composition"]]
    out = {k: _mean([r[k] for r in rows]) for k in SUMMARY_KEYS}
    seeds = [s for r in rows for s in r["seeds"]]
    out["topology_ok"] = _mean([s["topology_ok"] for s in seeds])
    out["faces"] = _mean([s["faces"] for s in seeds])
    out["r_at_1_single"] = _mean([r["r_at_1"] for r in single])
    out["r_at_1_composition"] = _mean([r["r_at_1"] for r in comp])
    out["assets"] = len(seeds)
    return out
