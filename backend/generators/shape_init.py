"""Shape initialisation of an SDF generator: ATT3D's and LATTE3D's reconstruction pretraining. The shapes come from a
trained density generator (the teacher: no 3D data, no diffusion prior, cheap) or, for toy-world corpora, from the
toy world's own solids (``targets="world"``: the toy world as the 3D data set, as LATTE3D pretrains on Objaverse's
shapes; the training corpus holds no held-out composition, so held-out figures still measure generalisation).

For each step's prompts y_1..y_P the target is a signed distance d*_p and an albedo c*_p:

* teacher: T (a density generator: base.DensityDecoding) gives the field T(y_p); its solid O_p = {density >= level}
  on an n^3 grid over the box (mesh.extract's automatic silhouette level), the largest part per object of the prompt
  kept (floaters dropped), enclosed cavities filled, and O_p's signed distance by the Euclidean distance transform
  (fields/sdf_init.sdf_grid_from_density, the per-prompt SDF init's steps 1-3 without its carving); c*_p = T's albedo.
* world: d*_p = phi_p, the scene's exact signed distance (priors/builtin/world.scene_sdf), and c*_p its objects'
  colours (world.scene_albedo).

The student G (the same architecture with geometry "sdf", base.SDFDecoding) regresses

    L = (1/P) sum_p [ E_x band_b(d_p(x), d*_p(x))                              x: half uniform in the ball, half
                      + w_e E_{x uniform}[(||grad d_p(x)|| - 1)^2]               within two voxels of the surface
                      + w_c E_{x near}||c_p(x) - c*_p(x)||^2 ]

    band_b(d, d*) = |d - d*|                    where |d*| < b
                  = max(0, sign(d*) (clip_b(d*) - d))  elsewhere: only "on the right side, at least b deep"

with d_p, c_p the student's distance and albedo for y_p, clip_b(v) = clamp(v, -b, b) and the band b = BAND (the far
field's exact distance does not matter, the capacity goes to the surface), and w_e, w_c the SDF init's eikonal and
albedo weights (SDFInitConfig). Unlike DeepSDF's |clip_b(d) - clip_b(d*)|, band_b keeps a gradient where the
student's d is beyond the band on the wrong side (a student that has shrunk away from the surface gets no signal
from a clipped prediction). The student starts from the teacher's weights wherever the shapes match (the
transformer, the planes, the decoder), its distance head reset so it begins as the ball (``reset_distance_head``):
only that head changes meaning.
"""

from __future__ import annotations

import dataclasses

import torch

from ..engine.surface import objects_in_prompt
from ..fields.regularizers import eikonal_loss
from ..fields.sdf_init import SDFGrid, SDFInitConfig, near_surface_points, sdf_grid_from_density, uniform_ball
from ..priors.base import TextEmbedding
from .config import GeneratorTrainConfig

BAND = 0.15  # world units: |d| beyond this is not regressed (about 3 voxels of a 40^3 grid over [-1, 1]^3)
POINTS_PER_PROMPT = 4096  # regression points per prompt and step, half uniform and half near the surface


