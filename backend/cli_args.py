"""Job options shared by `dreamstill generate`, `submit` and `batch`: argparse flags <-> JobSpec."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dreamstill.protocol import FORMATS, METHODS, MODES, JobSpec


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """The JobSpec fields as flags; defaults come from JobSpec so there is one source of truth."""
    d = JobSpec(prompt="-")
    g = parser.add_argument_group("job")
    g.add_argument("--method", choices=METHODS, default=d.method, help="score-distillation method")
    g.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help=f"optimize one asset, or instant (amortized generator); default {d.mode}, or instant when "
        "--generator is given",
    )
    g.add_argument(
        "--prior", default=d.prior, help="'builtin' (offline toy-world prior), a local diffusers folder or a hub id"
    )
    g.add_argument(
        "--generator",
        default=None,
        help=f"amortized generator (folder or generator.pt; default {d.generator!r}); implies --mode instant",
    )
    g.add_argument("--steps", type=int, default=d.steps)
    g.add_argument("--resolution", type=int, default=d.resolution, help="render size; 0 = the prior's native size")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--guidance", type=float, default=d.guidance, help="CFG scale; 0 = the method's paper default")
    g.add_argument("--negative-prompt", default=d.negative_prompt)
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="views per step")
    g.add_argument("--lr", type=float, default=d.lr, help="0 = engine default")
    g.add_argument("--format", choices=FORMATS, default=None, help="output format (default: from the output suffix)")
    g.add_argument("--mesh-resolution", type=int, default=d.mesh_resolution)
    g.add_argument("--texture-size", type=int, default=d.texture_size, help="0 = vertex colours only")
    g.add_argument(
        "--max-faces",
        type=int,
        default=d.max_faces,
        help="decimate the mesh to this many faces (0 = the mode's default: all for optimize, 10,000 for instant)",
    )
    g.add_argument("--elevation-range", type=float, nargs=2, default=d.elevation_range, metavar=("LO", "HI"))
    g.add_argument("--distance-range", type=float, nargs=2, default=d.distance_range, metavar=("LO", "HI"))
    g.add_argument("--fov-range", type=float, nargs=2, default=d.fov_range, metavar=("LO", "HI"))
    g.add_argument("--preview-every", type=int, default=d.preview_every)
    g.add_argument("--mesh-every", type=int, default=d.mesh_every)
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    g.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="method-specific option, VALUE parsed as JSON when it can be (e.g. --option eta=0.1)",
    )


def parse_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--option {pair!r}: write it as KEY=VALUE, e.g. --option eta=0.1")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def format_for(output: Path | None, explicit: str | None) -> str:
    """--format wins; otherwise the output suffix decides; otherwise glb."""
    if explicit:
        return explicit
    if output is not None and output.suffix:
        suffix = output.suffix.lower().lstrip(".")
        if suffix not in FORMATS:
            raise SystemExit(
                f"output {output}: unknown suffix .{suffix}; use one of {', '.join('.' + f for f in FORMATS)}"
            )
        return suffix
    return "glb"


def spec_from_args(args: argparse.Namespace, prompt: str, output: Path | None = None) -> JobSpec:
    """A validated JobSpec from parsed flags (raises JobSpecError with the field to fix)."""
    return JobSpec(
        prompt=prompt,
        method=args.method,
        mode=args.mode or ("instant" if args.generator else JobSpec.mode),
        prior=args.prior,
        generator=args.generator or JobSpec.generator,
        steps=args.steps,
        resolution=args.resolution,
        seed=args.seed,
        guidance=args.guidance,
        negative_prompt=args.negative_prompt,
        batch_size=args.batch_size,
        lr=args.lr,
        output_format=format_for(output, args.format),
        mesh_resolution=args.mesh_resolution,
        texture_size=args.texture_size,
        max_faces=args.max_faces,
        elevation_range=tuple(args.elevation_range),
        distance_range=tuple(args.distance_range),
        fov_range=tuple(args.fov_range),
        preview_every=args.preview_every,
        mesh_every=args.mesh_every,
        checkpoint_every=args.checkpoint_every,
        options=parse_options(args.option),
    ).validate()
