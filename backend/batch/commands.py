"""``dreamstill batch``: one asset per prompt of a file, on a running server (default) or on Ray.

    dreamstill batch prompts.txt -o out/ [--server tcp://127.0.0.1:5555] [job options]
    dreamstill batch prompts.txt -o out/ --ray local|auto|ADDRESS [--ray-cpus 1] [--max-retries 3] [job options]
    ... [--scene out/scene.usda | out/scene.blend]

Writes ``NNN_<prompt>.<format>`` per prompt (with its views and texture), ``contact_sheet.png`` and, with
``--scene``, one scene holding every asset on a grid. Resumable: a rerun skips prompts whose files are on disk as
they were written (``results.Manifest``). Exit codes: 0 done, 1 a prompt failed, 2 bad input, 3 no server or Ray
cluster, 130 interrupted (finished results are kept; run the same command again to resume).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .items import make_items
from .prompts import read_prompts
from .results import Manifest

EXIT_FAILED, EXIT_USAGE, EXIT_NO_SERVER, EXIT_INTERRUPTED = 1, 2, 3, 130


def register(subparsers) -> None:
    from ..cli_args import add_job_arguments
    from ..server import commands as server_commands
    from .ray_runner import DEFAULT_RUNNER

    batch = subparsers.add_parser("batch", help="run a list of prompts (one a line) on a server or a Ray cluster")
    batch.add_argument("prompts", type=Path, help="text file, one prompt a line (# starts a comment)")
    batch.add_argument("-o", "--output", type=Path, required=True, help="folder for the results")
    batch.add_argument(
        "--ray",
        default=None,
        metavar="local|auto|ADDRESS",
        help="run on Ray instead of a server: 'local' starts Ray here, 'auto' joins this machine's cluster, or "
        "HOST:PORT / ray://HOST:PORT (needs pip install 'dreamstill[ray]')",
    )
    batch.add_argument("--ray-cpus", type=int, default=1, help="CPUs per prompt on a cluster without GPUs (default 1)")
    batch.add_argument("--max-retries", type=int, default=3, help="reruns of a prompt whose Ray worker was lost")
    batch.add_argument("--ray-runner", default=DEFAULT_RUNNER, help=argparse.SUPPRESS)  # tests: a fake engine
    batch.add_argument("--scene", type=Path, default=None, help="also write every asset on a grid: .usda or .blend")
    batch.add_argument("--scene-gap", type=float, default=0.25, help="metres between assets in the scene (0.25)")
    server_commands._client_arguments(batch)
    add_job_arguments(batch)
    batch.set_defaults(func=cmd_batch)


def _err(text: str) -> None:
    print(f"dreamstill batch: {text}", file=sys.stderr)


def _check_args(args) -> str | None:
    """What is wrong with the flags (before anything runs), or None."""
    from ..mesh.usd import INSTALL_HINT, USD_FORMATS, usd_available
    from .ray_runner import INSTALL_HINT as INSTALL_HINT_RAY
    from .ray_runner import ray_available
    from .scene import scene_format

    if args.ray_cpus < 1 or args.max_retries < 0:
        return "--ray-cpus must be 1 or more and --max-retries 0 or more"
    if args.ray and not ray_available():
        return INSTALL_HINT_RAY
    if args.format in USD_FORMATS and not usd_available():
        return f"--format {args.format}: {INSTALL_HINT}"
    if args.scene is not None:
        try:
            scene_format(args.scene)
        except ValueError as err:
            return str(err)
    return None


def _items(args):
    """The batch items, or an exit code after printing what to fix."""
    from dreamstill.protocol import JobSpecError

    from ..cli_args import spec_from_args

    try:
        prompts = read_prompts(args.prompts)
    except OSError as err:
        _err(f"cannot read {args.prompts}: {err}")
        return EXIT_USAGE
    if not prompts:
        _err(f"{args.prompts} has no prompts (one a line; # starts a comment)")
        return EXIT_USAGE
    out_dir = args.output.expanduser().resolve()
    try:
        return make_items(prompts, out_dir, args.format or "glb", lambda p, path: spec_from_args(args, p, path))
    except JobSpecError as err:
        _err(str(err))
        return EXIT_USAGE


def _run(args, todo, out_dir: Path, manifest: Manifest) -> int:
    """Run ``todo`` on Ray or the server; returns the number of failed prompts (raises when it cannot run)."""
    if args.ray:
        from .ray_runner import run_on_ray

        return run_on_ray(
            todo, out_dir, manifest, args.ray, args.ray_cpus, args.max_retries, args.quiet, args.ray_runner
        )
    from .server_runner import run_on_server

    return run_on_server(args, todo, out_dir, manifest)


def _write_scene(args, done) -> bool:
    """The --scene file of the finished prompts; False (after saying why) when it could not be written."""
    from .scene import write_scene

    try:
        scene = write_scene([(item.prompt, item.path) for item in done], args.scene.expanduser(), args.scene_gap)
    except (OSError, RuntimeError, ValueError, ImportError) as err:
        _err(f"the assets are written, the scene is not: {err}")
        return False
    if not args.quiet:
        print(f"scene {scene} ({len(done)} assets)", file=sys.stderr)
    return True


def cmd_batch(args) -> int:
    from dreamstill.protocol.client import ServerUnavailable

    from .ray_runner import RayUnavailable
    from .sheet import write_contact_sheet

    problem = _check_args(args)
    if problem is not None:
        _err(problem)
        return EXIT_USAGE
    items = _items(args)
    if isinstance(items, int):
        return items
    out_dir = items[0].path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out_dir)
    todo = [item for item in items if manifest.verify(item.path) is not None]
    if not args.quiet:
        print(f"{len(items) - len(todo)} of {len(items)} already done; {len(todo)} to run", file=sys.stderr)
    failures = 0
    try:
        failures = _run(args, todo, out_dir, manifest) if todo else 0
    except ServerUnavailable as err:
        _err(f"{err} (run the same command again to resume)")
        return EXIT_NO_SERVER
    except RayUnavailable as err:
        _err(str(err))
        return EXIT_NO_SERVER
    except KeyboardInterrupt:
        _err("interrupted; run the same command again to resume (finished prompts are kept)")
        return EXIT_INTERRUPTED
    finally:
        write_contact_sheet([item.path for item in items], out_dir)
    done = [item for item in items if manifest.verify(item.path) is None]
    if args.scene is not None and done and not _write_scene(args, done):
        failures += 1
    if not args.quiet:
        print(f"{len(done)} of {len(items)} done; contact sheet {out_dir / 'contact_sheet.png'}", file=sys.stderr)
    return EXIT_FAILED if failures or len(done) < len(items) else 0
