"""`dreamstill eval` (the toy benchmark) and `dreamstill train-scorer` (the toy-world scorer)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    ev = subparsers.add_parser(
        "eval",
        help="score methods on the toy benchmark: R@1, similarity, geometry, diversity, time",
        description="Run score-distillation methods over the fixed toy-world benchmark (16 prompts, single objects "
        "and compositions) and score each asset with the toy-world scorer (R@1 and similarity over views all around, "
        "top-down included) and against the ground-truth shape: volumetric IoU, and after the IoU's alignment "
        "(position, size, turn about the vertical) the Chamfer distance to the true surface (CD, world units), "
        "the mean angle between mesh and true normals (degrees), the share of assets whose Euler number is the "
        "truth's (topo) and the mean face count.",
    )
    ev.add_argument("--method", default="sds", help="one method (sds, csd, vsd, l2vsd, ssd, fsd, asd, or groundtruth)")
    ev.add_argument("--methods", default=None, help="comma-separated methods compared in one table, e.g. sds,asd")
    ev.add_argument("--prior", default="builtin", help="prior name: builtin, tiny, a diffusers folder or hub id")
    ev.add_argument("--steps", type=int, default=None, help="optimisation steps per asset (default: JobSpec's)")
    ev.add_argument("--seeds", type=int, default=None, help="seeds per prompt (default 3; --quick: 2)")
    ev.add_argument("--seed-start", type=int, default=0, help="first seed (seeds are N, N+1, ...; to split a run)")
    ev.add_argument("--prompts-limit", type=int, default=None, help="use only the first N benchmark prompts")
    ev.add_argument("--quick", action="store_true", help="smoke setting: 4 prompts, 2 seeds, 50 steps")
    ev.add_argument("--guidance", type=float, default=0.0, help="CFG scale; 0 = each method's default")
    ev.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="method option (JSON value)")
    ev.add_argument("--shading", choices=("albedo", "lambertian"), default="albedo", help="how views are drawn")
    ev.add_argument(
        "--surface",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="per-prompt assets with the surface stage (the default); --no-surface: the density stage alone, named "
        "'<method>-density' in the table and the kept assets, so --rescore compares the two",
    )
    ev.add_argument(
        "--json",
        type=Path,
        default=None,
        help="write the figures to this JSON file, and every asset's renders and mesh to FILE.assets.pt",
    )
    ev.add_argument("--grid", type=Path, default=Path("dreamstill_eval.png"), help="PNG grid of renders")
    ev.add_argument("--scorer", type=Path, default=None, help="scorer folder (default: the shipped weights)")
    ev.add_argument("--device", default=None, help="cpu or cuda (default: the prior's choice)")
    _add_asset_sources(ev)
    ev.set_defaults(func=run_eval)

    tr = subparsers.add_parser("train-scorer", help="train the toy-world scorer (seeded; reproduces shipped weights)")
    tr.add_argument("-o", "--output", type=Path, default=None, help="folder (default: the shipped scorer_weights/)")
    tr.add_argument("--images", type=int, default=None, help="training renders")
    tr.add_argument("--epochs", type=int, default=None)
    tr.add_argument("--seed", type=int, default=None)
    tr.add_argument("--threads", type=int, default=None, help="torch threads (default 1: the box is shared)")
    tr.set_defaults(func=run_train_scorer)


def _add_asset_sources(ev) -> None:
    """eval's flags that choose what is scored: saved assets, a generator, other prompts, a share of the benchmark."""
    ev.add_argument(
        "--rescore",
        type=Path,
        nargs="+",
        default=None,
        metavar="ASSETS",
        help="score the .assets.pt files of earlier runs again (current scorer and metrics), optimising nothing",
    )
    ev.add_argument(
        "--prompt-index",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="evaluate only benchmark prompt N (repeatable; for splitting a run across processes)",
    )
    ev.add_argument("--generator", default=None, metavar="CKPT", help="evaluate a prompt-amortized generator")
    ev.add_argument(
        "--prompts",
        choices=("train", "single", "heldout"),
        default=None,
        help="instead of the benchmark, 16 sampled training prompts, single-object training prompts or held-out "
        "compositions of the generator's corpus (or --corpus); per-prompt methods too, to compare with a generator",
    )
    ev.add_argument(
        "--corpus",
        default="toy2000",
        help="with --prompts train and no --generator: the corpus the prompts are sampled from "
        "(default: the shipped generator's, toy2000); the held-out compositions are the toy world's",
    )
    ev.add_argument(
        "--scorer-check",
        action="store_true",
        help="only measure the scorer: R@1 on held-out ground-truth renders of the benchmark prompts",
    )


def _methods(args) -> tuple[str, ...]:
    from dreamstill.protocol import METHODS

    from .assets import PSEUDO_METHODS

    names = [m.strip() for m in (args.methods.split(",") if args.methods else [args.method]) if m.strip()]
    for m in names:
        if m not in METHODS and m not in PSEUDO_METHODS:
            raise SystemExit(
                f"dreamstill eval: unknown method {m!r}; choose from {', '.join(METHODS + PSEUDO_METHODS)}"
            )
    if not names:
        raise SystemExit("dreamstill eval: --methods is empty; give e.g. --methods sds,asd")
    return tuple(dict.fromkeys(names))


