"""Test-time refinement (LATTE3D's fast per-prompt refinement): per-prompt distillation that starts from the field a
trained generator made for the prompt, instead of from a blob.

The generator's field for prompt y is theta_0 = G(y): the prompt's own tensors (the triplane's planes, the voxel
grid, Hyper-iNGP's generated layers) and the modules every prompt shares (the decoder MLP, Hyper-iNGP's hash grid).
``RefinableField`` copies both into trainable parameters, so the field renders exactly as G(y) does at step 0, and
N steps of the job's distillation method then move theta away from theta_0 for this prompt alone:

    theta_{k+1} = Adam(theta_k, grad_theta L_method(g(theta_k, c_k), y)),   k = 0 .. N - 1

with the per-prompt loop of engine.optimize.AssetOptimizer (its cameras, shading schedule, seeds and checkpoints).
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from dreamstill.protocol import JobSpec

from ..engine import AssetOptimizer
from ..fields import Field, OccupancyGrid
from .base import GeneratedFields
from .instant import OCCUPANCY_RESOLUTION

REFINE_LR = 1e-2  # Adam on the copied tensors and modules when the spec's lr is 0 (docs/results/instant_refine_cpu.md)


class RefinableField(Field):
    """Prompt ``index`` of a generator's output as a standalone field whose tensors and modules are trainable copies
    (the generator itself is untouched). forward(x) -> (density, albedo) as the generator's field; an occupancy grid
    (fields.occupancy) lets the renderer skip empty space as it does for a per-prompt field."""

    def __init__(self, fields: GeneratedFields, index: int = 0):
        super().__init__()
        parts = fields.prompt_parts(index)
        tensors = {k: v for k, v in parts.items() if isinstance(v, torch.Tensor)}
        self.tensors = nn.ParameterDict({k: nn.Parameter(v.detach().clone()) for k, v in tensors.items()})
        self.shared = nn.ModuleDict({k: copy.deepcopy(v) for k, v in parts.items() if k not in tensors})
        for p in self.shared.parameters():
            p.requires_grad_(True)
        self.bound = float(fields.bound)
        self.fields = type(fields).from_parts({**self.tensors, **self.shared}, self.bound)
        # empty-space skipping as a per-prompt DensityField's: refreshed by the renderer every 16 training renders
        self.occupancy = OccupancyGrid(self.bound, OCCUPANCY_RESOLUTION)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fields.query(0, x)


def refine_spec(spec: JobSpec) -> JobSpec:
    """The per-prompt spec of the refinement: the job's own, with ``refine_steps`` as its steps."""
    return dataclasses.replace(spec, steps=spec.refine_steps)


def refine_optimizer(fields: GeneratedFields, index: int, spec: JobSpec, prior) -> AssetOptimizer:
    """A per-prompt optimizer for ``spec.refine_steps`` steps of ``spec.method`` whose field is prompt ``index`` of
    ``fields`` (a RefinableField), Adam at ``spec.lr`` (0: REFINE_LR). Raises what AssetOptimizer raises for a bad
    method option (KeyError, ValueError)."""
    optimizer = AssetOptimizer(refine_spec(spec), prior=prior)
    optimizer.field = RefinableField(fields, index).to(optimizer.device)
    params = list(optimizer.field.parameters()) + [p for p in optimizer.background.parameters() if p.requires_grad]
    optimizer.optimizer = torch.optim.Adam(params, lr=spec.lr or REFINE_LR, betas=(0.9, 0.99), eps=1e-15)
    return optimizer
