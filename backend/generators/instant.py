"""Instant mode's asset: a trained generator turns a prompt into a field in one forward pass (jobs.instant_job runs
it as a job)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from dreamstill.protocol import JobSpec

from ..engine.asset import FieldAsset
from ..fields import Background, OccupancyGrid
from ..mesh.texture import xatlas_available
from ..mesh.unwrap_worker import prestart as prestart_unwrap
from ..render import RenderSettings
from . import build_generator
from .config import CHECKPOINT_NAME, GeneratorTrainConfig

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
OCCUPANCY_RESOLUTION = 32  # cells per side of an instant field's occupancy grid (as a per-prompt field's)


class GeneratorNotFoundError(FileNotFoundError):
    pass


# the generators shipped with the package: "builtin" (an SDF generator: clean meshes) and "builtin-density" (the
# density generator it was initialised from; --init-sdf-from's default teacher)
BUILTIN_GENERATORS = {"builtin": CHECKPOINT_NAME, "builtin-density": "density_generator.pt"}


def resolve_checkpoint(name: str) -> Path:
    """A shipped generator's name (BUILTIN_GENERATORS) -> its file; a folder -> its generator.pt; a file -> itself."""
    path = BUILTIN_DIR / BUILTIN_GENERATORS[name] if name in BUILTIN_GENERATORS else Path(name)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        hint = (
            (
                "the built-in generator is not installed in this copy; train one with "
                "`dreamstill train-generator -o DIR` and pass --generator DIR"
            )
            if name in BUILTIN_GENERATORS
            else "pass a folder written by `dreamstill train-generator` or its generator.pt"
        )
        raise GeneratorNotFoundError(f"generator {name!r}: {path} not found; {hint}")
    return path


def generator_config(name: str) -> GeneratorTrainConfig:
    """The training config of generator ``name`` (its arch, prior, corpus...), without building it or its prior."""
    return GeneratorTrainConfig(**torch.load(resolve_checkpoint(name), map_location="cpu", weights_only=True)["config"])


@functools.lru_cache(maxsize=4)
def load_generator(name: str, device: str | None = None):
    """(generator module in eval mode, its prior, its training config); cached so a server loads it once.

    Raises GeneratorNotFoundError without the checkpoint, priors.PriorNotFoundError without its prior's weights."""
    from ..priors import load_prior

    state = torch.load(resolve_checkpoint(name), map_location="cpu", weights_only=True)
    config = GeneratorTrainConfig(**state["config"])
    prior = load_prior(config.prior, device=device)
    text_dim = prior.encode_text([""]).tokens.shape[-1]
    generator = build_generator(config.arch, text_dim, **config.arch_options)
    generator.load_state_dict(state["generator"])
    return generator.to(prior.device).eval(), prior, config


def measured_occupancy(field, device, resolution: int = OCCUPANCY_RESOLUTION) -> OccupancyGrid:
    """The field's occupancy grid after one refresh (fields.occupancy: cells whose jittered centre has density above
    0.1, dilated by a cell), never refreshed again: the field does not change. Renders then skip empty space as a
    per-prompt field's do; resolution^3 density evaluations (32^3: ~10 ms on a CPU)."""
    grid = OccupancyGrid(field.bound, resolution, update_every=0).to(device)
    grid.update(field.density)
    return grid


class InstantAsset(FieldAsset):
    """The field of one prompt from a trained generator, as an Asset (engine.asset): one forward pass, then the
    same renders and meshes as a per-prompt asset (a surface-stage asset's for an SDF generator). Output renders
    take twice the training samples per ray and skip empty space (``measured_occupancy``)."""

    def __init__(self, spec: JobSpec):
        self.spec = spec
        if spec.bake_size and xatlas_available():
            prestart_unwrap()  # the unwrap child's start (~0.2 s) overlaps the forward pass and marching cubes
        generator, self.prior, self.config = load_generator(spec.generator)
        with torch.no_grad():
            self.fields = generator(self.prior.encode_text([spec.prompt]))  # a batch of one (generators.refine)
            field = self.fields[0]
            field.occupancy = measured_occupancy(field, self.prior.device)
        self.sdf = field.geometry == "sdf"
        # an SDF's VolSDF surface is thin: importance samples as the surface stage's outputs (engine/surface.py)
        samples = 2 * self.config.num_samples
        output_settings = RenderSettings(num_samples=samples, num_importance=samples if self.sdf else 0)
        super().__init__(field, Background().to(self.prior.device), self.prior.device, output_settings)

    def mesh_phases(self, resolution: int, texture_size: int = 0, max_faces: int | None = None):
        """An SDF generator's field meshes as the surface stage's asset does (engine.surface_mesh: the zero level of
        the repaired distance, one part per object of the prompt, watertight); a density's as FieldAsset's."""
        if not self.sdf:
            return super().mesh_phases(resolution, texture_size, max_faces)
        from ..engine.surface import objects_apart_in_prompt, objects_in_prompt
        from ..engine.surface_mesh import SurfaceMeshSettings, surface_mesh_phases

        prompt = self.spec.prompt
        # flat faces are not snapped: its half second would double instant mode's (a refinement's mesh has it)
        settings = SurfaceMeshSettings(planes=None).for_objects(
            objects_in_prompt(prompt), objects_apart_in_prompt(prompt)
        )
        return surface_mesh_phases(
            self.field, self.device, resolution, texture_size, max_faces, settings, self.warnings
        )
