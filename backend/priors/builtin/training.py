"""Training the built-in prior on the toy world (``dreamstill train-prior``, in ``train``).

The model (a pixel-space diffusers UNet2DConditionModel on 2x2 space-to-depth patches, a small CLIPTextModel with the
project's own CLIPTokenizer files, camera features as ``class_labels``) learns

    min E_{x_0, y, c, t, eps} || v_theta(x_t, t; y, c) - v ||^2,   x_t = alpha_t x_0 + sigma_t eps,
    v = alpha_t eps - sigma_t x_0                          (v-prediction, Salimans & Ho 2022)

with alpha_t^2 = bar-alpha_t from the cosine schedule (Nichol & Dhariwal 2021), x_0 = 2 rgb - 1 a toy-world render
from a random camera c of the distillation camera distribution, y its caption (replaced by "" with probability
``caption_dropout`` for classifier-free guidance), t ~ U{0..T-1}. Training batches are rendered on the fly from
seeded torch.Generators (``data_rng``, ``noise_rng``), so a run is reproducible from its config; AdamW with linear
warmup and cosine decay, gradient clipping, an EMA of the weights (what is shipped), bf16 autocast on CUDA.
Checkpoints (model, EMA, optimizer, step, RNG states) let a run stop and resume exactly.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import Batches
from .networks import build_models, unet_eps_or_v
from .tokenizer import build_tokenizer, write_tokenizer_files
from .train_config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to lr over ``warmup`` steps, then cosine decay to final_lr_fraction * lr at ``steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    f = cfg.final_lr_fraction
    return cfg.lr * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * p)))


def diffusion_loss(unet, text_encoder, alphas_cumprod, x0, ids, camera, t, eps, cfg: TrainConfig):
    """Mean squared error of the network's v (or eps) prediction at timesteps t with noise eps."""
    abar = alphas_cumprod[t].view(-1, 1, 1, 1)
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    x_t = alpha * x0 + sigma * eps
    target = alpha * eps - sigma * x0 if cfg.prediction_type == "v_prediction" else eps
    tokens = text_encoder(ids).last_hidden_state
    out = unet_eps_or_v(unet, x_t, t, tokens, camera, cfg.pixel_unshuffle)
    return F.mse_loss(out.float(), target)


