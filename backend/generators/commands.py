"""`dreamstill train-generator`: amortized training over a prompt corpus (torchrun for several processes)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ..priors import PRIOR_DTYPES
from .config import CHECKPOINT_NAME, TOY_CORPORA, GeneratorTrainConfig, load_corpus

ARCHITECTURES = ("3dconv", "hyper-ingp", "triplane")


def register(subparsers) -> None:
    d = GeneratorTrainConfig()
    p = subparsers.add_parser(
        "train-generator",
        help="train a prompt-amortized generator (instant mode) by score distillation",
        description="Train G(y) over a corpus. Several processes: torchrun --nproc_per_node N -m "
        "dreamstill.backend.cli train-generator ...",
    )
    p.add_argument("--arch", choices=ARCHITECTURES, default=d.arch)
    p.add_argument("--method", choices=["asd", "sds", "csd", "vsd"], default=d.method)
    p.add_argument("--corpus", default=d.corpus, help=f"{', '.join(TOY_CORPORA)} or a file with one prompt a line")
    p.add_argument("--prior", default=d.prior)
    p.add_argument(
        "--prior-dtype",
        choices=list(PRIOR_DTYPES),
        default=d.prior_dtype,
        help="what the frozen prior runs in (auto: bfloat16 on CUDA, float32 on CPU); the generator trains in float32",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for checkpoints and render grids")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--prompts-per-step", type=int, default=d.prompts_per_step)
    p.add_argument("--views-per-prompt", type=int, default=d.views_per_prompt)
    p.add_argument("--resolution", type=int, default=d.resolution)
    p.add_argument("--num-samples", type=int, default=d.num_samples)
    p.add_argument("--guidance", type=float, default=d.guidance)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--grid-every", type=int, default=d.grid_every)
    p.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="also keep OUTPUT/checkpoints/step_N.pt at every --checkpoint-every (export-generator takes any)",
    )
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="method option")
    p.add_argument("--arch-option", action="append", default=[], metavar="KEY=VALUE", help="architecture option")
    p.add_argument(
        "--lambda-sparsity",
        type=float,
        default=d.lambda_sparsity,
        help="weight of the mean opacity (ScaleDreamer's configs: 20)",
    )
    p.add_argument(
        "--lambda-opaque",
        type=float,
        default=d.lambda_opaque,
        help="weight of the opacity entropy, ramped from 0 over the last fifth (ScaleDreamer's: 10)",
    )
    add_surface_arguments(p, d)
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/generator.pt")
    p.add_argument(
        "--init-from",
        type=Path,
        default=None,
        metavar="CKPT",
        help="start from this generator's weights (fine-tune: new optimizer and schedule)",
    )
    p.set_defaults(func=train_generator)

    e = subparsers.add_parser(
        "export-generator",
        help="strip a training checkpoint to what instant mode loads (config + weights)",
        description="Write CKPT's generator weights and training config, without the optimizer state, to OUT "
        "(e.g. backend/generators/builtin/generator.pt, the one `--generator builtin` loads).",
    )
    e.add_argument("checkpoint", type=Path, help="a train-generator folder or its generator.pt")
    e.add_argument("output", type=Path, help="the .pt file to write")
    e.set_defaults(func=export_generator)


def add_surface_arguments(p: argparse.ArgumentParser, d: GeneratorTrainConfig) -> None:
    """train-generator's flags of SDF generators (--arch-option geometry=sdf) and of shape initialisation."""
    p.add_argument(
        "--eikonal-weight", type=float, default=d.eikonal_weight, help="SDF generators: weight of the eikonal term"
    )
    p.add_argument(
        "--normal-smoothness-weight",
        type=float,
        default=d.normal_smoothness_weight,
        help="SDF generators: weight of the normal smoothness on the rendered surface",
    )
    p.add_argument("--beta-start", type=float, default=d.beta_start, help="SDF generators: VolSDF beta at step 0")
    p.add_argument("--beta-end", type=float, default=d.beta_end, help="SDF generators: VolSDF beta at the last step")
    p.add_argument(
        "--init-sdf-from",
        default="",
        metavar="GENERATOR",
        help="shape initialisation: regress an SDF generator (geometry=sdf, implied) onto the solids of this density "
        "generator ('builtin-density', a folder or a .pt) instead of distilling; then distill from it with --init-from",
    )
    p.add_argument(
        "--init-sdf-resolution",
        type=int,
        default=d.init_sdf_resolution,
        help="grid samples per side of the teacher's solids (32-48)",
    )
    p.add_argument(
        "--shape-targets",
        choices=("teacher", "world"),
        default=d.shape_targets,
        help="shape initialisation's targets: the --init-sdf-from generator's solids and colours, or (toy-world "
        "corpora) the toy world's own (reconstruction pretraining; the weights still start from the generator)",
    )
    p.add_argument(
        "--shape-regularization",
        type=float,
        default=d.shape_regularization,
        metavar="W",
        help="SDF generators distilling from a world-pretrained one (--init-from): add W x the reconstruction loss "
        "onto the toy world's solids (LATTE3D's shape regularization; toy-world corpora; 0 = off)",
    )


