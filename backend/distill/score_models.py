"""Score models eps_phi of the rendered distribution q_t^mu, for VSD and L2-VSD.

ProlificDreamer (arXiv 2305.16213, Eq. 8) trains eps_phi(x_t, t, c, y) ~ -sigma_t grad log q_t^mu(x_t | c, y) by
denoising score matching on the renders of the current 3D model:

    min_phi  E_{t' ~ U{t'_min..t'_max}, eps', c} lambda(t') || eps_phi(alpha_t' sg(g(theta, c)) + sigma_t' eps', t', c, y) - eps' ||^2,

where lambda(t') puts the loss in the prediction type of the network being adapted (PD trains SD 2.1's LoRA, a
v-prediction UNet, on the v-MSE). The networks here return eps (a diffusers prior converts v or x0 to eps), so with
v = alpha_t eps - sigma_t x0 and the conversion eps_hat = alpha_t v_hat + sigma_t x_t,

    eps_hat - eps = alpha_t (v_hat - v)                  ->  ||v_hat - v||^2   = ||eps_hat - eps||^2 / abar_t
    x0_hat - x0 = -(sigma_t / alpha_t)(eps_hat - eps)    ->  ||x0_hat - x0||^2 = ||eps_hat - eps||^2 (1 - abar_t) / abar_t

so lambda = 1 ("epsilon"), 1 / abar_t ("v_prediction") or (1 - abar_t) / abar_t ("sample"), exactly the raw
network's own MSE. (An eps-MSE on a v-network weights its own v-MSE by abar_t: 0.024 at t = 900 and 0.0009 at
t = 980 on the built-in prior's cosine schedule, so the LoRA barely learned where VSD's correction matters most.)
Rounding: eps_hat - eps is formed in float32 from eps-sized terms; at t = T - 1 on the built-in schedule
(abar = 2.4e-9) that leaves about 1e-3 relative error in v_hat - v, harmless for training.

Three kinds of score model:
- ``CallableScoreModel``: a fixed eps_phi = fn(x_t, t), never trained (the 2D harness passes exact scores).
- ``TrainedScoreModel`` around any module ``net(x_t, t, text, pose, camera) -> eps`` with ``net.trainable()``: the
  LoRA of ``lora.py`` on a diffusers-backed prior, or ``GaussianScoreNet`` (the L2-VSD appendix's r(x)) on a
  low-dimensional analytic prior.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from .base import DistillInput
from .lora import LoRAConfig, LoRAScoreNet, camera_pose_input

if TYPE_CHECKING:
    from .vsd import VSDConfig

PREDICTION_TARGETS = ("auto", "epsilon", "v_prediction", "sample")


def prediction_type_of(prior, target: str = "auto") -> str:
    """The score model's training target: ``target``, or for "auto" the prior's own prediction type (epsilon for a
    prior that does not say, such as the analytic ones)."""
    if target not in PREDICTION_TARGETS:
        raise ValueError(f"score-model target {target!r}; choose one of {', '.join(PREDICTION_TARGETS)}")
    return getattr(prior, "prediction_type", "epsilon") if target == "auto" else target


def loss_weight(prediction_type: str, alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """lambda(t) (B,) that turns ||eps_hat - eps||^2 into the MSE of ``prediction_type`` (module docstring)."""
    abar = alphas_cumprod.to(t.device)[t.long()].float()
    if prediction_type == "epsilon":
        return torch.ones_like(abar)
    if prediction_type == "v_prediction":
        return 1.0 / abar
    if prediction_type == "sample":
        return (1.0 - abar) / abar
    raise ValueError(f"unknown prediction type {prediction_type!r}; choose epsilon, v_prediction or sample")


class GaussianScoreNet(nn.Module):
    """A Gaussian score model r = N(m, L L^T) over D-dim model space (the L2-VSD appendix's r(x)):

        eps_phi(x_t, t) = sigma_t (alpha_t^2 L L^T + sigma_t^2 I)^{-1} (x_t - alpha_t m),   phi = (m, L).

    Exact for Gaussian renders once fitted; ignores text and camera. Meant for low D (the 2D harness).
    """

    def __init__(self, alphas_cumprod: torch.Tensor, dim: int, mean=None, factor=None):
        super().__init__()
        self.register_buffer("alphas_cumprod", alphas_cumprod.detach().float().clone())
        self.mean = nn.Parameter(torch.zeros(dim) if mean is None else torch.as_tensor(mean).float().reshape(dim))
        self.factor = nn.Parameter(torch.eye(dim) if factor is None else torch.as_tensor(factor).float())

    def trainable(self) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict(self.named_parameters())

    def forward(self, x_t, t, text=None, pose=None, camera=None):
        b = x_t.shape[0]
        x = x_t.reshape(b, -1)
        abar = self.alphas_cumprod[t.long()].reshape(b, 1)
        alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
        cov = self.factor @ self.factor.T
        eye = torch.eye(x.shape[1], device=x.device, dtype=x.dtype)
        mat = alpha[:, :, None] ** 2 * cov + sigma[:, :, None] ** 2 * eye  # (B, D, D)
        solved = torch.linalg.solve(mat, (x - alpha * self.mean)[..., None])[..., 0]
        return (sigma * solved).view_as(x_t)


class CallableScoreModel:
    """eps_phi = fn(x_t, t): a fixed (possibly exact) score model, never trained."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        self.fn = fn

    def eps(self, x_t, t, inp: DistillInput) -> torch.Tensor:
        return self.fn(x_t, t).float()

    def fit(self, z, inp: DistillInput, steps: int) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class TrainedScoreModel:
    """A parametric eps_phi(x_t, t, c, y) trained by denoising score matching on the renders (PD Eq. 8).

    ``net(x_t, t, text, pose, camera) -> eps`` with ``net.trainable()`` the dict of phi. One training step:
    t' ~ U{t'_min..t'_max}, eps' ~ N(0, I), x' = alpha_t' sg(z) + sigma_t' eps', the camera pose zeroed with
    probability ``lora.camera_dropout`` per sample, loss = mean lambda(t') ||eps_phi(x', t', c, y) - eps'||^2 (the
    MSE in the prior's prediction type, module docstring), AdamW step.
    """

    def __init__(self, net: nn.Module, prior, config: VSDConfig):
        self.net = net
        self.prior = prior
        self.config = config
        self.prediction_type = prediction_type_of(prior, config.lora_target)
        lora = config.lora
        self.optimizer = torch.optim.AdamW(
            list(net.trainable().values()), lr=lora.lr, weight_decay=lora.weight_decay, betas=lora.betas
        )
        self.updates = 0

    # --- draws -------------------------------------------------------------------------------------------------
    def pose(self, inp: DistillInput, drop: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 16) camera-MLP input for the batch; rows where ``drop`` is True are zeros (the dropped condition)."""
        pose = camera_pose_input(inp.camera, inp.z.shape[0], inp.z.device)
        if drop is not None:
            pose = pose * (~drop).to(pose.dtype)[:, None]
        return pose

    def training_sample(self, z: torch.Tensor, inp: DistillInput):
        """(x', t', eps', pose) for one score-model step, drawn from ``inp.rng`` in that order."""
        g = inp.rng
        big_t = self.prior.num_train_timesteps
        lo = min(int(big_t * self.config.lora_min_step_percent), big_t - 1)
        hi = min(max(int(big_t * self.config.lora_max_step_percent), lo), big_t - 1)
        b = z.shape[0]
        t = torch.randint(lo, hi + 1, (b,), generator=g, device=g.device).to(z.device)
        eps = torch.randn(z.shape, generator=g, device=g.device, dtype=torch.float32).to(z.device)
        drop = torch.rand(b, generator=g, device=g.device).to(z.device) < self.config.lora.camera_dropout
        return self.prior.add_noise(z, eps, t).contiguous(), t, eps, self.pose(inp, drop)

    # --- eps_phi -----------------------------------------------------------------------------------------------
    def eps(self, x_t, t, inp: DistillInput) -> torch.Tensor:
        with torch.no_grad():
            return self.net(x_t, t, inp.cond, self.pose(inp), inp.camera).float()

    def loss(self, z, inp: DistillInput, reduction: str = "mean") -> torch.Tensor:
        """The denoising loss on one fresh draw in the prior's prediction type: "mean" over all elements, or "sum"
        (per-sample sum of squares averaged over the batch, (1/B) sum_b lambda_b ||eps_phi(x'_b) - eps'_b||^2:
        L2-VSD's normalisation)."""
        x, t, eps, pose = self.training_sample(z, inp)
        err = (self.net(x, t, inp.cond, pose, inp.camera).float() - eps).pow(2).flatten(1)
        per_sample = err.sum(1) * loss_weight(self.prediction_type, self.prior.alphas_cumprod, t)
        if reduction == "mean":
            return per_sample.mean() / err.shape[1]
        return per_sample.mean()

    def apply_step(self, grads: dict[str, torch.Tensor] | None = None) -> None:
        """One AdamW step of phi with the given gradients (or the ones already in .grad)."""
        if grads is not None:
            for name, p in self.net.trainable().items():
                p.grad = grads[name].to(p.dtype)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.updates += 1

    def fit(self, z, inp: DistillInput, steps: int) -> dict:
        """``steps`` denoising steps on the detached renders z; returns the mean loss (before each step)."""
        losses = []
        for _ in range(steps):
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss(z.detach(), inp)
            loss.backward()
            self.apply_step()
            losses.append(loss.item())
        return {"lora_loss": sum(losses) / len(losses)} if losses else {}

    def _portable(self, name: str) -> str:
        rename = getattr(self.net, "portable_name", None)
        return rename(name) if rename is not None else name

    def state_dict(self) -> dict:
        return {
            "phi": {self._portable(k): v.detach().cpu().clone() for k, v in self.net.trainable().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),  # a snapshot, not the live moments
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict) -> None:
        mine = {self._portable(k): p for k, p in self.net.trainable().items()}
        phi = state["phi"]
        if set(phi) != set(mine):
            raise ValueError(
                "the checkpoint's score model does not match this one (different rank, target modules or prior?): "
                f"{len(set(phi) - set(mine))} unexpected and {len(set(mine) - set(phi))} missing tensors"
            )
        for k, p in mine.items():
            if phi[k].shape != p.shape:
                raise ValueError(
                    f"score-model tensor {k} has shape {tuple(phi[k].shape)} in the checkpoint, {tuple(p.shape)} "
                    "here: build the method with the same options"
                )
        with torch.no_grad():
            for k, p in mine.items():
                p.copy_(phi[k].to(p.device, p.dtype))
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.updates = int(state.get("updates", 0))


def lora_net_for(prior, lora: LoRAConfig) -> LoRAScoreNet:
    """The LoRA score net of a diffusers-backed prior, called through the prior's own ``unet_forward(..., unet=)``
    (same input transforms, camera features and v/x0 -> eps conversion) on the LoRA's UNet."""

    def call_unet(unet, x_t, t, text, camera):
        return prior.unet_forward(x_t, t, text, camera, unet=unet)

    return LoRAScoreNet(prior.unet, lora, call_unet)


def build_score_model(prior, config: VSDConfig, score_model=None, score_net=None):
    """The score model for VSD's ``config``: a fixed ``score_model`` callable, a given ``score_net`` to train, the
    LoRA of a diffusers-backed prior's UNet (anything with ``unet`` and ``unet_forward``), or a GaussianScoreNet over
    a low-dimensional prior's model space."""
    if score_model is not None and score_net is not None:
        raise ValueError("pass either score_model (a fixed callable) or score_net (a module to train), not both")
    if score_model is not None:
        if not callable(score_model):
            raise TypeError("score_model must be a callable (x_t, t) -> eps")
        return CallableScoreModel(score_model)
    if score_net is None:
        if hasattr(prior, "unet") and hasattr(prior, "unet_forward"):
            score_net = lora_net_for(prior, config.lora)
        else:
            dim = math.prod(prior.latent_shape)
            if dim > 64:
                raise ValueError(
                    f"prior {type(prior).__name__} has no UNet to attach a LoRA to and its model space has {dim} "
                    "dims (a Gaussian score model is for low-dim toys): pass score_model= or score_net="
                )
            score_net = GaussianScoreNet(prior.alphas_cumprod, dim).to(prior.device)
    if not hasattr(score_net, "trainable"):
        raise TypeError("score_net must have a trainable() method returning its parameters phi by name")
    return TrainedScoreModel(score_net, prior, config)


__all__ = [
    "CallableScoreModel",
    "GaussianScoreNet",
    "PREDICTION_TARGETS",
    "TrainedScoreModel",
    "build_score_model",
    "lora_net_for",
    "loss_weight",
    "prediction_type_of",
]