def _atomic_save(obj, path: Path):
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_pipeline(out: Path, cfg: TrainConfig, unet, text_encoder, tokenizer, scheduler, fp16: bool = True):
    """Write the diffusers layout: model_index.json, unet/, text_encoder/, tokenizer/, scheduler/, dreamstill.json."""
    import copy

    import diffusers

    out.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if fp16 else torch.float32
    copy.deepcopy(unet).to("cpu", dtype).save_pretrained(out / "unet", safe_serialization=True)
    copy.deepcopy(text_encoder).to("cpu", dtype).save_pretrained(out / "text_encoder", safe_serialization=True)
    tok_dir = out / "tokenizer"
    tokenizer.save_pretrained(tok_dir)
    write_tokenizer_files(tok_dir)  # also the plain CLIP vocab.json / merges.txt
    scheduler.save_pretrained(out / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", type(scheduler).__name__],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "vae": [None, None],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (out / "dreamstill.json").write_text(
        json.dumps({"pixel_unshuffle": cfg.pixel_unshuffle, "image_size": cfg.image_size}, indent=2) + "\n"
    )
    (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")


@dataclass
class TrainingState:
    """Everything a run carries from step to step, and what a checkpoint holds: the networks, the EMA of their weights
    (what is shipped), the optimizer, both rngs (data on the CPU, timesteps and noise on the device),
    the step and the loss history."""

    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    scheduler: object
    optimizer: torch.optim.Optimizer
    ema: list[torch.Tensor]
    data_rng: torch.Generator
    noise_rng: torch.Generator
    step: int = 0
    history: list[tuple[int, float]] = field(default_factory=list)
    running_loss: float | None = None

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return list(self.unet.parameters()) + list(self.text_encoder.parameters())

    @classmethod
    def start(cls, cfg: TrainConfig, tokenizer, device: torch.device) -> TrainingState:
        """Seeded networks, AdamW (weight decay on matrices only), the EMA at the initial weights, the rngs."""
        unet, text_encoder, scheduler = build_models(cfg, tokenizer)
        unet.to(device).train()
        text_encoder.to(device).train()
        params = list(unet.parameters()) + list(text_encoder.parameters())
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
            betas=(0.9, 0.99),
        )
        ema = [p.detach().clone().float() for p in params]
        data_rng = torch.Generator().manual_seed(cfg.seed)
        noise_rng = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        return cls(unet, text_encoder, scheduler, opt, ema, data_rng, noise_rng)

    def state_dict(self, cfg: TrainConfig) -> dict:
        return {
            "config": cfg.to_dict(),
            "unet": self.unet.state_dict(),
            "text_encoder": self.text_encoder.state_dict(),
            "ema": self.ema,
            "optimizer": self.optimizer.state_dict(),
            "rng_cpu": self.data_rng.get_state(),
            "rng_device": self.noise_rng.get_state(),
            "step": self.step,
            "history": self.history,
        }

    def load(self, path: Path, cfg: TrainConfig, device: torch.device) -> None:
        """Continue from a checkpoint written with the same config (else ValueError)."""
        if not path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {path}; run without --resume to start")
        ck = torch.load(path, map_location=device, weights_only=False)
        if ck["config"] != cfg.to_dict():
            raise ValueError(f"{path} was written with a different config; resume with the same --config")
        self.unet.load_state_dict(ck["unet"])
        self.text_encoder.load_state_dict(ck["text_encoder"])
        for e, v in zip(self.ema, ck["ema"]):
            e.copy_(v)
        self.optimizer.load_state_dict(ck["optimizer"])
        self.data_rng.set_state(ck["rng_cpu"].cpu())
        self.noise_rng.set_state(ck["rng_device"].cpu())
        self.step = ck["step"]
        self.history = ck["history"]
        self.running_loss = self.history[-1][1] if self.history else None

    def save(self, path: Path, cfg: TrainConfig) -> None:
        _atomic_save(self.state_dict(cfg), path)

    def optimisation_step(self, cfg: TrainConfig, data: Batches, alphas_cumprod: torch.Tensor, bf16: bool) -> float:
        """One AdamW step on a fresh batch (t ~ U{0..T-1}, eps ~ N(0, I)), then the EMA update with decay
        min(ema_decay, (1 + step) / (10 + step)). Returns the batch's loss."""
        params = self.params
        device = alphas_cumprod.device
        for g in self.optimizer.param_groups:
            g["lr"] = lr_at(self.step, cfg)
        x0, ids, cam, _ = data.sample(cfg.batch_size, self.data_rng)
        t = torch.randint(0, cfg.num_train_timesteps, (cfg.batch_size,), generator=self.noise_rng, device=device)
        eps = torch.randn(x0.shape, generator=self.noise_rng, device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = diffusion_loss(self.unet, self.text_encoder, alphas_cumprod, x0, ids, cam, t, eps, cfg)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        self.optimizer.step()
        d = min(cfg.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, [p.detach().float() for p in params], 1 - d)
        self.step += 1
        value = float(loss.detach())
        self.running_loss = value if self.running_loss is None else 0.98 * self.running_loss + 0.02 * value
        return value

    def load_ema_into_networks(self) -> None:
        with torch.no_grad():
            for p, e in zip(self.params, self.ema):
                p.copy_(e.to(p.dtype))


def _training_device(device: str | None) -> torch.device:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    return dev


def _batches(cfg: TrainConfig, tokenizer, device: torch.device) -> Batches:
    data = Batches(cfg, tokenizer, device)
    if cfg.checkpoint_every % data.steps_per_chunk:
        raise ValueError(
            f"checkpoint_every {cfg.checkpoint_every} must be a multiple of render_chunk // batch_size = "
            f"{data.steps_per_chunk} so that a resumed run sees the same batches"
        )
    return data


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    device: str | None = None,
    resume: bool = False,
    steps: int | None = None,
    progress: bool = True,
    log=print,
    time_limit: float | None = None,
) -> Path:
    """Train (or resume) and write the EMA weights in diffusers layout to ``out_dir/model``. Returns that folder.

    ``steps`` overrides how far this call goes (the schedule still follows ``cfg.steps``): a long run can be split
    over calls with --resume. ``time_limit`` (seconds): stop early at the next checkpoint after that long (the
    current EMA is still written, and --resume continues the run).
    """
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = _training_device(device)
    stop = cfg.steps if steps is None else min(steps, cfg.steps)
    tokenizer = build_tokenizer(out / "tokenizer_build", cfg.max_length)
    state = TrainingState.start(cfg, tokenizer, dev)
    ckpt_path = out / "checkpoint.pt"
    if resume:
        state.load(ckpt_path, cfg, dev)
        log(f"resumed from step {state.step}")
    data = _batches(cfg, tokenizer, dev)
    acp = state.scheduler.alphas_cumprod.to(dev, torch.float32)
    bf16 = cfg.bf16 and dev.type == "cuda"
    bar = tqdm(total=stop, initial=state.step, disable=not progress, desc="train-prior", dynamic_ncols=True)
    t_start, start_step = time.time(), state.step
    while state.step < stop:
        state.optimisation_step(cfg, data, acp, bf16)
        step, running = state.step, state.running_loss
        bar.update(1)
        if step % cfg.log_every == 0 or step == stop:
            state.history.append((step, running))
            rate = (step - start_step) / max(1e-9, time.time() - t_start)
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr_at(step, cfg):.2e}", it_s=f"{rate:.2f}")
            if not progress:
                log(f"step {step} loss {running:.4f} lr {lr_at(step, cfg):.2e} {rate:.2f} it/s")
        if step % cfg.checkpoint_every == 0 or step == stop:
            state.save(ckpt_path, cfg)
            if time_limit is not None and time.time() - t_start > time_limit and step < stop:
                log(f"time limit reached at step {step}; resume with --resume")
                break
    bar.close()
    state.load_ema_into_networks()  # ship the EMA weights
    model_dir = out / "model"
    save_pipeline(model_dir, cfg, state.unet.eval(), state.text_encoder.eval(), tokenizer, state.scheduler)
    (out / "loss_history.json").write_text(json.dumps(state.history))
    log(f"wrote {model_dir} at step {state.step}")
    return model_dir
