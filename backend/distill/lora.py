"""The variational score model of VSD / L2-VSD: a LoRA of the prior's UNet plus a camera MLP.

ProlificDreamer [PD: Wang et al. 2023, arXiv 2305.16213, Sec. 4 and App. F] estimates the score of the rendered distribution q_t^mu with

    eps_phi(x_t, t, c, y) = UNet_{W + (lora_alpha/r) B A}(x_t, t, y; temb(t) + MLP(c))

- LoRA (peft): every attention projection to_q, to_k, to_v, to_out.0 (self- and cross-attention, in down, mid and up
  blocks) gets W + (lora_alpha/r) B A with rank r = 4 (diffusers' LoRAAttnProcessor default, what PD and threestudio use).
  A starts Gaussian, B starts at zero, so a fresh LoRA equals the frozen UNet.
- Camera MLP: the pose c (the camera-to-world 4x4 flattened, 16 numbers, as PD/threestudio) goes through
  Linear(16, D) -> SiLU -> Linear(D, D), D = the UNet's timestep-embedding width, and is ADDED to the timestep
  embedding (a forward hook on ``unet.time_embedding``), which every ResNet block consumes. The last Linear starts at
  zero (so eps_phi = eps_pretrain at initialisation); threestudio initialises it randomly, which only shifts the
  LoRA's starting point.
- Camera dropout: the LoRA is trained with c replaced by zeros with probability 0.1 (threestudio's
  ``lora_cfg_training``), so the unconditional branch exists for camera-CFG (ESD-style) if someone wants it.

The network is an ``nn.Module`` whose trainable parameters (LoRA A/B and the camera MLP) can be swapped with
``torch.func.functional_call``: L2-VSD differentiates eps_phi with respect to them in forward mode.

Forward-mode AD through ``F.scaled_dot_product_attention`` has no formula for the flash and memory-efficient
kernels (it fails on CPU too); ``math_attention()`` selects the MATH kernel, which supports it.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..priors.base import TextEmbedding

CAMERA_INPUT_DIM = 16  # flattened camera-to-world 4x4
_ADAPTER_IDS = itertools.count()

# call_unet(unet, x_t, t, text, camera) -> eps (float32): how the prior turns a UNet call into an epsilon prediction
UnetCall = Callable[[nn.Module, torch.Tensor, torch.Tensor, TextEmbedding, "torch.Tensor | None"], torch.Tensor]


ADAPTER_PREFIX = "vsd"  # adapter names are this plus a per-instance number, so several score nets can share a UNet
DTYPES = ("", "float32", "bfloat16", "float16")


@dataclass
class LoRAConfig:
    """LoRA of the prior's UNet (defaults per PD/threestudio, see the module docstring). VSD's options set these
    fields as ``lora_<field>`` (e.g. lora_rank=8; lora_alpha is its own name).

    rank, lora_alpha: W + (lora_alpha / rank) B A (peft's name; a scale numerator, not the schedule's alpha_t).
    target_modules: the attention projections that get adapters.
    camera_dropout: probability that the LoRA sees a zero camera while it trains.
    lr, weight_decay, betas: its own AdamW. PD states lr 1e-4 for the LoRA and the camera MLP.
    seed: seeds the Gaussian init of A and the camera MLP (peft draws from the global RNG; we fork it).
    copy_unet: True gives the LoRA its own copy of the prior's UNet (the prior stays untouched, at the memory cost of
        one more UNet); False injects the adapter into the prior's own UNet and disables it around every call that is
        not ours, which saves that memory but mutates a shared object.
    dtype: the copy's dtype, "float32", "bfloat16" or "float16" (e.g. float32 under a bf16 prior); "" keeps the
        prior's. Needs copy_unet.
    """

    rank: int = 4
    lora_alpha: float = 4.0
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    camera_dropout: float = 0.1
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    seed: int = 0
    copy_unet: bool = True
    dtype: str = ""

    def __post_init__(self):
        self.target_modules = tuple(self.target_modules)
        self.betas = tuple(self.betas)
        if self.dtype is None:
            self.dtype = ""
        if self.dtype not in DTYPES:
            raise ValueError(f"lora_dtype is {self.dtype!r}; use '' (the prior's), 'float32', 'bfloat16' or 'float16'")
        if self.dtype and not self.copy_unet:
            raise ValueError(
                "a lora_dtype other than the prior's needs the LoRA's own UNet copy: set lora_copy_unet=True"
            )
        if self.rank < 1:
            raise ValueError(f"lora_rank is {self.rank}; use a positive integer (PD uses 4)")
        if not 0.0 <= self.camera_dropout <= 1.0:
            raise ValueError(f"lora_camera_dropout is {self.camera_dropout}; use a probability in [0, 1] (PD uses 0.1)")
        if self.lr <= 0:
            raise ValueError(f"lora_lr is {self.lr}; use a positive learning rate (PD uses 1e-4)")

    @property
    def torch_dtype(self) -> torch.dtype | None:
        """The copy's torch dtype, or None for the prior's."""
        return getattr(torch, self.dtype) if self.dtype else None


def camera_pose_input(camera: torch.Tensor | None, batch: int, device) -> torch.Tensor:
    """(B, 4) rows (elevation, azimuth, distance, fov) -> (B, 16) flattened camera-to-world; None -> zeros."""
    if camera is None:
        return torch.zeros(batch, CAMERA_INPUT_DIM, device=device)
    from ..render.cameras import Cameras

    cam = camera.float()
    c2w = Cameras(cam[:, 0], cam[:, 1], cam[:, 2], cam[:, 3]).c2w
    return c2w.reshape(cam.shape[0], CAMERA_INPUT_DIM).to(device)


class CameraMLP(nn.Module):
    """c (B, 16) -> (B, D): Linear -> SiLU -> Linear, the last layer zero-initialised."""

    def __init__(self, dim: int, in_dim: int = CAMERA_INPUT_DIM):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.net(c)


def default_call_unet(unet, x_t, t, text, camera):
    """An epsilon-prediction UNet on model space as is (what a bare diffusers UNet does)."""
    return unet(x_t.to(unet.dtype), t, encoder_hidden_states=text.tokens.to(unet.dtype)).sample.float()


@contextlib.contextmanager
def math_attention():
    """Use the MATH scaled-dot-product-attention kernel (forward-mode AD works through it, also on CPU)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        yield


