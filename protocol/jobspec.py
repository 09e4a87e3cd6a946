"""JobSpec: everything needed to reproduce one asset, declared once.

Each field carries its :class:`~dreamstill.protocol.schema.Setting`: label, help with units, range or choices, and
group. From these alone come the validation (here, once, when a spec is made), the command-line flags of
``generate``/``submit``/``batch`` (backend/cli_args.py), the Blender panel's properties and their copy to and from a
spec (blender_addon/properties.py), and the server's status fields (:meth:`JobSpec.summary`). Adding a job setting is
one ``setting(...)`` line below, plus the code that uses it.

Pure Python (no numpy, torch or bpy) so that Blender's own Python can build and check one. A JobSpec plus the
prior's weights reproduces its asset exactly: every random choice in the backend is seeded from ``seed``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from .schema import JobSpecError, SpecField, check_value, schema_of, setting

METHODS = ("sds", "csd", "vsd", "l2vsd", "ssd", "fsd", "asd")
METHOD_CHOICES = (
    ("sds", "SDS", "Score Distillation Sampling (DreamFusion)"),
    ("csd", "CSD", "Classifier Score Distillation"),
    ("vsd", "VSD", "Variational Score Distillation (ProlificDreamer)"),
    ("l2vsd", "L2-VSD", "VSD with a linearized lookahead"),
    ("ssd", "SSD", "Stable Score Distillation"),
    ("fsd", "FSD", "Flow Score Distillation"),
    ("asd", "ASD", "Asynchronous Score Distillation (ScaleDreamer)"),
)
MODES = ("optimize", "instant", "texture", "refine")
MODE_CHOICES = (
    ("optimize", "Optimize", "Optimize one asset by score distillation (minutes)"),
    ("instant", "Instant", "Ask the backend's amortized generator (under a second, when the backend has one)"),
    ("texture", "Texture", "Paint a given mesh: its geometry is kept exactly, only its appearance is distilled"),
    ("refine", "Refine", "Start from a given mesh's shape and refine shape and appearance by distillation"),
)
FORMAT_CHOICES = (
    ("glb", "glTF binary", "One .glb file with its texture inside"),
    ("obj", "OBJ", "Wavefront .obj with .mtl and texture PNG"),
    ("ply", "PLY", "Stanford .ply with vertex colours (a texture is sampled at the vertices)"),
    ("usdc", "USD (binary)", "USD crate file with a UsdPreviewSurface material and its texture PNG beside it"),
    ("usda", "USD (text)", "USD text file with a UsdPreviewSurface material and its texture PNG beside it"),
    ("usdz", "USDZ", "One .usdz package with its texture inside (needs usd-core: pip install dreamstill[usd])"),
)
FORMATS = tuple(name for name, _, _ in FORMAT_CHOICES)
# Groups in the order the CLI help and the panel show them: name -> title.
GROUPS = {"job": "Job", "camera": "Camera", "output": "Output", "advanced": "Advanced"}

# Limits checked on both sides of the wire (client before sending, server before accepting).
MAX_PROMPT_CHARS = 1000
MAX_NAME_CHARS = 1024  # prior and generator: a name, a hub id or a path
MAX_STEPS = 100_000
MIN_RESOLUTION, MAX_RESOLUTION = 16, 1024
MAX_MESH_RESOLUTION = 512
# JobSpec.mesh_resolution = 0 (texture mode keeps the input mesh and meshes nothing)
MESH_RESOLUTION_BY_MODE = {"optimize": 128, "instant": 64, "texture": 128, "refine": 128}
MAX_TEXTURE_SIZE = 4096
# JobSpec.max_faces = 0: a mesh is decimated before its texture bake, to 20,000 faces for an optimized or a
# refined asset (light enough for a game engine) and 5,000 for an instant draft (the bake grows with the mesh and
# would dominate the job); a textured mesh is never decimated (its geometry is the input's). An instant job with
# refine_steps ends in a per-prompt asset and gets optimize's budget.
MAX_FACES_BY_MODE = {"optimize": 20_000, "instant": 5_000, "texture": None, "refine": 20_000}
# An instant draft's texture is baked at most this size: a generator's colours carry no finer detail (the built-in
# triplane's planes are 16^2 texels over the whole scene, ScaleDreamer's 64^2), and a job took 0.94 s at 1024 px and
# 10,000 faces against 0.49 s at 512 px and 5,000 (docs/results/instant_latency_cpu.md).
INSTANT_TEXTURE_SIZE = 512
MIN_MAX_FACES, MAX_MAX_FACES = 100, 10_000_000
# The surface stage's share of JobSpec.steps when geometry_steps / texture_steps are 0 (the rest is the density stage).
GEOMETRY_SHARE, GEOMETRY_SHARE_TEXT = 3 / 8, "3/8"
TEXTURE_SHARE, TEXTURE_SHARE_TEXT = 1 / 8, "1/8"
OPTIMIZE_STAGE = "optimize"  # the one stage's phase name without the surface stage (protocol.events.OPTIMIZE)
MESH_STAGE = {"texture": "texture", "refine": "geometry"}  # the one stage of a job on a given mesh, by mode
MAX_SEED = 2**31 - 1  # a Blender IntProperty holds it
MAX_OPTIONS_DEPTH = 16  # options nest at most this deep (a schedule [start, end, step] is depth 2)
MAX_OPTIONS_BYTES = 16_384  # options as compact JSON


@dataclass
class JobSpec:
    """One text-to-3D job; validated when it is made (construction, ``from_dict``, ``from_json``, ``replace``) and
    whenever a field is assigned. Camera ranges follow threestudio's random-camera data."""

    prompt: str = setting(
        label="Prompt",
        help="text to turn into a 3D asset",
        group="job",
        max_chars=MAX_PROMPT_CHARS,
        required=True,
        positional=True,
        status=True,
    )
    method: str = setting(
        "sds", label="Method", help="score-distillation method", group="job", choices=METHOD_CHOICES, status=True
    )
    mode: str = setting(
        "optimize",
        label="Mode",
        help="how the asset is made (texture and refine work on a mesh sent with the job)",
        group="job",
        choices=MODE_CHOICES,
        status=True,
    )
    keep_shape: float = setting(
        0.5,
        label="Keep Shape",
        help="refine mode: how strongly the surface is held to the input mesh, from 0 (free to move where the "
        "prompt pulls it) to 1 (held within about a hundredth of the asset's size)",
        group="job",
        minimum=0.0,
        maximum=1.0,
    )
    steps: int = setting(
        400,
        label="Steps",
        help="optimization steps in all, over every stage (with the surface stage: density, then geometry, then "
        "texture steps); 400 suit the built-in prior (about 3-5 min on a 2-core CPU), Stable Diffusion wants "
        "2,000-10,000",
        group="job",
        minimum=1,
        maximum=MAX_STEPS,
        soft_maximum=20_000,
        status=True,
    )
    surface: bool = setting(
        True,
        label="Surface Stage",
        help="after the density stage, refine the asset as a signed-distance surface (geometry, then texture): "
        "smooth, watertight meshes; off: the density field alone",
        group="job",
    )
    geometry_steps: int = setting(
        0,
        label="Geometry Steps",
        help="steps of the surface stage that refine the shape (lit, partly untextured renders), out of Steps",
        minimum=1,
        maximum=MAX_STEPS,
        zero_means=f"{GEOMETRY_SHARE_TEXT} of Steps",
    )
    texture_steps: int = setting(
        0,
        label="Texture Steps",
        help="last steps of the surface stage, with the shape frozen: only the colours learn, out of Steps",
        minimum=1,
        maximum=MAX_STEPS,
        zero_means=f"{TEXTURE_SHARE_TEXT} of Steps",
    )
    resolution: int = setting(
        0,
        label="Resolution",
        help="rendered image size fed to the prior, in pixels (latents for a VAE prior: 64 = 512 px)",
        group="job",
        minimum=MIN_RESOLUTION,
        maximum=MAX_RESOLUTION,
        zero_means="the prior's native size: 32 for the built-in prior",
    )
    seed: int = setting(
        0,
        label="Seed",
        help="random seed: the same seed and settings give the same asset",
        group="job",
        minimum=0,
        maximum=MAX_SEED,
    )
    guidance: float = setting(
        0.0,
        label="Guidance",
        help="classifier-free guidance scale s",
        group="job",
        minimum=0.0,
        soft_maximum=200.0,
        zero_means="the method's paper default, e.g. 100 for SDS, 7.5 for VSD and ASD",
    )
    prior: str = setting(
        "builtin",
        label="Prior",
        help="diffusion prior: 'builtin' (the offline toy-world prior), a local diffusers folder or a hub id",
        group="advanced",
        max_chars=MAX_NAME_CHARS,
        required=True,
    )
    generator: str = setting(
        "builtin",
        label="Generator",
        help="amortized generator for mode instant: 'builtin', a run folder or a generator.pt (giving it on the "
        "command line implies --mode instant)",
        group="advanced",
        max_chars=MAX_NAME_CHARS,
        required=True,
        implies=(("mode", "instant"),),
    )
    refine_steps: int = setting(
        0,
        label="Refine Steps",
        help="mode instant: per-prompt distillation steps (the job's method, seed and cameras) that continue from the "
        "generator's asset, split into stages as Steps are (the surface stage included unless it is off; an SDF "
        "generator's draft: geometry, then a quarter of the steps texture); a draft "
        "mesh comes first, then a step bar; ~100 steps are a fraction of a per-prompt run (giving it on the command "
        "line implies --mode instant)",
        group="job",
        minimum=1,
        maximum=MAX_STEPS,
        soft_maximum=20_000,
        zero_means="the generator's asset as it is",
        implies=(("mode", "instant"),),
    )
    negative_prompt: str = setting(
        "", label="Negative", help="what the asset should not look like", group="job", max_chars=MAX_PROMPT_CHARS
    )
    elevation_range: tuple[float, float] = setting(
        (-10.0, 45.0),
        label="Elevation",
        help="camera elevation range in degrees above the ground plane",
        group="camera",
        minimum=-90.0,
        maximum=90.0,
    )
    azimuth_range: tuple[float, float] = setting(
        (-180.0, 180.0),
        label="Azimuth",
        help="camera azimuth range in degrees around the vertical axis (0 = the front, seen from +X)",
        group="camera",
        minimum=-360.0,
        maximum=360.0,
    )
    distance_range: tuple[float, float] = setting(
        (2.5, 3.0),
        label="Distance",
        help="camera distance from the origin in scene units (metres); the asset fills about a unit cube",
        group="camera",
        minimum=0.01,
        maximum=100.0,
        soft_maximum=10.0,
    )
    fov_range: tuple[float, float] = setting(
        (40.0, 50.0),
        label="FOV",
        help="camera vertical field of view range in degrees",
        group="camera",
        minimum=1.0,
        maximum=179.0,
    )
    batch_size: int = setting(
        4, label="Views per Step", help="camera views rendered per optimization step", minimum=1, maximum=64
    )
    lr: float = setting(
        0.0,
        label="Learning Rate",
        help="Adam learning rate of the 3D field",
        minimum=0.0,
        maximum=10.0,
        zero_means="the engine's default, 0.01",
    )
    output_format: str = setting(
        "glb",
        label="Format",
        help="result file format (the command line's default comes from the output file's suffix)",
        group="output",
        choices=FORMAT_CHOICES,
        flag="--format",
    )
    mesh_resolution: int = setting(
        0,
        label="Mesh Resolution",
        help="marching-cubes grid size per axis",
        group="output",
        minimum=16,
        maximum=MAX_MESH_RESOLUTION,
        zero_means="the mode's default: 128 optimize and refine, 64 instant (texture keeps the input mesh)",
    )
    texture_size: int = setting(
        1024,
        label="Texture Size",
        help="baked texture size in pixels (an instant draft: at most 512, its generator's colours have no finer "
        "detail)",
        group="output",
        minimum=16,
        maximum=MAX_TEXTURE_SIZE,
        zero_means="vertex colours only",
    )
    max_faces: int = setting(
        0,
        label="Max Faces",
        help="decimate the final mesh to at most this many faces",
        group="output",
        minimum=MIN_MAX_FACES,
        maximum=MAX_MAX_FACES,
        soft_maximum=500_000,
        zero_means="the mode's default: 20,000 for optimize and refine, 5,000 for an instant draft (20,000 with "
        "Refine Steps); texture keeps the input mesh's faces",
    )
    preview_every: int = setting(
        50,
        label="Preview Every",
        help="send a preview image every N steps",
        minimum=1,
        maximum=MAX_STEPS,
        zero_means="never",
    )
    mesh_every: int = setting(
        100,
        label="Mesh Every",
        help="send an intermediate mesh (64^3 grid, no texture) every N steps, for live viewers",
        minimum=1,
        maximum=MAX_STEPS,
        zero_means="only the final mesh",
    )
    checkpoint_every: int = setting(
        0,
        label="Checkpoint Every",
        help="save a checkpoint every N steps (to resume after a stop)",
        minimum=1,
        maximum=MAX_STEPS,
        zero_means="only when cancelled",
    )
    options: dict = setting(
        default_factory=dict,
        label="Options",
        help="method-specific settings (the method's Config fields)",
        max_depth=MAX_OPTIONS_DEPTH,
        max_bytes=MAX_OPTIONS_BYTES,
        example='{"shift_ratio": 0.1}',
        flag="--option",
    )

    def __setattr__(self, name: str, value) -> None:
        """Every field is checked (and normalised) as it is set, by the dataclass ``__init__`` and afterwards."""
        field = schema_of(type(self)).get(name)
        if field is not None:
            value = check_value(field, value, type(self).__name__)
        object.__setattr__(self, name, value)

    def __post_init__(self) -> None:
        self.stage_plan  # noqa: B018 -- the stages must fit in the steps (raises JobSpecError otherwise)

    # --- derived values ------------------------------------------------------------------------------------
    @property
    def stage_plan(self) -> tuple[tuple[str, int], ...]:
        """The optimization stages in order, as (phase name, steps), adding up to ``steps``.

        Without the surface stage: (("optimize", steps),). With it: ("density", d), ("geometry", g), ("texture", x)
        with g = geometry_steps or 3/8 of steps (at least 1 from 2 steps on), x = texture_steps or 1/8 of steps, and
        d = steps - g - x >= 1; a stage of 0 steps is left out (a 1-step job has no surface stage). Raises
        JobSpecError when the stages leave the density stage no step. A job on a given mesh works on a signed distance
        field from its first step, in one stage whatever ``surface`` says: (("texture", steps),) in texture mode (the
        shape frozen, only the colours learn), (("geometry", steps),) in refine mode (shape and colours)."""
        if self.mode in MESH_STAGE:
            return ((MESH_STAGE[self.mode], self.steps),)
        if not self.surface:
            return ((OPTIMIZE_STAGE, self.steps),)
        steps = self.steps
        geometry = self.geometry_steps or (max(1, int(steps * GEOMETRY_SHARE)) if steps >= 2 else 0)
        texture = self.texture_steps or int(steps * TEXTURE_SHARE)
        density = steps - geometry - texture
        if density < 1:
            raise JobSpecError(
                f"{type(self).__name__}.steps: is {steps}, and geometry_steps {geometry} + texture_steps {texture} "
                f"leave the density stage no step; raise steps above {geometry + texture}, lower geometry_steps or "
                "texture_steps (0 = their share of steps), or turn the surface stage off"
            )
        stages = (("density", density), ("geometry", geometry), ("texture", texture))
        return tuple((name, n) for name, n in stages if n > 0)

    @property
    def mesh_grid(self) -> int:
        """The marching-cubes resolution: mesh_resolution, or the mode's default when it is 0 (an instant job's
        mesh is 64^3: unwrap and texture bake grow with the mesh and would dominate an instant job at 128^3)."""
        return self.mesh_resolution or MESH_RESOLUTION_BY_MODE[self.mode]

    @property
    def is_draft(self) -> bool:
        """An instant job without refinement: the generator's asset is the result."""
        return self.mode == "instant" and not self.refine_steps

    @property
    def face_budget(self) -> int | None:
        """The most faces the final mesh keeps (quadric decimation above it): max_faces, or the mode's default when
        it is 0 (None = every marching-cubes face; a refined instant asset is a per-prompt one: optimize's)."""
        mode = "optimize" if self.mode == "instant" and not self.is_draft else self.mode
        return self.max_faces or MAX_FACES_BY_MODE[mode]

    @property
    def bake_size(self) -> int:
        """The baked texture's texels per side: texture_size (0 = vertex colours), at most INSTANT_TEXTURE_SIZE for an
        instant draft."""
        return min(self.texture_size, INSTANT_TEXTURE_SIZE) if self.is_draft else self.texture_size

    def summary(self) -> dict:
        """The fields a server reports in a job's status (those whose Setting has ``status=True``)."""
        return {name: getattr(self, name) for name, f in schema_of(type(self)).items() if f.setting.status}

    def validate(self) -> JobSpec:
        """Check every field again and return self. Construction and assignment already check; this is only for a
        spec whose ``options`` dict was changed in place."""
        for name, field in schema_of(type(self)).items():
            object.__setattr__(self, name, check_value(field, getattr(self, name), type(self).__name__))
        self.stage_plan  # noqa: B018 -- raises JobSpecError when the stages do not fit in the steps
        return self

    # --- plain data --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> JobSpec:
        """Build from a plain dict (e.g. decoded JSON); unknown or missing fields are an error that names them."""
        if not isinstance(data, dict):
            raise JobSpecError(f"{cls.__name__}: expected an object of fields, got {type(data).__name__}")
        fields = schema_of(cls)
        unknown = sorted(str(k)[:40] for k in data if k not in fields)
        if unknown:
            raise JobSpecError(f"{cls.__name__}: unknown field(s) {unknown}; known fields are {list(fields)}")
        missing = [name for name, f in fields.items() if not f.has_default and name not in data]
        if missing:
            raise JobSpecError(f"{cls.__name__}.{missing[0]}: missing")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as err:
            raise JobSpecError(f"{cls.__name__}: not valid JSON ({str(err)[:120]})") from None
        return cls.from_dict(data)


def spec_fields(cls: type = JobSpec) -> list[SpecField]:
    """The fields of a JobSpec class with their Settings, in declaration order (what the UI generators walk)."""
    return list(schema_of(cls).values())


def field_defaults(cls: type = JobSpec) -> dict:
    """name -> default of every field that has one."""
    return {f.name: f.default for f in spec_fields(cls) if f.has_default}


__all__ = [
    "FORMATS",
    "GROUPS",
    "JobSpec",
    "JobSpecError",
    "METHODS",
    "MODES",
    "field_defaults",
    "spec_fields",
]
