"""Instant + test-time refinement, scored like `dreamstill eval --generator G --prompts heldout|train`.

    python benchmarks/instant_refine.py --generator builtin --prompts heldout --prompt-index 0 --prompt-index 4 \
        --method sds --refine-steps 100 --json out/refine_sds100.json

Each asset is the generator's field for the prompt, refined by --refine-steps steps of --method (the per-prompt
loop of an instant job with JobSpec.refine_steps: jobs.refine_job), then scored by the toy benchmark (R@1 among the
16 sampled prompts of the split, similarity, geometry IoU, Chamfer, topology). --refine-steps 0 scores the instant
asset itself. ``--json`` also writes FILE.assets.pt, which `dreamstill eval --rescore` reads.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch


class RefinedGeneratorAssets:
    """eval's generator interface (asset(prompt, seed)): the instant asset after ``steps`` refinement steps."""

    def __init__(self, checkpoint: str, steps: int, method: str, lr: float, options: dict, mesh_resolution: int):
        from dreamstill.backend.eval.assets import load_generator_assets

        self.base = load_generator_assets(checkpoint, mesh_resolution)
        self.config = self.base.config
        self.steps, self.method, self.lr, self.options = steps, method, lr, options

    def asset(self, prompt: str, seed: int = 0):
        from dreamstill.backend.generators.refine import refine_optimizer

        instant = self.base.asset(prompt, seed)
        if not self.steps:
            return instant
        spec = dataclasses.replace(
            instant.spec, refine_steps=self.steps, method=self.method, lr=self.lr, options=self.options
        )
        optimizer = refine_optimizer(instant.fields, 0, spec, instant.prior)
        start = time.perf_counter()
        for _ in optimizer.run():
            pass
        print(f"  refined {prompt!r}: {self.steps} steps in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        return optimizer


def main(argv=None) -> int:
    from dreamstill.backend.cli_args import parse_options

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", default="builtin")
    ap.add_argument("--prompts", choices=("train", "heldout"), default="heldout")
    ap.add_argument("--prompt-index", type=int, action="append", default=[], help="repeatable; default: all 16")
    ap.add_argument("--method", default="sds")
    ap.add_argument("--refine-steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.0, help="0 = generators.refine.REFINE_LR")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--grid", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from dreamstill.backend.eval.assets import save_assets
    from dreamstill.backend.eval.config import BenchmarkConfig
    from dreamstill.backend.eval.prompts import sample_corpus_prompts
    from dreamstill.backend.eval.report import format_table, save_grid, save_json
    from dreamstill.backend.eval.runner import run_benchmark

    options = parse_options(args.option)
    assets = RefinedGeneratorAssets(args.generator, args.refine_steps, args.method, args.lr, options, 64)
    sampled = tuple(sample_corpus_prompts(assets.config.corpus, args.prompts))
    chosen = tuple(sampled[i] for i in args.prompt_index) if args.prompt_index else sampled
    label = f"{args.generator}+{args.method}{args.refine_steps}" if args.refine_steps else args.generator
    cfg = BenchmarkConfig(methods=(label,), seeds=1, prompts=chosen, prompt_set=sampled, reference_prompts=sampled)
    result = run_benchmark(cfg, log=print, generator=assets)
    print(format_table(result))
    if args.grid:
        save_grid(result, args.grid)
    if args.json:
        save_json(result, args.json)
        save_assets(result, args.json.with_suffix(".assets.pt"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
