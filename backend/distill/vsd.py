"""Variational Score Distillation (ProlificDreamer, Wang et al. NeurIPS 2023; spec_vsd_l2vsd.md Sec. 1).

VSD treats the 3D parameters theta as a distribution mu(theta | y) and follows the Wasserstein gradient flow of
E_{t,c}[(sigma_t/alpha_t) w(t) KL(q_t^mu(x_t | c, y) || p_t(x_t | y^c))]. Per particle (PD Eq. 9):

    grad_theta L_VSD = E_{t, eps, c}[ w(t) ( eps_pretrain^cfg(x_t, t, y^c) - eps_phi(x_t, t, c, y) ) dg(theta, c)/dtheta ],
    x_t = alpha_t g(theta, c) + sigma_t eps,   w(t) = sigma_t^2 = 1 - abar_t,   CFG s = 7.5 on the pretrained branch,

where eps_phi ~ -sigma_t grad log q_t^mu is a score model of the *rendered* distribution, trained on the renders of
all particles by denoising score matching (PD Eq. 8):

    min_phi  E_{t' ~ U{0..T-1}, eps', c}  || eps_phi(alpha_t' sg(g(theta, c)) + sigma_t' eps', t', c, y) - eps' ||^2.

The score model is pluggable:
- ``score_model=callable``: ``score_model(x_t, t) -> eps`` with no training (the 2D harness passes exact scores).
- ``score_net=nn.Module``: any module ``net(x_t, t, text, pose, camera) -> eps`` with a ``trainable()`` dict of its
  parameters phi; it is trained here with its own AdamW (e.g. ``GaussianScoreNet``, the L2 appendix's r(x)).
- neither, on a diffusers-backed prior (anything with ``unet`` and ``unet_forward``): the LoRA of the prior's UNet
  plus the camera MLP of ``lora.py`` (rank 4 on to_q/to_k/to_v/to_out.0, camera dropout 0.1, AdamW lr 1e-4).
- neither, on any other prior (the analytic ones): a ``GaussianScoreNet`` over the prior's model space.

Order within one iteration (``order`` option):
- "vsd" (PD Algorithm 1 and the official code): the 3D gradient uses the CURRENT phi_i; afterwards phi takes
  ``lora_steps_per_iter`` steps on the same (detached) renders, giving phi_{i+1}. Because ``gradient`` returns the
  gradient and the engine steps theta after it returns, computing the gradient with phi_i and then stepping phi
  inside ``gradient`` is exactly PD's "theta step, then phi step" on one render (the phi step does not see theta's
  step, as in PD where both use the same render). threestudio's single joint step is the same computation.
- "lookahead" (L-VSD, L2 Sec. 3.2): phi takes its steps first, then the 3D gradient uses phi_{i+1}.

SDS is VSD with a point mass: if eps_phi(x_t, t) is the noised score of mu = delta(theta) at the particle itself,
q_t = N(alpha_t g, sigma_t^2 I) and eps_phi(x_t) = (x_t - alpha_t g)/sigma_t = eps, so the bracket becomes
eps_pretrain^cfg - eps, SDS's. (Tested to float precision with the same t and eps draws.)

Code versus paper:
- PD trains the LoRA with a v-prediction target because its LoRA base (SD 2.1) predicts v; here the LoRA is the
  prior's own UNet and the loss is the mean eps-MSE (for a v-prediction prior ||v_hat - v||^2 = ||eps_hat - eps||^2
  / alpha_t^2, a different per-t weighting).
- The LoRA sees the view-dependent text embedding (the engine hands over only that); PD gives it the plain prompt.
- The LoRA trains on the whole render batch (views x particles) per step; PD uses batch 1.
- Timestep schedule default: PD's hard drop of t_max from 0.98 to 0.5 after 20% of the run (5k of 25k steps),
  ``max_step_percent=[0.2, 0.98, 0.5, 0.2]``; t' for the score model is uniform over all T steps.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .base import DistillInput, DistillOutput
from .lora import LoRAConfig, LoRAScoreNet, camera_pose_input
from .schedules import DistillConfig, ScheduledValue
from .sds import ScoreDistillation

ORDERS = ("vsd", "lookahead")


@dataclass
class VSDConfig(DistillConfig):
    """VSD options (JobSpec.options). Besides DistillConfig's (t schedule, weighting, grad_clip):

    order: "vsd" (PD) or "lookahead" (L-VSD); see the module docstring.
    lora_steps_per_iter: score-model steps per iteration (PD: 1; L2 Sec. 3.1 tries 1, 2, 5, 10).
    lora_rank, lora_alpha: the adapters (PD/threestudio: rank 4, alpha 4).
    lora_lr, lora_weight_decay: the score model's AdamW (PD: lr 1e-4).
    lora_min_step_percent, lora_max_step_percent: the range of t' for score-model training (PD: all of [0, T)).
    camera_dropout: probability of a zero camera while the LoRA trains (threestudio: 0.1).
    lora_seed: seeds the adapters' initialisation.
    lora_copy_unet: True (default) gives the LoRA a private copy of the prior's UNet; False shares it (less memory).
    lora_dtype: "float32" runs that copy in float32 under a bf16/fp16 prior; "" (default) keeps the prior's dtype.
    """

    max_step_percent: ScheduledValue = field(default_factory=lambda: [0.2, 0.98, 0.5, 0.2])
    order: str = "vsd"
    lora_steps_per_iter: int = 1
    lora_rank: int = 4
    lora_alpha: float = 4.0
    lora_lr: float = 1e-4
    lora_weight_decay: float = 0.0
    lora_min_step_percent: float = 0.0
    lora_max_step_percent: float = 1.0
    camera_dropout: float = 0.1
    lora_seed: int = 0
    lora_copy_unet: bool = True
    lora_dtype: str = ""

    def __post_init__(self):
        super().__post_init__()
        if self.lora_dtype not in ("", "float32", "bfloat16", "float16"):
            raise ValueError(
                f"lora_dtype is {self.lora_dtype!r}; use '' (the prior's), 'float32', 'bfloat16' or 'float16'"
            )
        if self.order not in ORDERS:
            raise ValueError(f"unknown VSD order {self.order!r}; choose one of {', '.join(ORDERS)}")
        if self.lora_steps_per_iter < 0:
            raise ValueError(f"lora_steps_per_iter is {self.lora_steps_per_iter}; use 0 (frozen score model) or more")
        if not 0.0 <= self.lora_min_step_percent <= self.lora_max_step_percent <= 1.0:
            raise ValueError(
                "need 0 <= lora_min_step_percent <= lora_max_step_percent <= 1, got "
                f"{self.lora_min_step_percent} and {self.lora_max_step_percent}"
            )

    def lora_config(self) -> LoRAConfig:
        return LoRAConfig(
            rank=self.lora_rank,
            alpha=self.lora_alpha,
            camera_dropout=self.camera_dropout,
            lr=self.lora_lr,
            weight_decay=self.lora_weight_decay,
            seed=self.lora_seed,
            copy_unet=self.lora_copy_unet,
            dtype=getattr(torch, self.lora_dtype) if self.lora_dtype else None,
        )


# ------------------------------------------------------------------------------------------------------------------
# score models of the rendered distribution
# ------------------------------------------------------------------------------------------------------------------
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

    trainable_model = False

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
    probability ``camera_dropout`` per sample, loss = mean ||eps_phi(x', t', c, y) - eps'||^2, AdamW step.
    """

    trainable_model = True

    def __init__(self, net: nn.Module, prior, config: VSDConfig):
        self.net = net
        self.prior = prior
        self.config = config
        self.optimizer = torch.optim.AdamW(
            list(net.trainable().values()), lr=config.lora_lr, weight_decay=config.lora_weight_decay
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
        """(x', t', eps', pose) for one score-model step, drawn from ``inp.generator`` in that order."""
        g = inp.generator
        big_t = self.prior.num_train_timesteps
        lo = min(int(big_t * self.config.lora_min_step_percent), big_t - 1)
        hi = min(max(int(big_t * self.config.lora_max_step_percent), lo), big_t - 1)
        b = z.shape[0]
        t = torch.randint(lo, hi + 1, (b,), generator=g, device=g.device).to(z.device)
        eps = torch.randn(z.shape, generator=g, device=g.device, dtype=torch.float32).to(z.device)
        drop = torch.rand(b, generator=g, device=g.device).to(z.device) < self.config.camera_dropout
        return self.prior.add_noise(z, eps, t).contiguous(), t, eps, self.pose(inp, drop)

    # --- eps_phi -----------------------------------------------------------------------------------------------
    def eps(self, x_t, t, inp: DistillInput) -> torch.Tensor:
        with torch.no_grad():
            return self.net(x_t, t, inp.cond, self.pose(inp), inp.camera).float()

    def loss(self, z, inp: DistillInput, reduction: str = "mean") -> torch.Tensor:
        """The denoising loss on one fresh draw: "mean" over all elements, or "sum" (per-sample sum of squares,
        averaged over the batch: (1/B) sum_b ||eps_phi(x'_b) - eps'_b||^2, L2-VSD's normalisation)."""
        x, t, eps, pose = self.training_sample(z, inp)
        err = (self.net(x, t, inp.cond, pose, inp.camera).float() - eps).pow(2)
        if reduction == "mean":
            return err.mean()
        return err.flatten(1).sum(1).mean()

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


def _lora_net_for(prior, config: VSDConfig) -> LoRAScoreNet:
    """The LoRA score net of a diffusers-backed prior, called through the prior's own ``unet_forward`` (same input
    transforms, camera features and v/x0 -> eps conversion) on the LoRA's UNet."""
    shadow = copy.copy(prior)  # shallow: shares everything but the ``unet`` attribute set below

    def call_unet(unet, x_t, t, text, camera):
        shadow.unet = unet
        return shadow.unet_forward(x_t, t, text, camera)

    return LoRAScoreNet(prior.unet, config.lora_config(), call_unet)


def build_score_model(prior, config: VSDConfig, score_model=None, score_net=None):
    """Pick the score model (see the module docstring)."""
    if score_model is not None and score_net is not None:
        raise ValueError("pass either score_model (a fixed callable) or score_net (a module to train), not both")
    if score_model is not None:
        if not callable(score_model):
            raise TypeError("score_model must be a callable (x_t, t) -> eps")
        return CallableScoreModel(score_model)
    if score_net is None:
        if hasattr(prior, "unet") and hasattr(prior, "unet_forward"):
            score_net = _lora_net_for(prior, config)
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


# ------------------------------------------------------------------------------------------------------------------
class VSD(ScoreDistillation):
    """grad = w(t) (eps_pretrain^cfg(x_t, t, y^c) - eps_phi(x_t, t, c, y)), CFG 7.5; see the module docstring."""

    name = "vsd"
    default_guidance = 7.5
    Config = VSDConfig

    def __init__(self, prior, guidance: float = 0.0, score_model=None, score_net=None, **options):
        super().__init__(prior, guidance, **options)
        self.score = build_score_model(prior, self.config, score_model, score_net)

    def noisy(self, inp: DistillInput):
        """(z, t, eps, x_t) of the distillation sample: t then eps from ``inp.generator`` (SDS's order).

        z is made contiguous: renders often arrive channels-last, and forward-mode group_norm (L2-VSD's jvp) needs
        contiguous inputs."""
        z = inp.z.detach().contiguous()
        t = self.sample_t(inp)
        eps = self.sample_noise(inp)
        return z, t, eps, self.prior.add_noise(z, eps, t)

    def pretrained_eps(self, x_t, t, inp: DistillInput) -> torch.Tensor:
        with torch.no_grad():
            eps_cfg, _, _ = self.prior.predict_eps_cfg(x_t, t, inp.cond, inp.uncond, self.guidance, inp.camera)
        return eps_cfg

    def gradient(self, inp: DistillInput) -> DistillOutput:
        z, t, eps, x_t = self.noisy(inp)
        steps = self.config.lora_steps_per_iter
        info = {}
        if self.config.order == "lookahead":
            info.update(self.score.fit(z, inp, steps))
        eps_pre = self.pretrained_eps(x_t, t, inp)
        eps_phi = self.score.eps(x_t, t, inp)
        grad = self.weight(t, z.ndim) * (eps_pre - eps_phi)
        if self.config.order == "vsd":
            info.update(self.score.fit(z, inp, steps))
        info["eps_phi_norm"] = float(eps_phi.flatten(1).norm(dim=1).mean())
        return self.finish(grad, t, inp, **info)

    def state_dict(self) -> dict:
        return {"score_model": self.score.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.score.load_state_dict(state.get("score_model", {}))


__all__ = ["VSD", "VSDConfig", "GaussianScoreNet", "CallableScoreModel", "TrainedScoreModel", "build_score_model"]
