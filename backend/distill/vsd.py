"""Variational Score Distillation (ProlificDreamer, Wang et al. NeurIPS 2023, arXiv 2305.16213, Eq. 9 and Algorithm 1).

VSD treats the 3D parameters theta as a distribution mu(theta | y) and follows the Wasserstein gradient flow of
E_{t,c}[(sigma_t/alpha_t) w(t) KL(q_t^mu(x_t | c, y) || p_t(x_t | y^c))]. Per particle (PD Eq. 9):

    grad_theta L_VSD = E_{t, eps, c}[ w(t) ( eps_pretrain^cfg(x_t, t, y^c) - eps_phi(x_t, t, c, y) ) dg(theta, c)/dtheta ],
    x_t = alpha_t g(theta, c) + sigma_t eps,   w(t) = sigma_t^2 = 1 - abar_t,   CFG s = 7.5 on the pretrained branch,

where eps_phi ~ -sigma_t grad log q_t^mu is a score model of the *rendered* distribution, trained on the renders of
all particles by denoising score matching (PD Eq. 8; ``score_models.py``, in the prior's own prediction type).

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
- "lookahead" (L-VSD, L2-VSD paper Sec. 3.2): phi takes its steps first, then the 3D gradient uses phi_{i+1}.

SDS is VSD with a point mass: if eps_phi(x_t, t) is the noised score of mu = delta(theta) at the particle itself,
q_t = N(alpha_t g, sigma_t^2 I) and eps_phi(x_t) = (x_t - alpha_t g)/sigma_t = eps, so the bracket becomes
eps_pretrain^cfg - eps, SDS's. (Tested to float precision with the same t and eps draws.)

Code versus paper:
- The score model trains in the prior's prediction type (``lora_target="auto"``): v-MSE for a v-prediction prior
  (SD 2.1, the built-in prior), as PD's SD 2.1 LoRA; "epsilon" reproduces this project's earlier eps-MSE.
- The LoRA sees the view-dependent text embedding (the engine hands over only that); PD gives it the plain prompt.
- The LoRA trains on the whole render batch (views x particles) per step; PD uses batch 1.
- Timestep schedule default: PD's hard drop of t_max from 0.98 to 0.5 after a fifth of the run (5k of 25k steps),
  ``max_step_percent=["20%", 0.98, 0.5, "20%"]``; t' for the score model is uniform over all T steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .base import DistillInput, DistillOutput, ScoreDistillation
from .lora import LoRAConfig
from .options import DistillConfig
from .schedules import ScheduledValue
from .score_models import (
    PREDICTION_TARGETS,
    CallableScoreModel,
    GaussianScoreNet,
    TrainedScoreModel,
    build_score_model,
)

ORDERS = ("vsd", "lookahead")


@dataclass
class VSDConfig(DistillConfig):
    """VSD options (JobSpec.options). Besides DistillConfig's (t schedule, weighting, grad_clip, guidance options):

    order: "vsd" (PD) or "lookahead" (L-VSD); see the module docstring.
    lora_steps_per_iter: score-model steps per iteration (PD: 1; L2 Sec. 3.1 tries 1, 2, 5, 10).
    lora_min_step_percent, lora_max_step_percent: the range of t' for score-model training (PD: all of [0, T)).
    lora_target: the score model's loss: "auto" (the prior's prediction type), "epsilon", "v_prediction", "sample".
    lora: the LoRA (lora.LoRAConfig), set field by field as lora_rank, lora_alpha, lora_lr, lora_weight_decay,
        lora_betas, lora_camera_dropout, lora_seed, lora_copy_unet, lora_dtype, lora_target_modules.
    """

    max_step_percent: ScheduledValue = field(default_factory=lambda: ["20%", 0.98, 0.5, "20%"])
    order: str = "vsd"
    lora_steps_per_iter: int = 1
    lora_min_step_percent: float = 0.0
    lora_max_step_percent: float = 1.0
    lora_target: str = "auto"
    lora: LoRAConfig = field(default_factory=LoRAConfig)

    renamed_options: ClassVar[dict[str, str]] = {"camera_dropout": "lora_camera_dropout"}

    def __post_init__(self):
        super().__post_init__()
        if self.order not in ORDERS:
            raise ValueError(f"unknown VSD order {self.order!r}; choose one of {', '.join(ORDERS)}")
        if self.lora_steps_per_iter < 0:
            raise ValueError(f"lora_steps_per_iter is {self.lora_steps_per_iter}; use 0 (frozen score model) or more")
        if not 0.0 <= self.lora_min_step_percent <= self.lora_max_step_percent <= 1.0:
            raise ValueError(
                "need 0 <= lora_min_step_percent <= lora_max_step_percent <= 1, got "
                f"{self.lora_min_step_percent} and {self.lora_max_step_percent}"
            )
        if self.lora_target not in PREDICTION_TARGETS:
            raise ValueError(f"lora_target is {self.lora_target!r}; choose one of {', '.join(PREDICTION_TARGETS)}")


class VSD(ScoreDistillation):
    """grad = w(t) (eps_pretrain^cfg(x_t, t, y^c) - eps_phi(x_t, t, c, y)), CFG 7.5; see the module docstring."""

    name = "vsd"
    default_guidance = 7.5
    Config = VSDConfig

    def __init__(self, prior, guidance: float = 0.0, score_model=None, score_net=None, **options):
        super().__init__(prior, guidance, **options)
        self.score = build_score_model(prior, self.config, score_model, score_net)

    def gradient(self, inp: DistillInput) -> DistillOutput:
        s = self.noised(inp)
        z, t, x_t = s.z, s.t, s.x_t
        steps = self.config.lora_steps_per_iter
        info = {}
        if self.config.order == "lookahead":
            info.update(self.score.fit(z, inp, steps))
        eps_pre = self.guided(x_t, t, inp).eps_cfg
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
