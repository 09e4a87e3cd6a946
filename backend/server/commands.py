"""Headless commands: ``dreamstill serve | keys | submit | batch``.

    dreamstill serve [--bind tcp://127.0.0.1:5555] [--store DIR] [--keys DIR] [--devices cuda:0,cuda:1 | --workers N]
                     [--prior NAME=PATH] [--generator NAME=PATH] [--models DIR] [--allow-hub] [--shared]
                     [--keep-jobs N] [--keep-days D]
    dreamstill keys -o DIR
    dreamstill submit "a red cube" --server tcp://127.0.0.1:5555 -o cube.glb [job options as for generate]
    dreamstill batch prompts.txt -o out/ --server tcp://127.0.0.1:5555 [job options]

``batch`` reads one prompt a line (blank lines and ``#`` comments skipped), writes ``NNN_<prompt>.<format>`` per
prompt plus ``contact_sheet.png``, and resumes: a prompt whose output exists is skipped, and a job submitted by an
interrupted run is re-attached (its id is kept in ``.batch_jobs.json``) instead of being computed again.

Each subcommand's ``func`` takes the parsed args and returns an exit code: 0 done, 1 a job failed, 2 bad input,
3 no server, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import sys
from pathlib import Path

from .server import DEFAULT_BIND
from .worker import DEFAULT_RUNNER

EXIT_FAILED, EXIT_USAGE, EXIT_NO_SERVER, EXIT_INTERRUPTED = 1, 2, 3, 130


def register(subparsers) -> None:
    from ..cli_args import add_job_arguments

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
    submit.set_defaults(func=cmd_submit)

    batch = subparsers.add_parser("batch", help="run a list of prompts (one a line) on a running server")
    batch.add_argument("prompts", type=Path, help="text file, one prompt a line")
    batch.add_argument("-o", "--output", type=Path, required=True, help="folder for the results")
    _client_arguments(batch)
    add_job_arguments(batch)
    batch.set_defaults(func=cmd_batch)


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
    """Stream a job's events into a tqdm bar; return its terminal event."""
    from tqdm import tqdm

    from dreamstill.protocol import Cancelled, Done, Failed, Preview, Progress

    bar = tqdm(total=total, unit="step", desc=desc[:40], disable=quiet, leave=False)
    try:
        for event in client.events(job_id):
            if isinstance(event, Progress):
                bar.total = event.total
                bar.n = event.step
                bar.set_postfix(loss=f"{event.loss:.4g}", refresh=False)
                bar.refresh()
            elif isinstance(event, Preview) and on_preview is not None:
                on_preview(event)
            elif isinstance(event, (Done, Failed, Cancelled)):
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
    from dreamstill.protocol import Cancelled, Done, JobSpecError
    from dreamstill.protocol.client import ServerError, ServerUnavailable

    output = args.output.expanduser().resolve()
    if output.is_dir():
        _err("submit", f"{output} is a folder; give a file name such as {output / 'asset.glb'}")
        return EXIT_USAGE
    try:
        spec = _spec(args, args.prompt, output, "submit")
        client = _connect(args, "submit")
    except (JobSpecError, ValueError) as err:
        _err("submit", str(err))
        return EXIT_USAGE
    job_id = None
    try:
        job_id = client.submit(spec)
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
    except JobSpecError as err:
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


