"""`dreamstill`: the command line.

    dreamstill generate PROMPT -o OUT.glb      one asset, here, with a progress bar
    dreamstill generate PROMPT --input-mesh IN.glb -o OUT.glb    paint a mesh (or --mode refine: start from it)
    dreamstill serve | submit | batch | keys    the ZeroMQ backend and its headless clients
    dreamstill train-prior | eval | build-addon

Each area registers its own subcommands (``register(subparsers)``); this file only wires them together and runs
``generate``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

from .cli_args import add_input_mesh_argument, add_job_arguments, add_prompt_argument, spec_from_args, with_input_mesh

# Modules that add subcommands, in the order they appear in --help. A module that is not installed is skipped.
COMMAND_MODULES = (
    "dreamstill.backend.server.commands",
    "dreamstill.backend.batch.commands",
    "dreamstill.backend.priors.builtin.train",
    "dreamstill.backend.eval.commands",
    "dreamstill.backend.generators.commands",
    "dreamstill.backend.addon_build",
)


def version() -> str:
    """The installed distribution's version (``dreamstill --version``)."""
    try:
        return importlib.metadata.version("dreamstill")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dreamstill", description="Text-to-3D by score distillation.")
    parser.add_argument("--version", action="version", version=f"dreamstill {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="optimize one asset from a text prompt and write a mesh")
    add_prompt_argument(gen)
    gen.add_argument(
        "-o", "--output", type=Path, default=Path("asset.glb"), help="OUT.glb / .obj / .ply (default: asset.glb)"
    )
    gen.add_argument("--resume", action="store_true", help="continue from the checkpoint next to OUT")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads (default: $DREAMSTILL_THREADS, else one per core the load average leaves free)",
    )
    add_job_arguments(gen)
    add_input_mesh_argument(gen)
    gen.set_defaults(func=generate)

    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(sub)
    return parser


def generate(args: argparse.Namespace) -> int:
    from dreamstill.protocol import Done, Failed, JobSpecError, Progress

    from .jobs import run_job
    from .jobs.console import ConsoleProgress
    from .jobs.finish import prompt_warnings
    from .threads import apply_threads, choose_threads

    try:
        spec, mesh = with_input_mesh(args, spec_from_args(args, args.prompt, args.output))
        threads = choose_threads(args.threads)
    except (JobSpecError, ValueError, FileNotFoundError) as err:  # JobSpecError is a ValueError; so is a bad --threads
        print(f"dreamstill generate: {err}", file=sys.stderr)
        return 2
    output = args.output.resolve()
    if output.is_dir():
        print(
            f"dreamstill generate: {output} is a folder; give a file name such as {output / 'asset.glb'}",
            file=sys.stderr,
        )
        return 2
    work_dir = output.with_name(output.stem + ".dreamstill")
    apply_threads(threads)
    print(f"dreamstill generate: {threads}", file=sys.stderr)

    for warning in prompt_warnings(spec):  # before minutes of work, and again when it ends
        print(f"dreamstill generate: warning: {warning}", file=sys.stderr)
    bar = ConsoleProgress(spec.prompt[:40], disable=args.quiet)
    code = 1
    for event in run_job(spec, work_dir, resume=args.resume, output_path=output, input_mesh=mesh):
        if isinstance(event, Progress):
            bar.update(event)
        elif isinstance(event, Done):
            bar.close(done=True)
            for warning in event.metrics.get("warnings", []):
                print(f"dreamstill generate: warning: {warning}", file=sys.stderr)
            for f in event.files:
                print(f)
            code = 0
        elif isinstance(event, Failed):
            bar.close()
            print(f"dreamstill generate: {event.message} [{event.code}]", file=sys.stderr)
            code = 2 if event.code in ("bad_spec", "unwritable_output", "missing_weights", "missing_dependency") else 1
    _remove_if_empty(work_dir)
    return code


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
