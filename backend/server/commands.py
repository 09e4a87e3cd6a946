"""Headless commands: ``dreamstill serve | keys | submit``.

    dreamstill serve [--bind tcp://127.0.0.1:5555] [--store DIR] [--keys DIR] [--devices cuda:0,cuda:1 | --workers N]
                     [--prior NAME=PATH] [--generator NAME=PATH] [--models DIR] [--allow-hub] [--shared]
                     [--keep-jobs N] [--keep-days D]
    dreamstill keys -o DIR
    dreamstill submit "a red cube" --server tcp://127.0.0.1:5555 -o cube.glb [job options as for generate]

Each subcommand's ``func`` takes the parsed args and returns an exit code: 0 done, 1 a job failed, 2 bad input,
3 no server, 130 interrupted.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import sys
from pathlib import Path

from .server import DEFAULT_BIND
from .worker import DEFAULT_RUNNER

EXIT_FAILED, EXIT_USAGE, EXIT_NO_SERVER, EXIT_INTERRUPTED = 1, 2, 3, 130


def register(subparsers) -> None:
    from ..cli_args import add_input_mesh_argument, add_job_arguments

    serve = subparsers.add_parser("serve", help="run the backend that Blender, `submit` and `batch` talk to")
    serve.add_argument(
        "--bind",
        default=DEFAULT_BIND,
        help=f"ZeroMQ address (default {DEFAULT_BIND}); anything but loopback needs --keys",
    )
    serve.add_argument(
        "--store",
        type=Path,
        default=None,
        help="job store folder (default $DREAMSTILL_HOME/jobs or ~/.dreamstill/jobs)",
    )
    serve.add_argument("--keys", type=Path, default=None, help="CURVE key folder made by `dreamstill keys`")
    _serve_arguments(serve)
    serve.add_argument("--runner", default=DEFAULT_RUNNER, help=argparse.SUPPRESS)  # tests: a fake engine
    serve.set_defaults(func=cmd_serve)

    keys = subparsers.add_parser("keys", help="make CURVE keys for a server that listens beyond this machine")
    keys.add_argument("-o", "--output", type=Path, required=True, help="folder for the key files")
    keys.add_argument("--force", action="store_true", help="replace existing keys (old clients stop working)")
    keys.set_defaults(func=cmd_keys)

    submit = subparsers.add_parser("submit", help="run one job on a running server, with a progress bar")
    submit.add_argument("prompt")
    submit.add_argument("-o", "--output", type=Path, default=Path("asset.glb"), help="OUT.glb / .obj / .ply")
    _client_arguments(submit)
    add_job_arguments(submit)
    add_input_mesh_argument(submit)
    submit.set_defaults(func=cmd_submit)


def _serve_arguments(serve) -> None:
    """Workers, offered models, sharing, retention: the flags of `dreamstill serve` beyond address and keys."""
    workers = serve.add_mutually_exclusive_group()
    workers.add_argument(
        "--devices",
        default=None,
        help="one worker per device, comma-separated, e.g. cuda:0,cuda:1 (default: one worker, CUDA when present)",
    )
    workers.add_argument("--workers", type=int, default=None, help="N workers on the CPU, sharing its cores")
    serve.add_argument(
        "--prior",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="offer the diffusers folder PATH as prior NAME (repeatable); clients choose priors by name only",
    )
    serve.add_argument(
        "--generator",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="offer the generator checkpoint PATH as NAME (repeatable)",
    )
    serve.add_argument(
        "--models",
        type=Path,
        default=None,
        help="models folder: priors/<name>/ and generators/<name>[.pt] (default $DREAMSTILL_HOME/models if present)",
    )
    serve.add_argument("--allow-hub", action="store_true", help="let clients name Hugging Face hub ids as priors")
    serve.add_argument("--shared", action="store_true", help="every client sees, fetches and cancels every job")
    serve.add_argument("--keep-jobs", type=int, default=1000, help="finished jobs kept (oldest deleted; 0 = all)")
    serve.add_argument(
        "--keep-days", type=float, default=0.0, help="delete finished jobs older than D days (0 = never)"
    )


def serve_config(args):
    """(ServerConfig, ModelCatalog) from the parsed `dreamstill serve` flags; ValueError naming a bad flag."""
    from .config import ServerConfig
    from .models import ModelCatalog, default_models_dir, parse_named_path

    if args.workers is not None and not 1 <= args.workers <= 64:
        raise ValueError(f"--workers {args.workers}: use 1..64")
    if args.keep_jobs < 0 or args.keep_days < 0:
        raise ValueError("--keep-jobs and --keep-days must be >= 0 (0 = no limit)")
    if args.devices:
        devices = tuple(d.strip() for d in args.devices.split(",") if d.strip())
        bad = [d for d in devices if not (d in ("cpu", "auto") or re.fullmatch(r"cuda:\d+", d))]
        if bad or not devices:
            raise ValueError(f"--devices {args.devices!r}: list devices like cuda:0,cuda:1 or cpu")
    else:
        devices = ("cpu",) * args.workers if args.workers else ("auto",)
    config = ServerConfig(devices=devices, shared=args.shared, keep_jobs=args.keep_jobs, keep_days=args.keep_days)
    priors = dict(parse_named_path(text) for text in args.prior)
    generators = dict(parse_named_path(text) for text in args.generator)
    models = args.models if args.models is not None else default_models_dir()
    if args.models is not None and not args.models.is_dir():
        raise ValueError(f"--models {args.models}: no such folder")
    catalog = ModelCatalog.build(priors, generators, allow_hub=args.allow_hub, models_dir=models)
    return config, catalog


def _client_arguments(parser) -> None:
    parser.add_argument("--server", default=DEFAULT_BIND, help=f"server address (default {DEFAULT_BIND})")
    parser.add_argument(
        "--keys",
        type=Path,
        default=None,
        help="folder with server.public and client.public/client.secret (for a CURVE server)",
    )
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds of silence before giving up")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _err(command: str, text: str) -> None:
    print(f"dreamstill {command}: {text}", file=sys.stderr)


# ---------------------------------------------------------------------- serve / keys
def cmd_serve(args) -> int:
    import logging

    from .server import Server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config, catalog = serve_config(args)
        server = Server(
            args.bind, store_dir=args.store, runner=args.runner, keys_dir=args.keys, config=config, catalog=catalog
        )
    except (ValueError, OSError) as err:
        _err("serve", str(err))
        return EXIT_USAGE
    previous = signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
    try:
        server.serve_forever()
    except OSError as err:  # bind failed
        _err("serve", str(err))
        return EXIT_USAGE
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def cmd_keys(args) -> int:
    from .keys import make_keys

    try:
        files = make_keys(args.output, overwrite=args.force)
    except FileExistsError as err:
        _err("keys", str(err))
        return EXIT_USAGE
    print(f"server: dreamstill serve --bind tcp://0.0.0.0:5555 --keys {args.output}")
    print(
        f"client: give it {files['server.public']}, {files['client.public']} and {files['client.secret']} "
        f"(dreamstill submit --keys DIR, or the add-on's key fields)"
    )
    return 0


# ---------------------------------------------------------------------- submit
def _connect(args, command: str):
    from dreamstill.protocol.client import Client, load_client_keys

    keys = load_client_keys(args.keys) if args.keys else {}
    return Client(args.server, timeout_s=args.timeout, **keys)


def _follow(client, job_id: str, total: int, desc: str, quiet: bool, on_preview=None):
    """Stream a job's events into a console progress display (steps, then the finishing phases); return its
    terminal event. ``total`` is unused: each Progress event carries its own."""
    from dreamstill.protocol import Cancelled, Done, Failed, Preview, Progress

    from ..jobs.console import ConsoleProgress

    bar = ConsoleProgress(desc[:40], disable=quiet)
    try:
        for event in client.events(job_id):
            if isinstance(event, Progress):
                bar.update(event)
            elif isinstance(event, Preview) and on_preview is not None:
                on_preview(event)
            elif isinstance(event, (Done, Failed, Cancelled)):
                bar.close(done=isinstance(event, Done))
                return event
    finally:
        bar.close()
    raise RuntimeError("the event stream ended without done, failed or cancelled")


def _place_results(paths: list[Path], output: Path, fmt: str) -> list[Path]:
    """Move fetched files next to ``output``: the asset becomes ``output``, the others ``<stem>_<name>``;
    references inside .obj/.mtl files follow the renames."""
    main = next((p for p in paths if p.suffix.lower() == f".{fmt}"), None)
    if main is None:
        raise FileNotFoundError(f"the server sent no .{fmt} file (got {[p.name for p in paths]})")
    renames = {
        p.name: (output if p == main else output.with_name(f"{output.stem}_{p.name.removeprefix('asset_')}"))
        for p in paths
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    for path in paths:
        if path.suffix.lower() in (".obj", ".mtl"):
            text = path.read_text(errors="replace")
            for old, new in renames.items():
                if old != path.name:
                    text = re.sub(rf"(?<![\w.-]){re.escape(old)}(?![\w.-])", new.name, text)
            path.write_text(text)
    for path in paths:
        shutil.move(str(path), renames[path.name])
    if fmt in ("usda", "usdc"):  # asset_texture.png arrived as <stem>_texture.png
        from ..mesh.usd import relink_textures

        relink_textures(output)
    return [renames[p.name] for p in paths]


def _fetch_into(client, job_id: str, output: Path, fmt: str) -> list[Path]:
    staging = output.parent / f".{output.name}.{job_id}.part"
    try:
        return _place_results(client.fetch_result(job_id, staging), output, fmt)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _spec(args, prompt: str, output: Path | None, command: str):
    from ..cli_args import spec_from_args

    return spec_from_args(args, prompt, output)


def cmd_submit(args) -> int:
    from dreamstill.protocol import Cancelled, Done, JobSpecError, ProtocolError
    from dreamstill.protocol.client import ServerError, ServerUnavailable

    from ..cli_args import with_input_mesh

    output = args.output.expanduser().resolve()
    if output.is_dir():
        _err("submit", f"{output} is a folder; give a file name such as {output / 'asset.glb'}")
        return EXIT_USAGE
    try:
        spec, mesh = with_input_mesh(args, _spec(args, args.prompt, output, "submit"))
        client = _connect(args, "submit")
    except (JobSpecError, ValueError, FileNotFoundError) as err:
        _err("submit", str(err))
        return EXIT_USAGE
    job_id = None
    try:
        job_id = client.submit(spec, mesh=mesh)
        if not args.quiet:
            print(f"job {job_id} on {args.server}", file=sys.stderr)
        end = _follow(client, job_id, spec.steps, spec.prompt, args.quiet)
        if isinstance(end, Done):
            for path in _fetch_into(client, job_id, output, spec.output_format):
                print(path)
            return 0
        if isinstance(end, Cancelled):
            _err("submit", f"job {job_id} was cancelled at step {end.step}")
            return EXIT_INTERRUPTED
        _err("submit", f"{end.message} [{end.code}]")
        return EXIT_USAGE if end.code == "bad_spec" else EXIT_FAILED
    except (JobSpecError, ProtocolError) as err:  # a ProtocolError here: a mesh over the request limit
        _err("submit", str(err))
        return EXIT_USAGE
    except ServerUnavailable as err:
        _err("submit", str(err))
        return EXIT_NO_SERVER
    except ServerError as err:
        _err("submit", str(err))
        return EXIT_FAILED
    except KeyboardInterrupt:
        if job_id is not None:
            try:
                client.cancel(job_id)
                _err("submit", f"interrupted; job {job_id} cancelled")
            except Exception:
                _err("submit", f"interrupted; job {job_id} may still run on the server")
        return EXIT_INTERRUPTED
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m dreamstill.backend.server.commands serve|keys|submit ...`` (without the other commands)."""
    parser = argparse.ArgumentParser(prog="dreamstill")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
