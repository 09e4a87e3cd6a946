"""``dreamstill train-prior [--config FILE] -o DIR [--steps N] [--resume]``: train the built-in prior on the toy world
(the loop is in ``training``; the shipped run's config is ``config.json``)."""

from __future__ import annotations

import argparse
import sys

from .train_config import DEFAULT_CONFIG, TrainConfig


def add_arguments(p: argparse.ArgumentParser):
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="training config JSON (default: the shipped one)")
    p.add_argument("-o", "--output", required=True, help="run folder: checkpoint.pt, logs and model/ go here")
    p.add_argument("--steps", type=int, default=None, help="stop after this step (the schedule follows the config)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    p.add_argument("--time-limit", type=float, default=None, help="stop at the first checkpoint after this many s")


def run(args) -> int:
    from .training import train

    cfg = TrainConfig.load(args.config)
    train(
        cfg,
        args.output,
        device=args.device,
        resume=args.resume,
        steps=args.steps,
        progress=not args.no_progress,
        time_limit=args.time_limit,
    )
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``train-prior`` to a ``dreamstill`` argparse subparsers object; the parser's ``func`` runs it."""
    p = subparsers.add_parser("train-prior", help="train the built-in toy-world prior (reproduces the shipped one)")
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="dreamstill train-prior", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
