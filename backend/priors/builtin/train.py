"""Train the built-in prior on the toy world: ``dreamstill train-prior [--config FILE] -o DIR [--steps N] [--resume]``.

The model (a pixel-space diffusers UNet2DConditionModel on 2x2 space-to-depth patches, a small CLIPTextModel with the
project's own CLIPTokenizer files, camera features as ``class_labels``) learns

    min E_{x_0, y, c, t, eps} || v_theta(x_t, t; y, c) - v ||^2,   x_t = alpha_t x_0 + sigma_t eps,
    v = alpha_t eps - sigma_t x_0                          (v-prediction, Salimans & Ho 2022)

with alpha_t^2 = bar-alpha_t from the cosine schedule (Nichol & Dhariwal 2021), x_0 = 2 rgb - 1 a toy-world render
from a random camera c of the distillation camera distribution, y its caption (replaced by "" with probability
``caption_dropout`` for classifier-free guidance), t ~ U{0..T-1}. Training batches are rendered on the fly from a
seeded generator, so a run is reproducible from its config; AdamW with linear warmup and cosine decay, gradient
clipping, an EMA of the weights (what is shipped), bf16 autocast on CUDA. Checkpoints (model, EMA, optimizer, step,
RNG states) let a run stop and resume exactly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..camera import CAMERA_FEATURES, camera_features
from . import world as W

DEFAULT_CONFIG = Path(__file__).resolve().parent / "config.json"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


@dataclass
class TrainConfig:
    """Everything that determines the shipped weights. Defaults are a small CPU-sized run; config.json is the real
    one."""

    seed: int = 0
    image_size: int = 32
    pixel_unshuffle: int = 2
    # UNet2DConditionModel
    block_out_channels: tuple = (64, 128, 160)
    layers_per_block: int = 1
    down_block_types: tuple = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    attention_heads: int = 4
    # CLIPTextModel
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    max_length: int = 77
    # schedule
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"
    # data
    split_seed: int = 0
    heldout_fraction: float = 0.1
    single_fraction: float = 0.4
    caption_dropout: float = 0.1
    light_jitter: float = 0.15
    supersample: int = 2
    # optimisation
    steps: int = 200
    batch_size: int = 16
    lr: float = 8e-4
    warmup: int = 50
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    bf16: bool = True
    render_chunk: int = 64  # images rendered per sphere-tracing call (a multiple of batch_size)
    checkpoint_every: int = 500  # a multiple of render_chunk // batch_size (exact resume)
    log_every: int = 50

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown training config key(s) {unknown}; known keys are {sorted(names)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kw)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise FileNotFoundError(f"training config {path} not found; pass an existing --config FILE") from None

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# ------------------------------------------------------------------------------------------------------------------
# components
# ------------------------------------------------------------------------------------------------------------------


def grammar_words() -> list[str]:
    return sorted({w for p in W.all_prompts() for w in p.split()})


def _byte_alphabet() -> list[str]:
    """GPT-2 / CLIP byte-to-unicode table: the 256 symbols a byte-level BPE starts from."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1))
    keep += list(range(ord("\u00ae"), ord("\u00ff") + 1))
    chars, extra = [], 0
    for byte in range(256):
        if byte in keep:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-pair encoding (Sennrich et al. 2016) on the given words, each counted once, with CLIP's "</w>" word end:
    repeatedly merge the most frequent adjacent pair (ties: the lexicographically smallest) until every word is a
    single symbol. Deterministic, so the vocabulary (and the token ids the text encoder learns) never changes."""
    seqs = [list(w[:-1]) + [w[-1] + "</w>"] for w in words]
    merges = []
    while any(len(s) > 1 for s in seqs):
        counts: dict[tuple[str, str], int] = {}
        for s in seqs:
            for pair in zip(s, s[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        best = min(counts, key=lambda pr: (-counts[pr], pr))
        merges.append(best)
        joined = best[0] + best[1]
        for k, s in enumerate(seqs):
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[k] = out
    return merges


def write_tokenizer_files(folder: str | os.PathLike) -> tuple[Path, Path]:
    """vocab.json + merges.txt of a CLIP-format byte-level BPE learnt on the grammar's words: every grammar word is
    one token, and any other text still encodes (byte by byte). Deterministic."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_alphabet()
    vocab: dict[str, int] = {}
    for tok in alphabet + [c + "</w>" for c in alphabet]:
        vocab[tok] = len(vocab)
    merges = learn_merges(grammar_words())
    for a_, b_ in merges:
        vocab.setdefault(a_ + b_, len(vocab))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a_} {b_}\n" for a_, b_ in merges))
    return folder / "vocab.json", folder / "merges.txt"


