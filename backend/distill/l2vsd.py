"""Linearized Lookahead VSD (L2-VSD; Lei et al. ICCV 2025, arXiv 2507.09748, Eqs. 7 and 9-11).

VSD's theta step uses phi_i, fitted to the renders of theta_{i-1}; the lookahead (L-VSD) uses phi_{i+1} but
overfits one view. L2-VSD uses the first-order Taylor term of the lookahead instead (L2 Eqs. 7, 9-11):

    Delta_{phi_i}  = (eps_{phi_i}(x_t', t', c, y) - eps') J_{phi_i}(x_t', t', c, y)      (= 1/2 grad_phi ||eps_phi - eps'||^2)
    v              = phi_{i+1} - phi_i = -2 eta Delta_{phi_i}                         (one SGD step of size eta)
    eps^lin        = eps_{phi_i}(x_t, t, c, y) + J_{phi_i}(x_t, t, c, y) v           (jvp w.r.t. phi, forward mode)
    grad_theta     = w(t) ( eps_pretrain^cfg(x_t, t, y^c) - eps^lin ) dg/dtheta

The paper's eta is the option ``lookahead_lr`` here (eta names other things elsewhere).

Per iteration (the inferred order): (1) draw the distillation sample (t, eps, x_t) and the score-model sample
(t', eps', x_t') from the same render; (2) one backward of the denoising loss at phi_i gives Delta; (3)
``torch.func.jvp`` of phi -> eps_phi(x_t) at phi_i along v gives eps_{phi_i}(x_t) and Delta eps_first together; (4) the
3D gradient; (5) the ordinary score-model step (AdamW) from the SAME backward, i.e. exactly VSD's step; further
``lora_steps_per_iter - 1`` steps are plain VSD steps. The lookahead is linear; the real phi moves by its optimizer.

Code versus paper:
- Delta for a batch of B renders: the per-sample squared error is summed over elements and averaged over the
  batch, Delta = 1/2 grad_phi (1/B) sum_b lambda_b ||eps_phi(x'_b) - eps'_b||^2 (the paper has B = 1), with lambda the
  prediction-type weight of ``score_models.py`` (the v-MSE on a v-prior, as VSD's score model). The tangent is the
  plain gradient (the paper's "one-step SGD"), not the AdamW step.
- The scale of eta (the paper leaves the loss normalisation unstated). ``lookahead_reduction="mean"`` (default)
  takes v = -eta grad_phi of the MEAN squared error, i.e. v = -2 eta Delta / D with D the elements per sample: one
  SGD step of size eta on the loss the score model actually trains on (threestudio's mse_loss, which L2 builds on),
  matching L2 Sec. 4.1's "eta is the learning rate of the LoRA". It also reproduces L2's reported magnitude: at
  eta = 1e-3, ||Delta eps_first|| is about 1e-2 (measured ~1e-2 on the built-in prior at its first step, with the
  eps-MSE; the literal sum form gives ~3e1 there, 3000x larger than eps_phi's scale permits).
  ``lookahead_reduction="sum"`` is Eq. 7 literally, v = -2 eta Delta. eta defaults to 0.01 (L2's norm study; its
  ablation spans 1e-3..1).
- The optimizer step uses that gradient divided by the number of elements per sample, which is the gradient of
  VSD's mean loss on the same draw, so the phi trajectory matches VSD's given the same draws.
- ``last_layer=True``: the tangent is restricted to the adapter closest to the output (``LoRAScoreNet.
  last_layer_names``; the paper does not define "last layer"), zero elsewhere, and the jvp carries tangents only
  from that layer on (cheaper). For other score nets, ``last_layer_names()`` if they have it, else their last
  parameter tensor.
- The camera MLP is part of phi and gets a tangent too (the paper leaves it open).
- Forward-mode AD runs under the MATH attention kernel (flash/efficient SDPA kernels have no forward-AD formula).
- The LoRA runs on its own float32 copy of the UNet whatever the prior's dtype, and L2-VSD refuses anything else
  (``lora_copy_unet=False``, ``lora_dtype`` other than "float32"): with a UNet shared with the prior, peft's adapter
  switching calls requires_grad_() inside the functorch transform, which fails; under bf16 the jvp mixed a float32
  tangent with bf16 weights on CUDA ("expected mat1 and mat2 to have the same dtype"), and the first-order term,
  ~1e-2 of eps, would be lost to bf16's 3 significant digits.
- torch builds its forward-AD decompositions on the first jvp of a process by scripting 18 helpers with
  torch.jit.script, which warns (DeprecationWarning) each time; ``_load_jvp_decompositions`` does that import
  once with exactly those warnings silenced.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch.func import functional_call, jvp

from .base import DistillInput, DistillOutput
from .lora import LoRAConfig, math_attention
from .vsd import VSD, VSDConfig


@dataclass
class L2VSDConfig(VSDConfig):
    """VSDConfig plus the lookahead (L2 Eq. 7) and the last-layer approximation.

    lookahead_lr: the paper's eta, the SGD step size of the linearized lookahead (0 gives VSD).
    lookahead_reduction: "mean": v = -2 eta Delta / D (an SGD step on the mean MSE); "sum": v = -2 eta Delta.
    last_layer: tangents only on the adapter closest to the output.
    """

    lookahead_lr: float = 0.01
    lookahead_reduction: str = "mean"
    last_layer: bool = False
    lora: LoRAConfig = field(default_factory=lambda: LoRAConfig(dtype="float32"))

    renamed_options: ClassVar[dict[str, str]] = {
        **VSDConfig.renamed_options,
        "eta": "lookahead_lr",
        "eta_reduction": "lookahead_reduction",
    }

    def __post_init__(self):
        super().__post_init__()
        if self.lookahead_lr < 0:
            raise ValueError(
                f"L2-VSD's lookahead_lr (the paper's eta) is {self.lookahead_lr}; use >= 0 (the paper tries "
                "1e-3 .. 1; 0 gives VSD)"
            )
        if self.lookahead_reduction not in ("mean", "sum"):
            raise ValueError(
                f"lookahead_reduction is {self.lookahead_reduction!r}; use 'mean' (SGD step on the mean MSE) or 'sum'"
            )
        if self.order != "vsd":
            raise ValueError("L2-VSD has its own order (linearized lookahead); leave `order` unset or use method vsd")
        if self.lora_steps_per_iter < 1:
            raise ValueError("L2-VSD needs lora_steps_per_iter >= 1 (its correction is the score model's next step)")
        if not self.lora.copy_unet:
            raise ValueError(
                "L2-VSD needs lora_copy_unet=True: its jvp runs through the LoRA's UNet, and on a UNet shared with the "
                "prior peft's adapter switching fails inside the functorch transform (it costs one more UNet in memory)"
            )
        if self.lora.dtype != "float32":
            raise ValueError(
                f"L2-VSD runs its LoRA copy in float32 (lora_dtype='float32', the default), not {self.lora.dtype!r}: "
                "under bf16 the jvp mixed dtypes on CUDA, and its first-order term (~1e-2 of eps) is below bf16's "
                "precision"
            )


@functools.cache
def _load_jvp_decompositions() -> None:
    """Import torch's forward-AD decompositions once per process, silencing the torch.jit.script
    DeprecationWarnings that its import raises (torch/_decomp/decompositions_for_jvp.py scripts its helpers; nothing
    of ours is scripted). Cached, so the warning filters are touched only on the first call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=DeprecationWarning)
        importlib.import_module("torch._decomp.decompositions_for_jvp")


