"""Prompt-amortized generators: G(y) maps a text embedding to a 3D field in one forward pass (ScaleDreamer, Sec. 3).

Every architecture returns a ``GeneratedFields`` batch: B prompt-specific fields that the ordinary volume renderer
draws. ``fields[b]`` is a field like ``fields.nerf.DensityField``: ``forward(x) -> (density, albedo)``, ``density(x)``
and ``bound``. The density carries the same blob bias as the per-prompt field (DreamFusion's initialisation), so a
fresh generator starts from a blob and training only has to carve it. With ``geometry="sdf"`` (every architecture's
config; ``--arch-option geometry=sdf``) the geometry channel is a signed distance instead (``SDFDecoding``: the
per-prompt surface stage's VolSDF field, fields/sdf.py), and ``fields[b]`` is also an SDF like
``fields.sdf.SDFField`` for the renderer, the surface regularizers and the SDF mesher.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..fields.sdf import sphere_biased_sdf, volsdf_density, volsdf_density_derivative
from ..priors.base import TextEmbedding


def pooled_text(text: TextEmbedding) -> torch.Tensor:
    """The global (pooled) text vector; the mean of token states when the encoder has no pooled output."""
    return text.pooled if text.pooled is not None else text.tokens.mean(1)


class DensityDecoding(nn.Module):
    """density = softplus(raw + blob) with blob = blob_density * (1 - ||x|| / blob_radius) (Magic3D's blob);
    albedo = sigmoid(raw_rgb). No parameters or buffers: a density generator's state dict is unchanged by it."""

    geometry = "density"

    def __init__(self, blob_density: float = 10.0, blob_radius: float = 0.5):
        super().__init__()
        self.blob_density, self.blob_radius = blob_density, blob_radius

    def forward(self, x: torch.Tensor, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        blob = self.blob_density * (1 - x.norm(dim=-1) / self.blob_radius)
        return F.softplus(raw[..., 0] + blob), albedo_of(raw)


class SDFDecoding(nn.Module):
    """A signed distance, rendered as a VolSDF density (fields/sdf.py; Yariv et al. 2021):

        d(x) = max(raw_d + ||x|| - r_0,  ||x|| - bound)       (sphere bias r_0 = the blob's radius, 0.5)
        density(x) = (1 / beta) Psi_beta(-d(x)),   albedo = sigmoid(raw_rgb),

    so a generator whose distance head outputs raw_d = 0 is the ball of radius r_0, and 1/(2 beta) is the density
    on its surface. beta is a buffer (saved with the generator's weights) that the trainer anneals (``set_beta``)."""

    geometry = "sdf"

    def __init__(self, bound: float = 1.0, sphere_radius: float = 0.5, beta: float = 0.01, beta_min: float = 1e-3):
        super().__init__()
        if not 0 < sphere_radius < bound:
            raise ValueError(f"SDFDecoding sphere_radius is {sphere_radius}; use a radius inside the bound {bound}")
        self.bound, self.sphere_radius, self.beta_min = float(bound), float(sphere_radius), float(beta_min)
        self.register_buffer("beta", torch.tensor(max(float(beta), self.beta_min)))

    @torch.no_grad()
    def set_beta(self, value: float) -> None:
        """Anneal beta (values below beta_min are raised to it)."""
        self.beta.fill_(max(float(value), self.beta_min))

    def sdf(self, x: torch.Tensor, raw_d: torch.Tensor) -> torch.Tensor:
        return sphere_biased_sdf(raw_d, x, self.sphere_radius, self.bound)[0]

    def forward(self, x: torch.Tensor, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return volsdf_density(self.sdf(x, raw[..., 0]), self.beta), albedo_of(raw)


GEOMETRIES = ("density", "sdf")


def make_decoding(geometry: str, bound: float) -> DensityDecoding | SDFDecoding:
    """The decoding of an architecture's ``geometry`` setting (``--arch-option geometry=sdf``)."""
    if geometry == "density":
        return DensityDecoding()
    if geometry == "sdf":
        return SDFDecoding(bound)
    raise ValueError(f"generator geometry {geometry!r} is unknown; use one of {', '.join(GEOMETRIES)}")


def albedo_of(raw: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(raw[..., 1:4])


def zero_distance_row(linear: nn.Linear) -> None:
    """Zero the first output (the geometry channel) of a decoder's last layer: raw_d = 0, so an SDF generator
    starts as SDFDecoding's ball whatever its features are."""
    with torch.no_grad():
        linear.weight[0].zero_()
        if linear.bias is not None:
            linear.bias[0].zero_()


class FieldView:
    """Prompt b of a GeneratedFields batch, seen as an ordinary field by the renderer and mesh extractor. For an
    SDF batch it also offers what fields.sdf.SDFField offers the renderer, the mesher and the surface regularizers:
    ``sdf``, ``sdf_with_gradient``, ``forward_with_gradient`` (so lit renders take closed-form-style normals, here
    by autograd) and ``normals``."""

    def __init__(self, fields: GeneratedFields, index: int):
        self.fields, self.index, self.bound = fields, index, fields.bound

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fields.query(self.index, x)

    forward = __call__

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.fields.query(self.index, x)[0]

    @property
    def geometry(self) -> str:
        return self.fields.decoding.geometry

    @property
    def supports_analytic_gradient(self) -> bool:  # render.volume: normals from forward_with_gradient
        return self.geometry == "sdf"

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        return self.fields.sdf(self.index, x)

    def sdf_with_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d, grad, _ = self.fields.sdf_gradient_raw(self.index, x)
        return d, grad

    def forward_with_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(density, albedo, grad_x density) with grad density = (d density / d d) grad d (inward, as SDFField's)."""
        d, grad, raw = self.fields.sdf_gradient_raw(self.index, x)
        beta = self.fields.decoding.beta
        return volsdf_density(d, beta), albedo_of(raw), volsdf_density_derivative(d, beta)[:, None] * grad

    def normals(self, x: torch.Tensor) -> torch.Tensor:
        """n = normalize(grad d), outward."""
        return F.normalize(self.sdf_with_gradient(x)[1], dim=-1, eps=1e-12)

    def parameters(self):  # the renderer may ask for a device
        return iter(())


class GeneratedFields:
    """Base of an architecture's per-batch output: subclasses implement ``raw(index, x_unit) -> (N, 4)``."""

    def __init__(self, batch: int, bound: float, decoding: DensityDecoding | SDFDecoding | None = None):
        self.batch, self.bound = batch, bound
        self.decoding = decoding if decoding is not None else DensityDecoding()

    def __len__(self) -> int:
        return self.batch

    def __getitem__(self, index: int) -> FieldView:
        if not -self.batch <= index < self.batch:
            raise IndexError(index)
        return FieldView(self, index % self.batch)

    def raw(self, index: int, x_unit: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def prompt_parts(self, index: int) -> dict[str, torch.Tensor | nn.Module]:
        """What prompt ``index``'s field is made of: its own tensors (batch axis kept, of size 1) and the modules it
        shares with the other prompts (the decoder). ``from_parts`` of these is that one field (generators.refine
        copies them into trainable parameters for test-time refinement)."""
        raise NotImplementedError

    @classmethod
    def from_parts(cls, parts: dict, bound: float) -> GeneratedFields:
        """A batch of one field from ``prompt_parts``' dict (its tensors possibly replaced by trainable copies)."""
        raise NotImplementedError

    def query(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World points (N, 3) in [-bound, bound]^3 -> (density (N,), albedo (N, 3))."""
        return self.decoding(x, self.raw(index, x / self.bound))

    def _need_sdf(self) -> SDFDecoding:
        if self.decoding.geometry != "sdf":
            raise ValueError(
                "this generator's geometry is a density, not a signed distance; train one with "
                "--arch-option geometry=sdf for sdf() and its gradient"
            )
        return self.decoding

    def sdf(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """d(x) (N,) of an SDF batch (SDFDecoding)."""
        return self._need_sdf().sdf(x, self.raw(index, x / self.bound)[:, 0])

    def sdf_gradient_raw(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(d (N,), grad_x d (N, 3), raw (N, 4)) by autograd through the architecture's lookups; with gradients
        enabled the gradient keeps its graph (create_graph), so an eikonal or normal loss on it trains the
        generator (double backward); without, everything comes back detached."""
        decoding = self._need_sdf()
        outer = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            raw = self.raw(index, xg / self.bound)
            d = decoding.sdf(xg, raw[:, 0])
            (grad,) = torch.autograd.grad(d.sum(), xg, create_graph=outer)
        if not outer:
            return d.detach(), grad.detach(), raw.detach()
        return d, grad, raw


def small_mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, d_out))
