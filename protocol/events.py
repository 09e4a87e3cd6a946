"""Events a job produces, in the order a client sees them.

The engine yields these, the server encodes them (protocol.wire), the client decodes them back into the very same
classes. Arrays are numpy (no torch here: Blender's Python imports this module).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

OPTIMIZE = "optimize"
# The optimization stages of a job with the surface stage (JobSpec.stage_plan), in order; their Progress counts the
# job's steps over all stages, so one bar runs from 0 to JobSpec.steps through them.
STAGE_PHASES = ("density", "geometry", "texture")
OPTIMIZE_PHASES = (OPTIMIZE,) + STAGE_PHASES
# The phases after the last optimization step, in the order a job runs them (each only when it applies): an instant
# job's forward pass, marching cubes, decimation to the face budget, UV unwrap + texture bake, the result files, and
# the contact sheet.
FINISH_PHASES = ("generate", "mesh", "decimate", "unwrap", "bake", "export", "views")
# Before the first step of a job on a given mesh (texture and refine modes): its signed distance fitted by the field.
START_PHASES = ("fit",)
PHASE_LABELS = {
    OPTIMIZE: "optimizing",
    "fit": "fitting the field to the mesh",
    "unwrap": "unwrapping UVs",
    "density": "optimizing the density field",
    "geometry": "refining the surface",
    "texture": "painting the texture",
    "generate": "generating",
    "mesh": "meshing",
    "decimate": "decimating",
    "bake": "baking the texture",
    "export": "writing files",
    "views": "rendering the contact sheet",
}


@dataclass
class Progress:
    """How far a job is. ``phase`` names what runs now, and step / total count that phase's units:

    - "optimize", or the stage running ("density", "geometry", "texture" with the surface stage): optimization steps
      done over all stages (1-based after the first step) of the job's steps;
    - a finishing phase (FINISH_PHASES), sent as it starts: the finishing phases already done, of the number this
      job runs. A per-prompt job sends its steps, then e.g. mesh 0/4, bake 1/4, export 2/4, views 3/4; an instant job
      has no steps and starts at generate 0/5.
    loss is NaN outside the optimization phases (OPTIMIZE_PHASES); eta_s is NaN when unknown (in the finishing
    phases).
    """

    step: int
    total: int
    loss: float
    eta_s: float  # estimated seconds left; NaN when unknown
    elapsed_s: float = 0.0
    phase: str = OPTIMIZE

    @property
    def optimizing(self) -> bool:
        """True while optimization steps run (any of OPTIMIZE_PHASES), False in the finishing phases."""
        return self.phase in OPTIMIZE_PHASES

    @property
    def label(self) -> str:
        """The phase for a person: "meshing", "baking the texture", ..."""
        return PHASE_LABELS.get(self.phase, self.phase)


@dataclass
class Preview:
    step: int
    rgba: np.ndarray  # (H, W, 4) uint8, row 0 at the top


@dataclass
class MeshUpdate:
    """A triangle mesh in the world frame of the backend: right-handed, Z up (as Blender and threestudio); the .glb
    writer converts to glTF's Y up.

    Either ``vertex_colors`` or (``uvs`` and ``texture``) carries the appearance; both may be present.
    """

    step: int
    vertices: np.ndarray  # (N, 3) float32
    faces: np.ndarray  # (M, 3) int32
    vertex_colors: np.ndarray | None = None  # (N, 3) uint8
    uvs: np.ndarray | None = None  # (N, 2) float32, per vertex, origin bottom-left
    texture: np.ndarray | None = None  # (T, T, 3) uint8, row 0 at the top
    final: bool = False


@dataclass
class Done:
    files: list[str]  # result files (paths on the server; fetch them through the client)
    seconds: float = 0.0
    metrics: dict = field(default_factory=dict)


@dataclass
class Failed:
    code: str  # short machine-readable reason, e.g. "bad_spec", "out_of_memory", "worker_died", "missing_weights"
    message: str  # what happened and what to change, for a person


@dataclass
class Cancelled:
    step: int = 0


JobEvent = Progress | Preview | MeshUpdate | Done | Failed | Cancelled