class L2VSD(VSD):
    """grad = w(t) (eps_pretrain^cfg(x_t) - eps_{phi_i}(x_t) - J_{phi_i}(x_t) (-2 eta Delta)), eta = lookahead_lr;
    see the module docstring."""

    name = "l2vsd"
    default_guidance = 7.5
    Config = L2VSDConfig

    def __init__(self, prior, guidance: float = 0.0, score_model=None, score_net=None, **options):
        if score_model is not None:
            raise ValueError(
                "L2-VSD differentiates the score model with respect to its parameters: pass a trainable score_net "
                "(or none, to get the LoRA / Gaussian default), not a fixed score_model callable"
            )
        super().__init__(prior, guidance, score_net=score_net, **options)

    def tangent_names(self) -> list[str]:
        names = list(self.score.net.trainable())
        if not self.config.last_layer:
            return names
        last = getattr(self.score.net, "last_layer_names", None)
        return list(last()) if last is not None else names[-1:]

    def lookahead_terms(self, x_t, t, inp: DistillInput, z: torch.Tensor):
        """(eps_{phi_i}(x_t), Delta eps_first, grads, loss): one backward at phi_i on a fresh score-model sample
        (grads = grad_phi of the per-sample sum loss = 2 Delta), then the jvp along v = -2 eta Delta (/ D for
        lookahead_reduction "mean")."""
        net = self.score.net
        params = net.trainable()
        loss = self.score.loss(z, inp, reduction="sum")
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
        names = self.tangent_names()
        scale = self.config.lookahead_lr / (z[0].numel() if self.config.lookahead_reduction == "mean" else 1)
        primals = {k: params[k].detach() for k in names}
        tangents = {k: (-scale * grads[k]).detach() for k in names}
        pose = self.score.pose(inp)

        def eps_of(p):
            return functional_call(net, p, (x_t, t, inp.cond, pose, inp.camera), strict=False).float()

        _load_jvp_decompositions()
        with torch.no_grad(), math_attention():
            eps_i, d_eps = jvp(eps_of, (primals,), (tangents,))
        return eps_i.detach(), d_eps.detach(), grads, loss.detach()

    def gradient(self, inp: DistillInput) -> DistillOutput:
        s = self.noised(inp)
        z, t, x_t = s.z, s.t, s.x_t
        eps_pre = self.guided(x_t, t, inp).eps_cfg
        eps_i, d_eps, grads, loss_sum = self.lookahead_terms(x_t, t, inp, z)
        grad = self.weight(t, z.ndim) * (eps_pre - (eps_i + d_eps))
        # the ordinary score-model step from the same backward (mean-MSE gradient = sum gradient / elements)
        per_sample = z[0].numel()
        self.score.apply_step({k: g / per_sample for k, g in grads.items()})
        info = {"lora_loss": float(loss_sum) / per_sample}
        if self.config.lora_steps_per_iter > 1:
            info.update({"lora_loss_extra": self.score.fit(z, inp, self.config.lora_steps_per_iter - 1)["lora_loss"]})
        info["eps_phi_norm"] = float(eps_i.flatten(1).norm(dim=1).mean())
        info["delta_eps_first_norm"] = float(d_eps.flatten(1).norm(dim=1).mean())
        return self.finish(grad, t, inp, **info)


__all__ = ["L2VSD", "L2VSDConfig"]
