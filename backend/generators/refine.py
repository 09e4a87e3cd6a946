"""Test-time refinement (LATTE3D's fast per-prompt refinement): per-prompt distillation that starts from the field a
trained generator made for the prompt, instead of from a blob.

The generator's field for prompt y is theta_0 = G(y): the prompt's own tensors (the triplane's planes, the voxel
grid, Hyper-iNGP's generated layers) and the modules every prompt shares (the decoder MLP, Hyper-iNGP's hash grid).
``RefinableField`` copies both into trainable parameters, so the field renders exactly as G(y) does at step 0, and
N steps of the job's distillation method then move theta away from theta_0 for this prompt alone:

    theta_{k+1} = Adam(theta_k, grad_theta L_method(g(theta_k, c_k), y)),   k = 0 .. N - 1

with the per-prompt loop of engine.optimize.AssetOptimizer (its cameras, shading schedule, seeds and checkpoints).

An SDF generator's draft (``--arch-option geometry=sdf``) is already a surface, so its refinement is the per-prompt
surface stage run on it (engine.surface.SurfaceStages.enter_surface), with no density stage and no SDF fitted to a
density: ``RefinableSDFField`` offers what fields.sdf.SDFField offers, the stages are ``surface_refine_plan``
(geometry, then texture with the distance frozen), and the result meshes through engine.surface_mesh. Its geometry
stage adds LATTE3D's shape regularization towards the draft (``DraftAnchor``),

    + w_a E_x band_b(d_theta(x), d_0(x))          x: the step's surface hits and as many points uniform in the ball

with d_0 the draft's distance G(y) (frozen) and band_b shape_init's banded L1: the draft's shapes are better than
what a few steps of distillation at the built-in prior's 32 px pull them to, and the anchor keeps them while the
distillation sharpens details and colours.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from dreamstill.protocol import JobSpec
from dreamstill.protocol.jobspec import GEOMETRY_SHARE, TEXTURE_SHARE

from ..engine import AssetOptimizer
from ..engine.surface import SurfaceStages, surface_hits
from ..fields import Field, OccupancyGrid
from ..fields.sdf import volsdf_density, volsdf_density_derivative
from ..fields.sdf_init import uniform_ball
from .base import GeneratedFields, albedo_of
from .instant import OCCUPANCY_RESOLUTION
from .shape_init import BAND, banded_l1

REFINE_LR = 1e-2  # Adam on the copied tensors and modules when the spec's lr is 0 (docs/results/instant_refine_cpu.md)
# Adam on an SDF draft's distance (its geometry copy) when the spec's lr is 0. The surface stage's geometry_lr (3e-4,
# for a hash grid of ~1e-4 entries) barely moved the first SDF generator's tensors (pre3k, planes of std 1.6: 100
# steps took its "a red cube" / "a purple torus" to IoU 0.80 / 0.30 at 3e-4, 0.83 / 0.42 at 2e-3). The shipped
# generator's drafts are better than what SDS converges to, and a smaller step keeps more of them: held-out "a green
# sphere on top of a pink capsule" / "a red cylinder on top of a blue cube", draft IoU 0.89 / 0.86, after 100 SDS
# steps 0.72 / 0.79 at 2e-3, 0.81 / 0.80 at 5e-4 (docs/results/instant_refine_cpu.md)
REFINE_SDF_GEOMETRY_LR = 5e-4
# an SDF draft's refinement samples t <= 0.5 T (threestudio's refine stages: t in [0.02, 0.5]): a draft already has
# its shape, and high-noise steps re-shape it. On the world-pretrained generator (10k steps), 100 SDS steps took "a
# green sphere on top of a pink capsule" from the draft's IoU 0.86 to 0.51 (two parts) uncapped, to 0.79 capped
REFINE_MAX_STEP_PERCENT = 0.5
# w_a of DraftAnchor (module docstring) and its points per step (surface hits, and as many uniform in the ball), and
# the albedo's Adam rate while refining (the surface stage's is 1e-2). 100 SDS steps on 6 held-out compositions
# (docs/results/instant_refine_cpu.md; the draft: R@1 0.948, IoU 0.827; 400 per-prompt SDS steps 0.927, 0.790):
# no anchor, albedo 1e-2: 0.875, 0.761; anchor 1e4: 0.864, 0.793; anchor 1e4, albedo 1e-3: 0.953, 0.785;
# anchor 3e4, albedo 1e-3: 0.943, 0.818; anchor 1e5, albedo 1e-3: 0.953, 0.829 (the draft's shape, kept whole)
REFINE_DRAFT_ANCHOR_WEIGHT = 3e4
REFINE_ALBEDO_LR = 1e-3
REFINE_DRAFT_ANCHOR_POINTS = 2048
# an SDF draft's refinement: the texture stage's share of refine_steps when JobSpec.texture_steps is 0, the
# per-prompt surface stage's geometry : texture split (3/8 : 1/8 of steps, so 1/4 of the surface stage's)
SURFACE_TEXTURE_SHARE = TEXTURE_SHARE / (GEOMETRY_SHARE + TEXTURE_SHARE)


def trainable_copies(parts: dict) -> tuple[nn.ParameterDict, nn.ModuleDict]:
    """(the prompt's tensors as Parameters, deep copies of the shared modules with gradients on) of
    ``GeneratedFields.prompt_parts``' dict."""
    tensors = {k: v for k, v in parts.items() if isinstance(v, torch.Tensor)}
    params = nn.ParameterDict({k: nn.Parameter(v.detach().clone()) for k, v in tensors.items()})
    shared = nn.ModuleDict({k: copy.deepcopy(v) for k, v in parts.items() if k not in tensors})
    for p in shared.parameters():
        p.requires_grad_(True)
    return params, shared


class RefinableField(Field):
    """Prompt ``index`` of a generator's output as a standalone field whose tensors and modules are trainable copies
    (the generator itself is untouched). forward(x) -> (density, albedo) as the generator's field; an occupancy grid
    (fields.occupancy) lets the renderer skip empty space as it does for a per-prompt field."""

    def __init__(self, fields: GeneratedFields, index: int = 0):
        super().__init__()
        self.tensors, self.shared = trainable_copies(fields.prompt_parts(index))
        self.bound = float(fields.bound)
        self.fields = type(fields).from_parts({**self.tensors, **self.shared}, self.bound)
        # empty-space skipping as a per-prompt DensityField's: refreshed by the renderer every 16 training renders
        self.occupancy = OccupancyGrid(self.bound, OCCUPANCY_RESOLUTION)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fields.query(0, x)


class RefinableSDFField(RefinableField):
    """An SDF generator's prompt as a trainable signed-distance field with fields.sdf.SDFField's interface (sdf,
    sdf_with_gradient, forward_with_gradient, normals, set_beta, geometry_parameters, albedo_parameters,
    freeze_geometry), for the renderer, the surface stage's regularizers and the SDF mesher.

    The generator decodes the distance and the albedo from the same features (raw = decoder(features(x)), d from
    raw_0 by SDFDecoding, albedo = sigmoid(raw_1..3)), so no parameter feeds one alone. The field therefore holds two
    trainable copies of the prompt's parts, as SDFField holds two hash grids: the geometry copy (``tensors``,
    ``shared``: the decoding with its beta buffer) gives d(x) and the appearance copy (``albedo_tensors``,
    ``albedo_shared``) gives the albedo. Both start as G(y), so at step 0 d, density and albedo are the generator's
    exactly; freezing the geometry copy leaves d fixed while the texture stage trains the appearance copy. Each
    query evaluates the decoder twice (once per copy)."""

    geometry = "sdf"
    supports_analytic_gradient = True  # render.volume: lit renders take normals from forward_with_gradient

    def __init__(self, fields: GeneratedFields, index: int = 0):
        fields._need_sdf()  # ValueError for a density generator
        super().__init__(fields, index)
        parts = {k: v for k, v in fields.prompt_parts(index).items() if k != "decoding"}
        self.albedo_tensors, self.albedo_shared = trainable_copies(parts)
        appearance = {**self.albedo_tensors, **self.albedo_shared, "decoding": self.fields.decoding}
        self.albedo_fields = type(fields).from_parts(appearance, self.bound)

    @property
    def beta(self) -> torch.Tensor:
        return self.fields.decoding.beta

    def set_beta(self, value: float) -> None:
        """Anneal beta, the Laplace scale of the VolSDF density (SDFDecoding.set_beta)."""
        self.fields.decoding.set_beta(value)

    def geometry_parameters(self) -> list[nn.Parameter]:
        return list(self.tensors.values()) + list(self.shared.parameters())

    def albedo_parameters(self) -> list[nn.Parameter]:
        return list(self.albedo_tensors.values()) + list(self.albedo_shared.parameters())

    def freeze_geometry(self, frozen: bool = True) -> None:
        """Stop (or restart) gradients to the distance: the texture stage trains only the albedo."""
        for p in self.geometry_parameters():
            p.requires_grad_(not frozen)

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        """d(x), (N,)."""
        return self.fields.sdf(0, x)

    def sdf_with_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(d (N,), grad_x d (N, 3)) by autograd, with its graph while gradients are on (a loss on it trains d)."""
        return self.fields[0].sdf_with_gradient(x)

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        return albedo_of(self.albedo_fields.raw(0, x / self.bound))

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """(1 / beta) Psi_beta(-d(x)) (fields.sdf.volsdf_density)."""
        return volsdf_density(self.sdf(x), self.beta)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.density(x), self.albedo(x)

    def forward_with_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(density, albedo, grad_x density), grad density = (d density / d d) grad d (inward, as SDFField's)."""
        d, grad = self.sdf_with_gradient(x)
        return volsdf_density(d, self.beta), self.albedo(x), volsdf_density_derivative(d, self.beta)[:, None] * grad

    def normals(self, x: torch.Tensor) -> torch.Tensor:
        """n = normalize(grad d), outward."""
        return F.normalize(self.sdf_with_gradient(x)[1], dim=-1, eps=1e-12)


@dataclasses.dataclass
class DraftAnchor:
    """weight * E_x band_b(d(x), d_0(x)) (module docstring): the refined distance ``field`` held near the draft's,
    ``draft`` (the generator's GeneratedFields, frozen) prompt ``index``, at up to ``points`` of the step's surface
    hits and ``points`` uniform in the ball drawn with ``rng``."""

    field: RefinableSDFField
    draft: GeneratedFields
    index: int
    weight: float
    points: int
    rng: torch.Generator

    def __call__(self, views) -> torch.Tensor:
        hits = surface_hits(views, self.points, self.rng)
        x = torch.cat([hits, uniform_ball(self.points, self.field.bound, self.rng).to(hits.device)])
        with torch.no_grad():
            d_0 = self.draft.sdf(self.index, x)
        return self.weight * banded_l1(self.field.sdf(x), d_0, BAND)


def refine_spec(spec: JobSpec) -> JobSpec:
    """The per-prompt spec of the refinement: the job's own, with ``refine_steps`` as its steps."""
    return dataclasses.replace(spec, steps=spec.refine_steps)


def surface_refine_plan(spec: JobSpec) -> tuple[tuple[str, int], ...]:
    """The stages of an SDF draft's refinement: ("geometry", g), ("texture", x) with x = texture_steps or
    refine_steps * SURFACE_TEXTURE_SHARE (1/4, rounded down) and g = refine_steps - x (geometry_steps does not
    apply: the geometry takes every step the texture leaves); no density stage, the surface flag notwithstanding
    (the draft is a surface already). Raises ValueError when texture_steps leaves the geometry no step."""
    steps = spec.refine_steps
    texture = spec.texture_steps or int(steps * SURFACE_TEXTURE_SHARE)
    if texture >= steps:
        raise ValueError(
            f"texture_steps {texture} leaves the refinement's geometry stage no step of refine_steps {steps}; "
            "lower texture_steps (0 = a quarter of refine_steps) or raise refine_steps"
        )
    return tuple((name, n) for name, n in (("geometry", steps - texture), ("texture", texture)) if n > 0)


def refine_optimizer(fields: GeneratedFields, index: int, spec: JobSpec, prior) -> AssetOptimizer:
    """A per-prompt optimizer for ``spec.refine_steps`` steps of ``spec.method`` whose field is prompt ``index`` of
    ``fields``: a density generator's as a RefinableField, Adam at ``spec.lr`` (0: REFINE_LR), in the spec's stage
    plan; an SDF generator's as a RefinableSDFField in the surface stage (``refine_surface_optimizer``, the spec's lr
    or REFINE_SDF_GEOMETRY_LR on its distance), its geometry stage held near the draft by a DraftAnchor. Raises what
    AssetOptimizer raises for a bad method option (KeyError, ValueError), ValueError for a bad stage split."""
    sdf = fields.decoding.geometry == "sdf"
    plan = surface_refine_plan(spec) if sdf else None
    optimizer = AssetOptimizer(refine_spec(spec), prior=prior)
    if sdf:
        field = RefinableSDFField(fields, index).to(optimizer.device)
        refine_surface_optimizer(optimizer, field, plan)
        if REFINE_DRAFT_ANCHOR_WEIGHT > 0:  # the plan starts with the geometry stage (surface_refine_plan)
            anchor = DraftAnchor(
                field, fields, index, REFINE_DRAFT_ANCHOR_WEIGHT, REFINE_DRAFT_ANCHOR_POINTS, optimizer.surface.rng
            )
            optimizer.regularizers.append(anchor)
        return optimizer
    optimizer.field = RefinableField(fields, index).to(optimizer.device)
    params = list(optimizer.field.parameters()) + [p for p in optimizer.background.parameters() if p.requires_grad]
    optimizer.optimizer = torch.optim.Adam(params, lr=spec.lr or REFINE_LR, betas=(0.9, 0.99), eps=1e-15)
    return optimizer


def refine_surface_optimizer(optimizer: AssetOptimizer, field: RefinableSDFField, plan) -> AssetOptimizer:
    """``optimizer`` set to run ``plan`` (surface_refine_plan) on ``field`` with the per-prompt surface stage's
    optimizer groups (the distance at the spec's lr, 0: REFINE_SDF_GEOMETRY_LR; the albedo at REFINE_ALBEDO_LR),
    shading, render settings, regularizers and beta anneal (engine.surface.SurfaceStages, entered with this field
    instead of one fitted to a density), its timesteps capped at REFINE_MAX_STEP_PERCENT T."""
    if optimizer.surface is None:  # surface=False in the spec: an SDF draft is refined as a surface all the same
        optimizer.surface = SurfaceStages(optimizer.defaults.surface, optimizer.spec)
    optimizer.surface.config = dataclasses.replace(
        optimizer.surface.config, max_step_percent=REFINE_MAX_STEP_PERCENT, albedo_lr=REFINE_ALBEDO_LR
    )
    optimizer.plan = plan
    geometry_lr = optimizer.spec.lr or REFINE_SDF_GEOMETRY_LR
    optimizer.surface.enter_surface(optimizer, field, plan[0][0], geometry_lr)
    optimizer.stage = plan[0][0]
    return optimizer