def run_eval(args: argparse.Namespace) -> int:
    from . import assets
    from .runner import run_benchmark
    from .scorer import load_scorer

    try:
        scorer = load_scorer(args.scorer)
    except FileNotFoundError as err:
        print(f"dreamstill eval: {err}", file=sys.stderr)
        return 2
    if args.scorer_check:
        return _scorer_check(scorer)
    if args.rescore:
        try:
            saved = assets.SavedAssets(args.rescore)
        except (OSError, ValueError) as err:
            print(f"dreamstill eval --rescore: {err}", file=sys.stderr)
            return 2
        return _report(run_benchmark(saved.config(), scorer=scorer, log=print, saved=saved), args)
    cfg = _config(args)
    generator = None
    try:
        if args.generator is not None:
            generator = assets.load_generator_assets(args.generator, cfg.mesh_resolution)
            cfg.seeds = 1 if args.seeds is None else cfg.seeds  # one forward pass per prompt: nothing random
            cfg.methods = (f"generator:{args.generator}",)
        if generator is not None or args.prompts is not None:
            _use_corpus_prompts(cfg, args, generator)
    except (assets.NotAvailableError, OSError, ValueError) as err:
        print(f"dreamstill eval: {err}", file=sys.stderr)
        return 2
    _select_prompts(cfg, args)
    return _report(run_benchmark(cfg, scorer=scorer, log=print, generator=generator), args)


def _scorer_check(scorer) -> int:
    from .prompts import BENCHMARK_PROMPT_SET, BENCHMARK_PROMPTS
    from .scorer import evaluate_scorer

    report = evaluate_scorer(scorer, list(BENCHMARK_PROMPTS), list(BENCHMARK_PROMPT_SET))
    for k, v in report.items():
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    return 0


def _config(args: argparse.Namespace):
    """The BenchmarkConfig the flags ask for (--quick: its smoke setting); bad counts stop with what to change."""
    from ..cli_args import parse_options
    from .config import BenchmarkConfig

    overrides = dict(
        methods=_methods(args),
        prior=args.prior,
        guidance=args.guidance,
        options=parse_options(args.option),
        shading=args.shading,
        device=args.device,
        surface=args.surface,
    )
    for flag, name, value in (("--steps", "steps", args.steps), ("--seeds", "seeds", args.seeds)):
        if value is not None:
            if value < 1:
                raise SystemExit(f"dreamstill eval: {flag} must be at least 1")
            overrides[name] = value
    if args.seed_start < 0:
        raise SystemExit("dreamstill eval: --seed-start must be at least 0")
    overrides["seed_start"] = args.seed_start
    return BenchmarkConfig.quick(**overrides) if args.quick else BenchmarkConfig(**overrides)


def _use_corpus_prompts(cfg, args: argparse.Namespace, generator) -> None:
    """A corpus's sampled training or held-out prompts instead of the benchmark's: R@1 chooses among them."""
    from .prompts import sample_corpus_prompts

    corpus = generator.config.corpus if generator is not None else args.corpus
    sampled = sample_corpus_prompts(corpus, args.prompts or "train")
    cfg.prompts = tuple(sampled[:4] if args.quick else sampled)
    cfg.prompt_set = cfg.reference_prompts = tuple(sampled)


def _select_prompts(cfg, args: argparse.Namespace) -> None:
    """--prompts-limit N keeps the first N prompts; --prompt-index picks prompts by position."""
    if args.prompts_limit:
        cfg.prompts = cfg.prompts[: args.prompts_limit]
    if args.prompt_index:
        bad = [i for i in args.prompt_index if not 0 <= i < len(cfg.prompts)]
        if bad:
            raise SystemExit(f"dreamstill eval: --prompt-index {bad} out of range 0..{len(cfg.prompts) - 1}")
        cfg.prompts = tuple(cfg.prompts[i] for i in args.prompt_index)


def _report(result: dict, args: argparse.Namespace) -> int:
    from .assets import save_assets
    from .report import format_table, save_grid, save_json

    print()
    print(format_table(result))
    if args.grid:
        save_grid(result, args.grid)
        print(f"render grid: {args.grid}")
    if args.json:
        save_json(result, args.json)
        assets = args.json.with_suffix(".assets.pt")
        save_assets(result, assets)
        print(f"figures: {args.json}; assets: {assets}")
    return 0


def run_train_scorer(args: argparse.Namespace) -> int:
    from .scorer import WEIGHTS_DIR, ScorerTrainConfig, train_scorer

    cfg = ScorerTrainConfig()
    for name, value in (
        ("n_images", args.images),
        ("epochs", args.epochs),
        ("seed", args.seed),
        ("threads", args.threads),
    ):
        if value is not None:
            setattr(cfg, name, value)
    out = args.output or WEIGHTS_DIR
    train_scorer(out, cfg, log=lambda s: print(s, flush=True))
    print(f"scorer weights: {out}")
    return 0