def train_generator(args: argparse.Namespace) -> int:
    from ..cli_args import parse_options
    from .train import distributed_context

    if args.steps < 1 or args.prompts_per_step < 1 or args.views_per_prompt < 1:
        raise SystemExit("train-generator: --steps, --prompts-per-step and --views-per-prompt must be >= 1")
    if not (args.beta_start > 0 and args.beta_end > 0):
        raise SystemExit("train-generator: --beta-start and --beta-end must be > 0 (world units, e.g. 0.01 and 0.005)")
    arch_options = parse_options(args.arch_option)
    if args.shape_targets != "teacher" and not args.init_sdf_from:
        raise SystemExit(
            "train-generator --shape-targets: add --init-sdf-from builtin-density (the weights to start from)"
        )
    if args.shape_regularization < 0:
        raise SystemExit("train-generator --shape-regularization: use a weight >= 0 (0 turns it off)")
    if args.shape_regularization > 0 and (args.init_sdf_from or arch_options.get("geometry") != "sdf"):
        raise SystemExit(
            "train-generator --shape-regularization: distill an SDF generator (--arch-option geometry=sdf, "
            "--init-from a pretrained one), without --init-sdf-from"
        )
    if args.init_sdf_from:
        if arch_options.setdefault("geometry", "sdf") != "sdf":
            raise SystemExit("train-generator --init-sdf-from trains an SDF generator: drop --arch-option geometry")
        if args.init_sdf_resolution < 16:
            raise SystemExit("train-generator --init-sdf-resolution: use 16 or more grid samples per side (40)")
    config = GeneratorTrainConfig(
        arch=args.arch,
        method=args.method,
        corpus=args.corpus,
        prior=args.prior,
        prior_dtype=args.prior_dtype,
        steps=args.steps,
        prompts_per_step=args.prompts_per_step,
        views_per_prompt=args.views_per_prompt,
        resolution=args.resolution,
        num_samples=args.num_samples,
        guidance=args.guidance,
        lr=args.lr,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        grid_every=args.grid_every,
        options=parse_options(args.option),
        arch_options=arch_options,
        lambda_sparsity=args.lambda_sparsity,
        lambda_opaque=args.lambda_opaque,
        eikonal_weight=args.eikonal_weight,
        normal_smoothness_weight=args.normal_smoothness_weight,
        beta_start=args.beta_start,
        beta_end=args.beta_end,
        init_sdf_from=args.init_sdf_from,
        init_sdf_resolution=args.init_sdf_resolution,
        shape_targets=args.shape_targets,
        shape_regularization=args.shape_regularization,
    )
    try:
        load_corpus(config.corpus)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"train-generator --corpus: {err}") from None
    rank, world_size = distributed_context()
    trainer = make_trainer(config, args.output, rank, world_size)
    checkpoint = args.output / CHECKPOINT_NAME
    if args.resume and checkpoint.exists():
        try:
            trainer.load(checkpoint)
        except ValueError as err:
            raise SystemExit(f"train-generator --resume: {err}") from None
    elif args.init_from is not None:
        from .instant import GeneratorNotFoundError, resolve_checkpoint

        try:
            trainer.init_from(resolve_checkpoint(str(args.init_from)))
        except (GeneratorNotFoundError, ValueError) as err:
            raise SystemExit(f"train-generator --init-from: {err}") from None
    if rank == 0:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=1))
    trainer.train()
    return 0


def make_trainer(config: GeneratorTrainConfig, output: Path, rank: int, world_size: int):
    """The run's GeneratorTrainer; a bad --init-sdf-from teacher ends the command with what to change."""
    from .instant import GeneratorNotFoundError
    from .train import GeneratorTrainer

    if not config.init_sdf_from:
        return GeneratorTrainer(config, output, rank=rank, world_size=world_size)
    try:
        return GeneratorTrainer(config, output, rank=rank, world_size=world_size)
    except GeneratorNotFoundError as err:
        raise SystemExit(f"train-generator --init-sdf-from: {err}") from None
    except ValueError as err:
        if not str(err).startswith("--"):  # not a flag's fault
            raise
        raise SystemExit(f"train-generator: {err}") from None


def export_generator(args: argparse.Namespace) -> int:
    import torch

    from .instant import GeneratorNotFoundError, resolve_checkpoint

    try:
        source = resolve_checkpoint(str(args.checkpoint))
    except GeneratorNotFoundError as err:
        raise SystemExit(f"export-generator: {err}") from None
    state = torch.load(source, map_location="cpu", weights_only=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: state[k] for k in ("config", "step", "lineage", "generator") if k in state}, args.output)
    stages = [stage_text(s["config"], s["step"]) for s in [*state.get("lineage", []), state]]
    size = args.output.stat().st_size / 1e6
    print(f"{args.output}: {'; then '.join(stages)}, {size:.1f} MB")
    return 0


def stage_text(config: dict, step: int) -> str:
    """One training stage of a generator's lineage in words, e.g. "20000 steps of asd on toy2000"."""
    if config.get("init_sdf_from"):
        source = "the toy world's" if config.get("shape_targets") == "world" else f"{config['init_sdf_from']}'s"
        return f"{step} steps of shape initialisation on {source} solids ({config['corpus']})"
    return f"{step} steps of {config['method']} on {config['corpus']}"
