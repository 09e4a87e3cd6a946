"""JobSpec: everything needed to reproduce one asset.

Pure Python (no numpy, torch or bpy) so that Blender's own Python can build and check one. A JobSpec plus the
prior's weights reproduces its asset exactly: every random choice in the backend is seeded from ``seed``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

METHODS = ("sds", "csd", "vsd", "l2vsd", "ssd", "fsd", "asd")
MODES = ("optimize", "instant")
FORMATS = ("glb", "obj", "ply")

# Limits checked on both sides of the wire (client before sending, server before accepting).
MAX_PROMPT_CHARS = 1000
MAX_STEPS = 100_000
MIN_RESOLUTION, MAX_RESOLUTION = 16, 1024
MAX_MESH_RESOLUTION = 512
MESH_RESOLUTION_BY_MODE = {"optimize": 128, "instant": 64}  # JobSpec.mesh_resolution = 0
MAX_TEXTURE_SIZE = 4096
# JobSpec.max_faces = 0: an instant job's mesh is decimated to 10,000 faces before its texture bake (the bake grows
# with the mesh and would dominate the job); an optimized asset keeps every marching-cubes face.
MAX_FACES_BY_MODE = {"optimize": None, "instant": 10_000}
MIN_MAX_FACES, MAX_MAX_FACES = 100, 10_000_000


class JobSpecError(ValueError):
    """A JobSpec field is out of range; the message names the field and what to change."""


@dataclass
class JobSpec:
    """One text-to-3D job.

    ``resolution`` is the rendered image size fed to the prior; 0 means the prior's native size (32 for the
    built-in prior, 64 latents = 512 px for Stable Diffusion renders at 64 with a VAE prior).
    Camera ranges follow threestudio's random-camera data: elevation and fov in degrees, distance in scene units.
    """

    prompt: str
    method: str = "sds"
    mode: str = "optimize"
    steps: int = 400  # enough for the built-in prior (about 3-5 min on a 2-core CPU); SD wants 2,000-10,000
    resolution: int = 0
    seed: int = 0
    guidance: float = 0.0  # 0 = the method's paper default (e.g. 100 for SDS, 7.5 for VSD/ASD)
    prior: str = "builtin"
    generator: str = "builtin"  # amortized generator for mode=instant
    negative_prompt: str = ""
    elevation_range: tuple[float, float] = (-10.0, 45.0)
    azimuth_range: tuple[float, float] = (-180.0, 180.0)
    distance_range: tuple[float, float] = (2.5, 3.0)
    fov_range: tuple[float, float] = (40.0, 50.0)
    batch_size: int = 4  # views per optimization step
    lr: float = 0.0  # 0 = the engine's default
    output_format: str = "glb"
    mesh_resolution: int = 0  # marching-cubes grid; 0 = the mode's default (MESH_RESOLUTION_BY_MODE)
    texture_size: int = 512  # 0 = vertex colours only
    max_faces: int = 0  # decimate the mesh to this many faces; 0 = the mode's default (MAX_FACES_BY_MODE)
    preview_every: int = 50
    mesh_every: int = 0  # 0 = only the final mesh
    checkpoint_every: int = 0
    options: dict = field(default_factory=dict)  # method-specific overrides (e.g. {"eta": 0.1} for ASD)

    @property
    def mesh_grid(self) -> int:
        """The marching-cubes resolution: mesh_resolution, or the mode's default when it is 0 (an instant job's
        mesh is 64^3: unwrap and texture bake grow with the mesh and would dominate an instant job at 128^3)."""
        return self.mesh_resolution or MESH_RESOLUTION_BY_MODE[self.mode]

    @property
    def face_budget(self) -> int | None:
        """The most faces the final mesh keeps (quadric decimation above it): max_faces, or the mode's default when
        it is 0 (None = every marching-cubes face)."""
        return self.max_faces or MAX_FACES_BY_MODE[self.mode]

    def validate(self) -> JobSpec:
        """Raise JobSpecError naming the first bad field; return self when all is well."""

        def bad(name, why):
            raise JobSpecError(f"JobSpec.{name}: {why}")

        if not isinstance(self.prompt, str) or not self.prompt.strip():
            bad("prompt", "must be a non-empty text prompt")
        if len(self.prompt) > MAX_PROMPT_CHARS:
            bad("prompt", f"is {len(self.prompt)} characters; shorten it to at most {MAX_PROMPT_CHARS}")
        if self.method not in METHODS:
            bad("method", f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.mode not in MODES:
            bad("mode", f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            bad("steps", f"is {self.steps!r}; use a whole number from 1 to {MAX_STEPS}")
        if self.resolution != 0 and not MIN_RESOLUTION <= self.resolution <= MAX_RESOLUTION:
            bad("resolution", f"is {self.resolution}; use 0 (prior default) or {MIN_RESOLUTION}..{MAX_RESOLUTION}")
        if not isinstance(self.seed, int) or self.seed < 0:
            bad("seed", f"is {self.seed!r}; use a whole number >= 0")
        if self.guidance < 0:
            bad("guidance", f"is {self.guidance}; use 0 (method default) or a positive scale")
        for name in ("elevation_range", "azimuth_range", "distance_range", "fov_range"):
            lo, hi = getattr(self, name)
            if lo > hi:
                bad(name, f"is ({lo}, {hi}); the first number must not exceed the second")
        if not -90 <= self.elevation_range[0] <= self.elevation_range[1] <= 90:
            bad("elevation_range", "must lie within -90..90 degrees")
        if self.distance_range[0] <= 0:
            bad("distance_range", "must be positive")
        if not 1 <= self.fov_range[0] <= self.fov_range[1] < 180:
            bad("fov_range", "must lie within 1..179 degrees")
        if not 1 <= self.batch_size <= 64:
            bad("batch_size", f"is {self.batch_size}; use 1..64 views per step")
        if self.lr < 0:
            bad("lr", "must be >= 0 (0 = default)")
        if self.output_format not in FORMATS:
            bad("output_format", f"unknown format {self.output_format!r}; choose one of {', '.join(FORMATS)}")
        if self.mesh_resolution != 0 and not 16 <= self.mesh_resolution <= MAX_MESH_RESOLUTION:
            bad(
                "mesh_resolution", f"is {self.mesh_resolution}; use 0 (the mode's default) or 16..{MAX_MESH_RESOLUTION}"
            )
        if self.max_faces != 0 and not MIN_MAX_FACES <= self.max_faces <= MAX_MAX_FACES:
            bad("max_faces", f"is {self.max_faces}; use 0 (the mode's default) or {MIN_MAX_FACES}..{MAX_MAX_FACES}")
        if self.texture_size != 0 and not 16 <= self.texture_size <= MAX_TEXTURE_SIZE:
            bad("texture_size", f"is {self.texture_size}; use 0 (vertex colours) or 16..{MAX_TEXTURE_SIZE}")
        for name in ("preview_every", "mesh_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0 (0 = never)")
        if not isinstance(self.options, dict):
            bad("options", "must be a dict of method-specific settings")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> JobSpec:
        """Build from a plain dict (e.g. decoded JSON); unknown keys are an error that names them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise JobSpecError(f"JobSpec: unknown field(s) {unknown}; known fields are {sorted(names)}")
        if "prompt" not in data:
            raise JobSpecError("JobSpec.prompt: missing")
        kwargs = dict(data)
        for name in ("elevation_range", "azimuth_range", "distance_range", "fov_range"):
            if name in kwargs:
                value = kwargs[name]
                if not isinstance(value, (list, tuple)) or len(value) != 2:
                    raise JobSpecError(f"JobSpec.{name}: must be a pair (low, high)")
                kwargs[name] = (float(value[0]), float(value[1]))
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        return cls.from_dict(json.loads(text))
