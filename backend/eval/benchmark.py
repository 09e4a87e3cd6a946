"""The toy benchmark: run methods over fixed toy-world prompts and seeds, score every asset, print a table.

For each method m, prompt y_i and seed s: optimise an asset (engine.AssetOptimizer), render V views all around it
(metrics.evaluation_cameras: 8 azimuths x elevations 0, 20, 45 and 80 degrees, flat albedo), score each view against
the whole prompt set with the toy-world scorer (R@1 and similarity, ScaleDreamer's protocol; the set is the 16
benchmark prompts plus 80 hard negatives: the same colour in every other shape, look-alike shapes, swapped pairs),
extract its mesh and compare it with the ground truth: volumetric IoU after normalising scale and the rotation about
Z, and in that alignment the Chamfer distance to the true surface, the angle between mesh normals and the true
normals, the Euler number against the truth's, components and faces (``geometry``); keep the renders to measure the
spread across seeds. Figures are averaged over seeds, then over prompts.

A pseudo-method "groundtruth" draws the world's own scenes through the same pipeline: the ceiling of every metric
(and a check of the pipeline itself).

The parts, one job each: ``prompts`` (benchmark prompts, hard negatives, corpus samples), ``config``
(BenchmarkConfig), ``assets`` (ground-truth, saved, optimised and generator assets), ``scoring`` (one asset's
scores), ``geometry`` (mesh against the true surface), ``runner`` (the run and its summary), ``report`` (table, JSON,
grid). This module gathers their public names for callers of the benchmark as a whole.
"""

from __future__ import annotations

from .assets import (
    PSEUDO_METHODS,
    GeneratorAssets,
    GroundTruthAsset,
    NotAvailableError,
    SavedAsset,
    SavedAssets,
    load_generator_assets,
    make_asset,
    save_assets,
)
from .config import BenchmarkConfig
from .prompts import (
    BENCHMARK_PROMPT_SET,
    BENCHMARK_PROMPTS,
    LOOKALIKE,
    QUICK_PROMPTS,
    benchmark_prompt_set,
    hard_negatives,
    sample_corpus_prompts,
)
from .report import format_table, save_grid, save_json
from .runner import run_benchmark, summarise
from .scoring import ground_truth_occupancy, score_asset, score_images

__all__ = [
    "BENCHMARK_PROMPTS",
    "BENCHMARK_PROMPT_SET",
    "LOOKALIKE",
    "PSEUDO_METHODS",
    "QUICK_PROMPTS",
    "BenchmarkConfig",
    "GeneratorAssets",
    "GroundTruthAsset",
    "NotAvailableError",
    "SavedAsset",
    "SavedAssets",
    "benchmark_prompt_set",
    "format_table",
    "ground_truth_occupancy",
    "hard_negatives",
    "load_generator_assets",
    "make_asset",
    "run_benchmark",
    "sample_corpus_prompts",
    "save_assets",
    "save_grid",
    "save_json",
    "score_asset",
    "score_images",
    "summarise",
]
