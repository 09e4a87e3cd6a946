"""Instant mode: a trained generator turns a prompt into a mesh in one forward pass, then marching cubes."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from dreamstill.protocol import Done, Failed, JobEvent, JobSpec, Progress

from . import build_generator
from .config import CHECKPOINT_NAME, GeneratorTrainConfig

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"


class GeneratorNotFoundError(FileNotFoundError):
    pass


def resolve_checkpoint(name: str) -> Path:
    """'builtin' -> the generator shipped with the package; a folder -> its generator.pt; a file -> itself."""
    path = BUILTIN_DIR / CHECKPOINT_NAME if name == "builtin" else Path(name)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        hint = (
            (
                "the built-in generator is not installed in this copy; train one with "
                "`dreamstill train-generator -o DIR` and pass --generator DIR"
            )
            if name == "builtin"
            else "pass a folder written by `dreamstill train-generator` or its generator.pt"
        )
        raise GeneratorNotFoundError(f"generator {name!r}: {path} not found; {hint}")
    return path


@functools.lru_cache(maxsize=4)
def load_generator(name: str, device: str | None = None):
    """(generator module in eval mode, its prior, its training config); cached so a server loads it once."""
    from ..priors import load_prior

    state = torch.load(resolve_checkpoint(name), map_location="cpu", weights_only=True)
    config = GeneratorTrainConfig(**state["config"])
    prior = load_prior(config.prior, device=device)
    text_dim = prior.encode_text([""]).tokens.shape[-1]
    generator = build_generator(config.arch, text_dim, **config.arch_options)
    generator.load_state_dict(state["generator"])
    return generator.to(prior.device).eval(), prior, config


class InstantAsset:
    """The field of one prompt from a generator, with the AssetOptimizer's output methods (render, mesh)."""

    def __init__(self, spec: JobSpec):
        self.spec = spec
        generator, self.prior, self.config = load_generator(spec.generator)
        with torch.no_grad():
            self.field = generator(self.prior.encode_text([spec.prompt]))[0]
        from ..fields import Background

        self.background = Background().to(self.prior.device)
        self.device = self.prior.device
        self.warnings: list[str] = []

    @torch.no_grad()
    def render(self, cameras, height: int, width: int, shading: str = "albedo"):
        from ..render import render

        return render(
            self.field,
            cameras.to(self.device),
            height,
            width,
            self.background,
            shading=shading,
            num_samples=2 * self.config.num_samples,
        )

    def extract_mesh(self, resolution: int | None = None, texture_size: int | None = None):
        from ..engine.meshing import field_to_mesh

        size = self.spec.texture_size if texture_size is None else texture_size
        return field_to_mesh(
            self.field, self.device, resolution or self.spec.mesh_grid, size, self.warnings, self.spec.face_budget
        )


def run_instant(spec: JobSpec, output_path: Path, started: float) -> Iterator[JobEvent]:
    from ..engine.job import mesh_update, write_views
    from ..mesh import EmptyFieldError, export_mesh

    try:
        asset = InstantAsset(spec)
    except (GeneratorNotFoundError, FileNotFoundError) as err:
        yield Failed("no_generator", str(err))
        return
    yield Progress(1, 1, 0.0, 0.0, time.perf_counter() - started)
    try:
        mesh = asset.extract_mesh()
    except EmptyFieldError as err:
        yield Failed("empty_field", str(err))
        return
    yield mesh_update(mesh, 1, final=True)
    files = export_mesh(mesh, output_path, spec.output_format)
    files = [str(f) for f in (files if isinstance(files, (list, tuple)) else [files])]
    # a small contact sheet: at 128 px its 4 renders would take longer than everything else in an instant job
    files.append(str(write_views(asset, output_path.with_name(output_path.stem + "_views.png"), size=64)))
    yield Done(files=files, seconds=time.perf_counter() - started, metrics={"warnings": asset.warnings})