def build_tokenizer(folder: str | os.PathLike, max_length: int = 77):
    from transformers import CLIPTokenizer

    vocab, merges = write_tokenizer_files(folder)
    return CLIPTokenizer(
        vocab=str(vocab),
        merges=str(merges),
        model_max_length=max_length,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=EOS,
    )


def build_models(cfg: TrainConfig, tokenizer, seed: int | None = None):
    """(unet, text_encoder, scheduler) with seeded random weights (the global RNG is left untouched)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if cfg.image_size % cfg.pixel_unshuffle:
        raise ValueError(f"image_size {cfg.image_size} must be divisible by pixel_unshuffle {cfg.pixel_unshuffle}")
    up = {"DownBlock2D": "UpBlock2D", "CrossAttnDownBlock2D": "CrossAttnUpBlock2D"}
    channels = 3 * cfg.pixel_unshuffle**2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed if seed is None else seed)
        unet = UNet2DConditionModel(
            sample_size=cfg.image_size // cfg.pixel_unshuffle,
            in_channels=channels,
            out_channels=channels,
            block_out_channels=tuple(cfg.block_out_channels),
            layers_per_block=cfg.layers_per_block,
            down_block_types=tuple(cfg.down_block_types),
            up_block_types=tuple(up[d] for d in reversed(cfg.down_block_types)),
            cross_attention_dim=cfg.text_width,
            attention_head_dim=cfg.attention_heads,
            norm_num_groups=32,
            class_embed_type="projection",
            projection_class_embeddings_input_dim=CAMERA_FEATURES,
        )
        text_cfg = CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.text_width,
            intermediate_size=4 * cfg.text_width,
            projection_dim=cfg.text_width,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=cfg.text_heads,
            max_position_embeddings=cfg.max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        text_encoder = CLIPTextModel(text_cfg)
    scheduler = DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
        clip_sample=True,
    )
    return unet, text_encoder, scheduler


def unet_eps_or_v(unet, x_t, t, tokens, camera, r: int):
    """The UNet's raw output on (B, 3, H, W) model-space input via pixel_unshuffle(r) / pixel_shuffle(r)."""
    out = unet(F.pixel_unshuffle(x_t, r), t, encoder_hidden_states=tokens, class_labels=camera_features(camera)).sample
    return F.pixel_shuffle(out, r)


# ------------------------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------------------------


class Batches:
    """Seeded on-the-fly training batches: (x_0 (B,3,H,W) in [-1,1], token ids (B,L), camera (B,4), texts).

    Renders ``chunk`` fresh images at a time (one sphere-tracing call amortises the GPU's launch overhead) and hands
    them out in consecutive batches; every image is used once. A chunk starts at every multiple of
    ``chunk // batch`` steps, so a checkpoint taken at such a step resumes exactly.
    """

    def __init__(self, cfg: TrainConfig, tokenizer, device, chunk: int | None = None):
        self.cfg = cfg
        self.device = torch.device(device)
        self.chunk = max(cfg.batch_size, chunk or cfg.render_chunk)
        self.prompts, _ = W.split_prompts(cfg.split_seed, cfg.heldout_fraction)
        ids = tokenizer(
            self.prompts + [""], padding="max_length", max_length=cfg.max_length, truncation=True, return_tensors="pt"
        ).input_ids
        self.ids = {p: ids[i] for i, p in enumerate(self.prompts + [""])}
        self.render_cfg = W.RenderConfig(supersample=cfg.supersample, light_jitter=cfg.light_jitter)
        self._buffer = None
        self._pos = 0

    @property
    def steps_per_chunk(self) -> int:
        return self.chunk // self.cfg.batch_size

    def render(self, n: int, generator: torch.Generator):
        from ...render.cameras import sample_cameras

        scenes = W.sample_scenes(n, generator, self.prompts, self.cfg.single_fraction)
        cams = sample_cameras(n, generator)
        perm = torch.randperm(n, generator=generator)  # stratified azimuths, shuffled against the scenes
        cams = type(cams)(*(x[perm] for x in (cams.elevation, cams.azimuth, cams.distance, cams.fov)))
        drop = (torch.rand(n, generator=generator) < self.cfg.caption_dropout).tolist()
        texts = ["" if d else W.caption(s) for s, d in zip(scenes, drop)]
        parts = []
        for i in range(0, n, 4096):  # bounded memory per sphere-tracing call
            sub = [scenes[j] for j in range(i, min(n, i + 4096))]
            cam = type(cams)(*(x[i : i + 4096] for x in (cams.elevation, cams.azimuth, cams.distance, cams.fov)))
            parts.append(W.render_scenes(sub, cam.to(self.device), self.cfg.image_size, self.render_cfg, generator))
        rgb = torch.cat(parts)
        ids = torch.stack([self.ids[t] for t in texts]).to(self.device)
        return 2 * rgb - 1, ids, cams.as_condition().to(self.device), texts

    def sample(self, batch: int, generator: torch.Generator):
        if batch != self.cfg.batch_size:
            return self.render(batch, generator)
        if self._buffer is None or self._pos + batch > self.chunk:
            self._buffer = self.render(self.steps_per_chunk * batch, generator)
            self._pos = 0
        sl = slice(self._pos, self._pos + batch)
        self._pos += batch
        x0, ids, cam, texts = self._buffer
        return x0[sl], ids[sl], cam[sl], texts[sl]