def _release_unet(hook, shared_unet, adapter_name: str) -> None:
    hook.remove()
    if shared_unet is not None and adapter_name in getattr(shared_unet, "peft_config", {}):
        shared_unet.delete_adapters(adapter_name)


def _time_embedding_dim(unet) -> int:
    return unet.time_embedding.linear_2.out_features


class LoRAScoreNet(nn.Module):
    """eps_phi(x_t, t, c, y) as an nn.Module; see the module docstring.

    ``forward(x_t, t, text, pose)`` takes the camera already as the (B, 16) pose input (zeros = dropped); ``camera``
    (B, 4) is the prior's own conditioning for camera-conditioned priors and passes through ``call_unet`` untouched.
    """

    def __init__(self, unet: nn.Module, config: LoRAConfig | None = None, call_unet: UnetCall | None = None):
        super().__init__()
        from peft import LoraConfig

        self.config = config = config or LoRAConfig()
        self.call_unet = call_unet or default_call_unet
        if config.copy_unet:
            unet = copy.deepcopy(unet)
            if config.torch_dtype is not None:
                unet = unet.to(config.torch_dtype)
        unet.requires_grad_(False)
        self.adapter_name = f"{ADAPTER_PREFIX}{next(_ADAPTER_IDS)}"
        dev = next(unet.parameters()).device
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(config.seed)
            unet.add_adapter(
                LoraConfig(
                    r=config.rank,
                    lora_alpha=config.lora_alpha,
                    init_lora_weights="gaussian",
                    target_modules=list(config.target_modules),
                ),
                adapter_name=self.adapter_name,
            )
            self.camera_mlp = CameraMLP(_time_embedding_dim(unet)).to(dev)
        self.unet = unet
        # adapters in float32 whatever the UNet's dtype (bf16 LoRA weights train poorly); peft casts the input
        tag = f".{self.adapter_name}."
        self._lora_names = [n for n, _ in unet.named_parameters() if "lora_" in n and tag in n]
        if not self._lora_names:
            raise RuntimeError(f"no LoRA layers were injected; the UNet has no modules named {config.target_modules}")
        for n, p in unet.named_parameters():
            if n in self._lora_names:
                p.data = p.data.float()
                p.requires_grad_(True)
        self._pose_emb: torch.Tensor | None = None
        # the hook holds only a weak reference, so a UNet shared with the prior does not keep this net alive
        ref = weakref.ref(self)

        def add_pose(module, inputs, output):
            me = ref()
            if me is None or me._pose_emb is None:
                return output
            return output + me._pose_emb.to(output.dtype)

        hook = unet.time_embedding.register_forward_hook(add_pose)
        shared = None if config.copy_unet else unet
        self._release = weakref.finalize(self, _release_unet, hook, shared, self.adapter_name)
        if config.copy_unet:  # a private copy keeps only this adapter on, for good (the copy may carry disabled ones)
            unet.enable_adapters()
            unet.set_adapter(self.adapter_name)
        self._set_active(False)

    def close(self) -> None:
        """Remove the camera hook and (for a shared UNet) the adapter from the UNet; also runs on garbage collection."""
        self._release()

    # --- adapter switching (matters only when the UNet is shared with the prior) ----------------------------------
    def _set_active(self, on: bool) -> None:
        # peft's disable/enable also flip requires_grad on the adapter weights; with a private copy we never switch
        if self.config.copy_unet:
            return
        if on:
            self.unet.enable_adapters()
            self.unet.set_adapter(self.adapter_name)
        else:
            self.unet.disable_adapters()

    @contextlib.contextmanager
    def active(self):
        """Adapters and the camera hook on for the duration; off again afterwards (the prior sees the frozen UNet)."""
        self._set_active(True)
        try:
            yield
        finally:
            self._set_active(False)
            self._pose_emb = None
            if not self.config.copy_unet:
                for p in self.trainable().values():
                    p.requires_grad_(True)

    # --- parameters ----------------------------------------------------------------------------------------------
    def trainable(self) -> OrderedDict[str, torch.Tensor]:
        """phi: LoRA A/B of every adapted layer and the camera MLP, by their names in this module."""
        out = OrderedDict()
        params = dict(self.named_parameters())
        for n in self._lora_names:
            out["unet." + n] = params["unet." + n]
        for n, p in self.camera_mlp.named_parameters():
            out["camera_mlp." + n] = p
        return out

    def last_layer_names(self) -> list[str]:
        """The LoRA A/B of the adapted module closest to the output (L2-VSD's last-layer approximation).

        "Last layer" is not defined in the L2 paper [unclear]; we take the last LoRA-wrapped projection in forward
        order: diffusers registers down_blocks, up_blocks, mid_block in that order, so we order by block group
        (down < mid < up) and keep registration order inside a group. In a diffusers UNet this is the output
        projection (to_out.0) of the last attention of the last up block that has attention.
        """
        group = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}
        lora = [n for n in self.trainable() if n.startswith("unet.")]
        order = sorted(range(len(lora)), key=lambda i: (group.get(lora[i].split(".")[1], 1), i))
        last_module = lora[order[-1]].rsplit(".lora_", 1)[0]
        return [n for n in lora if n.rsplit(".lora_", 1)[0] == last_module]

    def portable_name(self, name: str) -> str:
        """A parameter name without this instance's adapter id (what checkpoints store)."""
        return name.replace(f".{self.adapter_name}.", ".adapter.")

    # --- eps_phi ---------------------------------------------------------------------------------------------------
    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        text: TextEmbedding,
        pose: torch.Tensor,
        camera: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """eps_phi(x_t, t, c, y), float32. ``pose``: (B, 16) camera-MLP input (zeros for the dropped condition)."""
        with self.active():
            self._pose_emb = self.camera_mlp(pose.float())
            return self.call_unet(self.unet, x_t, t, text, camera)