class ShapeTeacher:
    """A trained density generator as the source of shapes (module docstring)."""

    def __init__(
        self,
        generator,
        config: GeneratorTrainConfig,
        step: int,
        lineage: list[dict],
        name: str,
        targets: str = "teacher",
    ):
        if generator.decoding.geometry != "density":
            raise ValueError(f"--init-sdf-from {name}: that generator is already an SDF; give a density generator")
        self.generator, self.config, self.step, self.lineage, self.name = generator, config, step, lineage, name
        self.targets = targets  # "teacher" or "world": the toy world's solids and colours (module docstring)

    @classmethod
    def load(cls, name: str, text_dim: int, device, targets: str = "teacher") -> ShapeTeacher:
        """The generator ``name`` ('builtin-density', a train-generator folder or a .pt file), frozen, on ``device``;
        ``targets`` as in the module docstring."""
        from . import build_generator
        from .instant import resolve_checkpoint

        state = torch.load(resolve_checkpoint(name), map_location="cpu", weights_only=True)
        config = GeneratorTrainConfig(**{**dataclasses.asdict(GeneratorTrainConfig()), **state["config"]})
        generator = build_generator(config.arch, text_dim, **config.arch_options)
        generator.load_state_dict(state["generator"])
        generator.requires_grad_(False)
        lineage = list(state.get("lineage", []))
        return cls(generator.to(device).eval(), config, state["step"], lineage, name, targets)

    def init_student(self, student, student_config: GeneratorTrainConfig) -> list[dict]:
        """Copy the teacher's weights into ``student`` wherever name and shape match, reset its distance head; the
        student's lineage (the teacher's stages, then the teacher): GeneratorTrainer.lineage."""
        teacher_options = {k: v for k, v in self.config.arch_options.items() if k != "geometry"}
        student_options = {k: v for k, v in student_config.arch_options.items() if k != "geometry"}
        if (self.config.arch, teacher_options, self.config.prior) != (
            student_config.arch,
            student_options,
            student_config.prior,
        ):
            raise ValueError(
                f"--init-sdf-from {self.name}: the teacher is --arch {self.config.arch} with arch options "
                f"{teacher_options} on prior {self.config.prior!r}; use the same --arch, --arch-option and --prior "
                f"(plus geometry=sdf)"
            )
        if student.decoding.geometry != "sdf":
            raise ValueError("--init-sdf-from trains an SDF generator: use --arch-option geometry=sdf")
        ours, theirs = student.state_dict(), self.generator.state_dict()
        matching = {k: v for k, v in theirs.items() if k in ours and ours[k].shape == v.shape}
        student.load_state_dict(matching, strict=False)
        student.reset_distance_head()
        return self.lineage + [{"config": dataclasses.asdict(self.config), "step": self.step}]

    def target(self, field, prompt: str, resolution: int, device) -> SDFGrid:
        """d*_p: the signed distance grid of the teacher field's cleaned solid (module docstring)."""

        def density(points):
            with torch.no_grad():
                return field.density(points.to(device)).cpu()

        init = SDFInitConfig(resolution=resolution, close_radius=0.0, keep_components=objects_in_prompt(prompt))
        return sdf_grid_from_density(density, float(field.bound), init)

    def loss(
        self, fields, text: TextEmbedding, prompts: list[str], rng: torch.Generator, resolution: int = 40
    ) -> torch.Tensor:
        """L of the module docstring for the student's ``fields`` of ``prompts`` (their embeddings ``text``)."""
        device = text.tokens.device
        if self.targets == "world":
            targets = [WorldTarget(prompt, float(fields[p].bound), resolution) for p, prompt in enumerate(prompts)]
        else:
            with torch.no_grad():
                teacher = self.generator(text)
            targets = [
                TeacherTarget(teacher[p], self.target(teacher[p], prompt, resolution, device))
                for p, prompt in enumerate(prompts)
            ]
        return torch.stack([reconstruction_loss(fields[p], t, rng) for p, t in enumerate(targets)]).mean()


class TeacherTarget:
    """(d*, c*) of one prompt from the teacher: its cleaned solid's distance grid and its albedo."""

    def __init__(self, field, grid: SDFGrid):
        self.field, self.grid = field, grid

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        return self.grid.sample(x)

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        return self.field(x)[1]


def require_toy_world(prompts: list[str]) -> None:
    """Raise ValueError naming the first prompt the toy world cannot build (``--shape-targets world`` needs them all)."""
    from ..priors.builtin import world

    for prompt in prompts:
        try:
            world.parse_prompt(prompt)
        except ValueError as err:
            raise ValueError(f"--shape-targets world needs a toy-world corpus: {err}") from None


class WorldTarget:
    """(d*, c*) of one toy-world prompt: the scene's exact signed distance phi and its objects' colours; ``grid``
    (phi on an n^3 grid over the box) only places the near-surface points."""

    def __init__(self, prompt: str, bound: float, resolution: int):
        from ..priors.builtin import world

        self.scene, self.world = world.parse_prompt(prompt), world
        axis = torch.linspace(-bound, bound, resolution)
        points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        values = world.scene_sdf(self.scene, points).reshape(resolution, resolution, resolution)
        self.grid = SDFGrid(values.numpy().astype("float32"), -bound, 2.0 * bound / (resolution - 1))

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        return self.world.scene_sdf(self.scene, x)

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        return self.world.scene_albedo(self.scene, x)


def reconstruction_loss(student, target, rng: torch.Generator, band: float = BAND) -> torch.Tensor:
    """One prompt's term of L: banded L1 on d, eikonal at the uniform points, albedo MSE near the surface."""
    weights = SDFInitConfig()
    half = POINTS_PER_PROMPT // 2
    device = student.fields.decoding.beta.device
    uniform = uniform_ball(half, float(student.bound), rng).to(device)
    near = near_surface_points(target.grid, POINTS_PER_PROMPT - half, rng).to(device)
    x = torch.cat([uniform, near])
    d, grad = student.sdf_with_gradient(x)
    with torch.no_grad():
        d_target = target.distance(x).to(d.dtype)
        albedo_target = target.albedo(near)
    loss = banded_l1(d, d_target, band) + weights.eikonal_weight * eikonal_loss(grad[:half])
    return loss + weights.albedo_weight * ((student(near)[1] - albedo_target) ** 2).mean()


def banded_l1(d: torch.Tensor, target: torch.Tensor, band: float) -> torch.Tensor:
    """mean band_b(d, d*) (module docstring): |d - d*| inside the band, the one-sided hinge beyond it."""
    clipped = target.clamp(-band, band)
    beyond = torch.relu(torch.sign(target) * (clipped - d))
    return torch.where(target.abs() < band, (d - target).abs(), beyond).mean()