# ------------------------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------------------------


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
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    stop = cfg.steps if steps is None else min(steps, cfg.steps)
    tokenizer = build_tokenizer(out / "tokenizer_build", cfg.max_length)
    unet, text_encoder, scheduler = build_models(cfg, tokenizer)
    unet.to(dev).train()
    text_encoder.to(dev).train()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    ema = [p.detach().clone().float() for p in params]
    decay, no_decay = [], []
    for p in params:
        (decay if p.ndim >= 2 else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.99),
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    dev_gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1)
    step = 0
    running = None
    history: list[tuple[int, float]] = []
    ckpt_path = out / "checkpoint.pt"
    if resume:
        if not ckpt_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}; run without --resume to start")
        ck = torch.load(ckpt_path, map_location=dev, weights_only=False)
        if ck["config"] != cfg.to_dict():
            raise ValueError(f"{ckpt_path} was written with a different config; resume with the same --config")
        unet.load_state_dict(ck["unet"])
        text_encoder.load_state_dict(ck["text_encoder"])
        for e, v in zip(ema, ck["ema"]):
            e.copy_(v)
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["rng_cpu"].cpu())
        dev_gen.set_state(ck["rng_device"].cpu())
        step = ck["step"]
        history = ck["history"]
        running = history[-1][1] if history else None
        log(f"resumed from step {step}")

    def checkpoint():
        _atomic_save(
            {
                "config": cfg.to_dict(),
                "unet": unet.state_dict(),
                "text_encoder": text_encoder.state_dict(),
                "ema": ema,
                "optimizer": opt.state_dict(),
                "rng_cpu": gen.get_state(),
                "rng_device": dev_gen.get_state(),
                "step": step,
                "history": history,
            },
            ckpt_path,
        )

    data = Batches(cfg, tokenizer, dev)
    if cfg.checkpoint_every % data.steps_per_chunk:
        raise ValueError(
            f"checkpoint_every {cfg.checkpoint_every} must be a multiple of render_chunk // batch_size = "
            f"{data.steps_per_chunk} so that a resumed run sees the same batches"
        )
    acp = scheduler.alphas_cumprod.to(dev, torch.float32)
    use_bf16 = cfg.bf16 and dev.type == "cuda"
    bar = tqdm(total=stop, initial=step, disable=not progress, desc="train-prior", dynamic_ncols=True)
    running = running if resume else None
    t_start, start_step = time.time(), step
    while step < stop:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        x0, ids, cam, _ = data.sample(cfg.batch_size, gen)
        t = torch.randint(0, cfg.num_train_timesteps, (cfg.batch_size,), generator=dev_gen, device=dev)
        eps = torch.randn(x0.shape, generator=dev_gen, device=dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = diffusion_loss(unet, text_encoder, acp, x0, ids, cam, t, eps, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        d = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach().float() for p in params], 1 - d)
        step += 1
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        bar.update(1)
        if step % cfg.log_every == 0 or step == stop:
            history.append((step, running))
            rate = (step - start_step) / max(1e-9, time.time() - t_start)
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr_at(step, cfg):.2e}", it_s=f"{rate:.2f}")
            if not progress:
                log(f"step {step} loss {running:.4f} lr {lr_at(step, cfg):.2e} {rate:.2f} it/s")
        if step % cfg.checkpoint_every == 0 or step == stop:
            checkpoint()
            if time_limit is not None and time.time() - t_start > time_limit and step < stop:
                log(f"time limit reached at step {step}; resume with --resume")
                break
    bar.close()
    # ship the EMA weights
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e.to(p.dtype))
    model_dir = out / "model"
    save_pipeline(model_dir, cfg, unet.eval(), text_encoder.eval(), tokenizer, scheduler)
    (out / "loss_history.json").write_text(json.dumps(history))
    log(f"wrote {model_dir} at step {step}")
    return model_dir