# ---------------------------------------------------------------------- batch
def read_prompts(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def output_name(index: int, prompt: str, fmt: str) -> str:
    """``NNN_words_of_the_prompt.fmt``: sortable, readable, safe on every file system."""
    slug = re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")[:48].rstrip("_") or "prompt"
    return f"{index:03d}_{slug}.{fmt}"


def contact_sheet(tiles: list[tuple[str, Path | None]], path: Path, size: int = 160) -> Path:
    """A grid of one image per prompt (its views or last preview; grey when none), captioned by file name."""
    from PIL import Image, ImageDraw

    cols = max(1, math.ceil(math.sqrt(len(tiles))))
    rows = max(1, math.ceil(len(tiles) / cols))
    caption = 14
    sheet = Image.new("RGB", (cols * size, rows * (size + caption)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (label, image_path) in enumerate(tiles):
        x, y = (i % cols) * size, (i // cols) * (size + caption)
        tile = Image.new("RGB", (size, size), (128, 128, 128))
        if image_path is not None and image_path.exists():
            with Image.open(image_path) as img:
                img = img.convert("RGBA")
                img.thumbnail((size, size))
                tile.paste(img, ((size - img.width) // 2, (size - img.height) // 2), img)
        sheet.paste(tile, (x, y))
        draw.text((x + 2, y + size + 1), label[: size // 6], fill=(0, 0, 0))
    sheet.save(path)
    return path


def cmd_batch(args) -> int:
    from PIL import Image

    from dreamstill.protocol import Cancelled, Done, JobSpecError
    from dreamstill.protocol.client import ServerError, ServerUnavailable

    try:
        prompts = read_prompts(args.prompts)
    except OSError as err:
        _err("batch", f"cannot read {args.prompts}: {err}")
        return EXIT_USAGE
    if not prompts:
        _err("batch", f"{args.prompts} has no prompts (one a line; # starts a comment)")
        return EXIT_USAGE
    out_dir = args.output.expanduser().resolve()
    (out_dir / "previews").mkdir(parents=True, exist_ok=True)
    fmt = args.format or "glb"
    items = []
    try:
        for i, prompt in enumerate(prompts, 1):
            path = out_dir / output_name(i, prompt, fmt)
            items.append((prompt, path, _spec(args, prompt, path, "batch")))
    except JobSpecError as err:
        _err("batch", f"prompt {len(items) + 1}: {err}")
        return EXIT_USAGE
    state_file = out_dir / ".batch_jobs.json"
    try:
        known = json.loads(state_file.read_text()) if state_file.exists() else {}
    except ValueError:
        known = {}

    def save_state():
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, indent=1))
        os.replace(tmp, state_file)

    todo = [(prompt, path, spec) for prompt, path, spec in items if not path.exists()]
    if not args.quiet:
        print(f"{len(items) - len(todo)} of {len(items)} already done; {len(todo)} to run", file=sys.stderr)
    failures = 0
    client = None
    try:
        client = _connect(args, "batch")
        jobs = []
        for prompt, path, spec in todo:  # queue them all: the server runs them one after another
            job_id = known.get(path.name)
            if job_id is not None:
                try:
                    state = client.attach(job_id)["state"]
                except ServerError:
                    state = "unknown"
                if state in ("failed", "cancelled", "unknown"):
                    job_id = None
            if job_id is None:
                job_id = client.submit(spec)
                known[path.name] = job_id
                save_state()
            jobs.append((prompt, path, spec, job_id))
        for n, (prompt, path, spec, job_id) in enumerate(jobs, 1):
            preview_path = out_dir / "previews" / f"{path.stem}.png"

            def keep_preview(event, preview_path=preview_path):
                Image.fromarray(event.rgba, "RGBA").save(preview_path)

            end = _follow(client, job_id, spec.steps, f"[{n}/{len(jobs)}] {prompt}", args.quiet, keep_preview)
            if isinstance(end, Done):
                placed = _fetch_into(client, job_id, path, spec.output_format)
                if not args.quiet:
                    print(f"[{n}/{len(jobs)}] {placed[0]}", file=sys.stderr)
            else:
                failures += 1
                why = f"cancelled at step {end.step}" if isinstance(end, Cancelled) else f"{end.message} [{end.code}]"
                _err("batch", f"{prompt!r}: {why}")
    except ServerUnavailable as err:
        _err("batch", f"{err} (run the same command again to resume)")
        return EXIT_NO_SERVER
    except KeyboardInterrupt:
        _err("batch", "interrupted; run the same command again to resume (finished prompts are kept)")
        return EXIT_INTERRUPTED
    finally:
        if client is not None:
            client.close()
        tiles = []
        for _prompt, path, _ in items:
            if path.exists():
                views = path.with_name(f"{path.stem}_views.png")
                preview = out_dir / "previews" / f"{path.stem}.png"
                tiles.append((path.stem, views if views.exists() else preview if preview.exists() else None))
        if tiles:
            contact_sheet(tiles, out_dir / "contact_sheet.png")
    missing = sum(not path.exists() for _, path, _ in items)
    if not args.quiet:
        print(
            f"{len(items) - missing} of {len(items)} done; contact sheet {out_dir / 'contact_sheet.png'}",
            file=sys.stderr,
        )
    return EXIT_FAILED if missing or failures else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m dreamstill.backend.server.commands serve|keys|submit|batch ...`` (without the other commands)."""
    parser = argparse.ArgumentParser(prog="dreamstill")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