# ------------------------------------------------------------------------------------------------------------------
# sampling (DDIM) for checks and figures
# ------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_ddim(prior, prompts: list[str], cameras, steps: int = 50, guidance: float = 5.0, generator=None):
    """DDIM (eta 0) samples of a Prior for prompts and cameras (one each): (B, 3, H, W) in [0, 1].

    Uses the prior's eps_hat with classifier-free guidance eps_uncond + s (eps_cond - eps_uncond), x_0 clipped to
    [-1, 1], on the DDIMScheduler with trailing timestep spacing (the first step is at t = T-1).
    """
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(
        prior.scheduler.config, prediction_type="epsilon", timestep_spacing="trailing", clip_sample=True
    )
    sched.set_timesteps(steps)
    b = len(prompts)
    cond = prior.encode_text(list(prompts))
    uncond = prior.encode_text([""])
    x = torch.randn((b, *prior.latent_shape), generator=generator).to(prior.device)
    cam = cameras.as_condition().to(prior.device) if prior.supports_camera else None
    for t in sched.timesteps:
        tt = torch.full((b,), int(t), device=prior.device, dtype=torch.long)
        eps, _, _ = prior.predict_eps_cfg(x, tt, cond, uncond, guidance, cam)
        x = sched.step(eps, t, x, use_clipped_model_output=True).prev_sample
    return prior.decode(x)


def save_grid(images: torch.Tensor, path, ncol: int, scale: int = 2):
    from PIL import Image

    b, _, h, w = images.shape
    nrow = math.ceil(b / ncol)
    grid = torch.ones(nrow * h, ncol * w, 3)
    for i in range(b):
        r, c = divmod(i, ncol)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = images[i].permute(1, 2, 0).float().cpu()
    img = Image.fromarray((grid.clamp(0, 1) * 255).round().byte().numpy())
    img.resize((ncol * w * scale, nrow * h * scale), Image.NEAREST).save(path)


# ------------------------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser):
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="training config JSON (default: the shipped one)")
    p.add_argument("-o", "--output", required=True, help="run folder: checkpoint.pt, logs and model/ go here")
    p.add_argument("--steps", type=int, default=None, help="stop after this step (the schedule follows the config)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    p.add_argument("--time-limit", type=float, default=None, help="stop at the first checkpoint after this many s")


def run(args) -> int:
    cfg = TrainConfig.load(args.config)
    train(
        cfg,
        args.output,
        device=args.device,
        resume=args.resume,
        steps=args.steps,
        progress=not args.no_progress,
        time_limit=args.time_limit,
    )
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``train-prior`` to a ``dreamstill`` argparse subparsers object; the parser's ``func`` runs it."""
    p = subparsers.add_parser("train-prior", help="train the built-in toy-world prior (reproduces the shipped one)")
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="dreamstill train-prior", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())


# prompts of the sample figure: one single per shape, the two compositions, six held-out compositions
SAMPLE_PROMPTS = (
    "a red cube",
    "a blue sphere",
    "a green cylinder",
    "a yellow cone",
    "a purple torus",
    "an orange capsule",
    "a cyan pyramid",
    "a pink octahedron",
    "a red cube on top of a blue sphere",
    "a green cone next to a yellow torus",
    "a red sphere on top of an orange cylinder",
    "a red cylinder on top of a blue cone",
    "an orange sphere next to a blue capsule",
    "a pink cube next to a yellow sphere",
    "a pink cone next to a yellow cone",
    "a purple capsule next to a red octahedron",
)


def sample_figure(
    prior,
    path,
    prompts=SAMPLE_PROMPTS,
    views: int = 4,
    guidance: float = 5.0,
    steps: int = 50,
    seed: int = 0,
    truth: bool = True,
):
    """A PNG grid: one row per prompt, ``views`` DDIM samples at azimuths 0, 90, ... (elevation 20), then (with
    ``truth``) the ground-truth renders from the same cameras. Returns the samples (P*views, 3, H, W)."""
    from ...render.cameras import orbit_cameras

    cams = orbit_cameras(views, elevation=20.0)
    n = len(prompts)
    allc = type(cams)(*(x.repeat(n) for x in (cams.elevation, cams.azimuth, cams.distance, cams.fov)))
    texts = [p for p in prompts for _ in range(views)]
    g = torch.Generator().manual_seed(seed)
    samples = sample_ddim(prior, texts, allc, steps=steps, guidance=guidance, generator=g).cpu()
    if truth:
        gt = render_prompts(texts, allc, prior.image_size)
        rows = torch.cat([samples.view(n, views, *samples.shape[1:]), gt.view(n, views, *gt.shape[1:])], 1)
        save_grid(rows.reshape(-1, *samples.shape[1:]), path, ncol=2 * views, scale=3)
    else:
        save_grid(samples, path, ncol=views, scale=3)
    return samples


def render_prompts(prompts, cameras, size: int = 32) -> torch.Tensor:
    """Ground-truth renders (fixed light) of prompts from cameras, on CPU."""
    scenes = [W.parse_prompt(p) for p in prompts]
    return W.render_scenes(scenes, cameras.to("cpu"), size)
