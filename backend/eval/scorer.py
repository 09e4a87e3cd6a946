"""The toy-world scorer: the role CLIP plays in the papers' R@1 and similarity, for the built-in world.

An image x (and, optionally, the camera c it was taken from) goes through a small CNN f(x, c) whose five heads are
categorical distributions over the grammar's attributes (world.py):

    relation  in {none, on top of, next to}
    shape_1, colour_1                  the first object: the top one for "on top of"; for "next to", the one on
                                       the left of the image (see below); the object itself for a single object
    shape_2, colour_2 in {.., none}    the second object, "none" for a single object

A prompt y parses to one value a_k(y) per head, and the scorer's log-likelihood of y is the sum over the heads,

    log p(y | x, c) = sum_{k=1..5} log softmax(f_k(x, c))[a_k(y)],

with similarity(x, y) = exp(log p(y | x, c) / 5) in [0, 1] (the geometric mean of the five probabilities): a
monotone map of the log-likelihood, so R@1 = argmax_y similarity = argmax_y log p(y | x, c).

Why the camera: "a red cube next to a blue sphere" (the first object at -Y) seen from the back looks like "a blue
sphere next to a red cube" seen from the front, so the order of a "next to" pair is only defined given the azimuth a.
The network itself reads the pair in image order (left object first), which needs no camera; the camera maps the
caption's order to the image's: the caption's first object (at -Y) is on the left when s(a) = cos a - 1e-3 sin a > 0
(the small term breaks the tie at a = +-90 degrees in favour of the object in front), else the pair is swapped.
Without a camera the scorer marginalises the unknown order: log p = log(p(A, B) + p(B, A)) - log 2. Camera
features also enter the network (zeroed for 10% of the training images so that it works without them).

Training data: renders of random toy-world scenes by world.render_scenes from the distillation camera distribution
plus higher elevations up to nearly top-down, lambertian and flat-albedo shading, with augmentations that mimic
distilled assets (blur, shifts and rescaling, brightness, a hazy background, pixel noise). ``train_scorer`` is seeded
and reproduces the shipped weights in backend/eval/scorer_weights/.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..priors.camera import CAMERA_FEATURES, camera_features

WEIGHTS_DIR = Path(__file__).parent / "scorer_weights"
HEADS = ("relation", "shape_1", "colour_1", "shape_2", "colour_2")


def _world():
    from ..priors.builtin import world

    return world


def head_sizes() -> dict[str, int]:
    w = _world()
    return {
        "relation": 1 + len(w.RELATIONS),
        "shape_1": len(w.SHAPES),
        "colour_1": len(w.COLOURS),
        "shape_2": len(w.SHAPES) + 1,
        "colour_2": len(w.COLOURS) + 1,
    }


def scene_targets(scene) -> list[int]:
    """The five head labels of a world Scene (index order of world.SHAPES / COLOURS / RELATIONS; "none" is the last
    class of the second-object heads and class 0 of the relation head)."""
    w = _world()
    colours = list(w.COLOURS)
    a = scene.objects[0]
    rel = 0 if scene.relation is None else 1 + w.RELATIONS.index(scene.relation)
    if scene.is_composition:
        b = scene.objects[1]
        s2, c2 = w.SHAPES.index(b.shape), colours.index(b.colour)
    else:
        s2, c2 = len(w.SHAPES), len(colours)
    return [rel, w.SHAPES.index(a.shape), colours.index(a.colour), s2, c2]


def prompt_targets(prompts: list[str]) -> torch.Tensor:
    """(P, 5) head labels of toy-world prompts; a prompt outside the grammar raises ValueError saying how to fix it."""
    w = _world()
    rows = []
    for p in prompts:
        try:
            rows.append(scene_targets(w.parse_prompt(p)))
        except ValueError as err:
            raise ValueError(f"the toy-world scorer can only score toy-world prompts: {err}") from None
    return torch.tensor(rows, dtype=torch.long).view(-1, len(HEADS))


def _next_to_label() -> int:
    return 1 + _world().RELATIONS.index("next to")


def swap_pairs(targets: torch.Tensor) -> torch.Tensor:
    """(..., 5) labels with the two objects of every "next to" row exchanged."""
    out = targets.clone()
    nt = targets[..., 0] == _next_to_label()
    out[..., 1:3] = torch.where(nt[..., None], targets[..., 3:5], targets[..., 1:3])
    out[..., 3:5] = torch.where(nt[..., None], targets[..., 1:3], targets[..., 3:5])
    return out


def pair_swapped(camera_rows: torch.Tensor) -> torch.Tensor:
    """(B,) bool: True where the caption's first "next to" object (at -Y) is NOT on the image's left, i.e.
    s(a) = cos a - 1e-3 sin a < 0 for the camera's azimuth a (rows (elevation, azimuth, distance, fov))."""
    a = torch.deg2rad(camera_rows[:, 1].float())
    return (a.cos() - 1e-3 * a.sin()) < 0


def image_order_targets(targets: torch.Tensor, camera_rows: torch.Tensor) -> torch.Tensor:
    """(N, 5) caption-order labels -> the labels the network predicts for views from ``camera_rows`` (N, 4)."""
    swap = pair_swapped(camera_rows)
    return torch.where(swap[:, None], swap_pairs(targets), targets)


@dataclass
class ScorerConfig:
    image_size: int = 32
    widths: tuple[int, ...] = (32, 64, 96)
    spatial: int = 4  # the last feature map is pooled to spatial x spatial and flattened (keeps left/right/top)
    squeeze: int = 32  # 1x1 conv channels before flattening
    hidden: int = 256
    camera: bool = True


def _conv(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ToyScorer(nn.Module):
    """CNN with attribute heads over the toy-world grammar (see the module docstring)."""

    def __init__(self, config: ScorerConfig | None = None):
        super().__init__()
        self.config = cfg = config or ScorerConfig()
        layers, cin = [], 3
        for i, w in enumerate(cfg.widths):
            layers.append(_conv(cin, w))
            if i == len(cfg.widths) - 1:
                layers.append(_conv(w, w))
            layers.append(nn.MaxPool2d(2))
            cin = w
        self.trunk = nn.Sequential(*layers)
        self.squeeze = nn.Sequential(nn.Conv2d(cin, cfg.squeeze, 1), nn.ReLU(inplace=True))
        flat = cfg.squeeze * cfg.spatial * cfg.spatial + (CAMERA_FEATURES if cfg.camera else 0)
        self.mlp = nn.Sequential(
            nn.Linear(flat, cfg.hidden), nn.ReLU(inplace=True), nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(inplace=True)
        )
        self.heads = nn.ModuleDict({k: nn.Linear(cfg.hidden, n) for k, n in head_sizes().items()})

    # --- network ----------------------------------------------------------------------------------------------
    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) RGB in [0, 1], got shape {tuple(images.shape)}")
        s = self.config.image_size
        x = images.float()
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        return x * 2 - 1

    def features(self, images: torch.Tensor, cameras=None, drop_camera: torch.Tensor | None = None) -> torch.Tensor:
        """(B, hidden) embedding of the images (used for the diversity metric). ``drop_camera`` (B,) bool zeroes the
        camera features of those rows (the training-time camera dropout)."""
        x = self._prepare(images)
        h = self.squeeze(self.trunk(x))
        h = F.adaptive_avg_pool2d(h, self.config.spatial).flatten(1)
        if self.config.camera:
            cam = self._camera_features(cameras, x.shape[0], x.device)
            if drop_camera is not None:
                cam = cam * (~drop_camera).float()[:, None]
            h = torch.cat([h, cam], 1)
        return self.mlp(h)

    def _camera_features(self, cameras, b: int, device) -> torch.Tensor:
        if cameras is None:
            return torch.zeros(b, CAMERA_FEATURES, device=device)
        cond = cameras.as_condition() if hasattr(cameras, "as_condition") else torch.as_tensor(cameras)
        if cond.shape != (b, 4):
            raise ValueError(
                f"cameras must give one (elevation, azimuth, distance, fov) row per image: {tuple(cond.shape)}"
            )
        return camera_features(cond.float().to(device))

    def forward(self, images: torch.Tensor, cameras=None, drop_camera=None) -> dict[str, torch.Tensor]:
        h = self.features(images, cameras, drop_camera)
        return {k: head(h) for k, head in self.heads.items()}

    # --- scoring ----------------------------------------------------------------------------------------------
    def log_likelihood(self, images: torch.Tensor, prompts: list[str], cameras=None) -> torch.Tensor:
        """(B, P) log p(prompt | image, camera): the sum over heads of the log-probability of the prompt's labels,
        with "next to" pairs in image order for each view's camera (marginalised over the order without one)."""
        targets = prompt_targets(prompts).to(images.device)  # (P, 5) caption order
        logits = self(images, cameras)
        logp = {name: logits[name].log_softmax(-1) for name in HEADS}

        def total(labels):
            return sum(logp[name][:, labels[:, k]] for k, name in enumerate(HEADS))

        as_captioned, swapped = total(targets), total(swap_pairs(targets))
        if cameras is None:
            nt = targets[:, 0] == _next_to_label()
            both = torch.logaddexp(as_captioned, swapped) - math.log(2.0)
            return torch.where(nt[None], both, as_captioned)
        rows = cameras.as_condition() if hasattr(cameras, "as_condition") else torch.as_tensor(cameras)
        return torch.where(pair_swapped(rows.to(images.device))[:, None], swapped, as_captioned)

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: list[str], cameras=None, batch: int = 256) -> torch.Tensor:
        """(B, P) image-text similarity in [0, 1]: exp(log p(prompt | image) / 5). R@1 = argmax over the prompts."""
        was = self.training
        self.eval()
        cam_rows = None
        if cameras is not None:
            cam_rows = cameras.as_condition() if hasattr(cameras, "as_condition") else torch.as_tensor(cameras)
        out = []
        for i in range(0, images.shape[0], batch):
            cams = None if cam_rows is None else cam_rows[i : i + batch]
            out.append((self.log_likelihood(images[i : i + batch], prompts, cams) / len(HEADS)).exp())
        self.train(was)
        return torch.cat(out) if out else torch.zeros(0, len(prompts))

    @torch.no_grad()
    def embed(self, images: torch.Tensor, cameras=None) -> torch.Tensor:
        was = self.training
        self.eval()
        f = self.features(images, cameras)
        self.train(was)
        return f


# ------------------------------------------------------------------------------------------------------------------
# weights on disk


def save_scorer(model: ToyScorer, folder: str | Path, meta: dict | None = None) -> None:
    """config.json + weights.safetensors (float16 for floating tensors) in ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "weights.safetensors"))
    (folder / "config.json").write_text(json.dumps({"config": asdict(model.config), "meta": meta or {}}, indent=2))


def load_scorer(folder: str | Path | None = None, device="cpu") -> ToyScorer:
    """The shipped scorer (backend/eval/scorer_weights/) or one saved by ``train_scorer``; eval mode, float32."""
    from safetensors.torch import load_file

    folder = Path(folder) if folder is not None else WEIGHTS_DIR
    if not (folder / "weights.safetensors").exists():
        raise FileNotFoundError(
            f"no scorer weights in {folder}; train them with `dreamstill train-scorer -o {folder}` "
            "(or reinstall dreamstill, whose package ships them)"
        )
    info = json.loads((folder / "config.json").read_text())
    cfg = info["config"]
    cfg["widths"] = tuple(cfg["widths"])
    model = ToyScorer(ScorerConfig(**cfg))
    state = load_file(str(folder / "weights.safetensors"))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.to(device).eval()


# ------------------------------------------------------------------------------------------------------------------
# training data


@dataclass
class ScorerTrainConfig:
    n_images: int = 32768
    epochs: int = 16
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    seed: int = 0
    render_chunk: int = 128
    single_fraction: float = 0.35
    camera_dropout: float = 0.1
    threads: int = 1
    model: ScorerConfig = field(default_factory=ScorerConfig)


def sample_scorer_cameras(n: int, rng: torch.Generator, spread: bool):
    """Distillation cameras (JobSpec ranges) or, with ``spread``, elevations up to nearly top-down and wider
    distance/fov ranges, as the evaluation views need."""
    from ..render.cameras import sample_cameras

    if spread:
        return sample_cameras(n, rng, elevation_range=(-10.0, 85.0), distance_range=(2.3, 3.2), fov_range=(38.0, 52.0))
    return sample_cameras(n, rng)


def render_training_set(
    n: int,
    seed: int,
    chunk: int = 128,
    single_fraction: float = 0.35,
    prompts=None,
    log=None,
    chunks: range | None = None,
):
    """n renders of random scenes: (images uint8 (n, 3, 32, 32), cameras (n, 4), targets (n, 5)).

    Chunk i (of ``chunk`` images) draws from its own rng seeded (seed, i), so chunks can be rendered in
    parallel (``chunks`` picks a sub-range; concatenating every sub-range in order gives the full set). Chunks
    cycle through shadings: flat albedo (half; what the benchmark draws), lambertian with a jittered light and random
    ambient/diffuse (a quarter), and the world's default light; cameras alternate between the distillation range and
    one that reaches nearly top-down.
    """
    w = _world()
    n_chunks = math.ceil(n / chunk)
    chunks = range(n_chunks) if chunks is None else chunks
    images, cams, targets = [], [], []
    t0 = time.perf_counter()
    for done, i in enumerate(chunks):
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        m = min(chunk, n - i * chunk)
        scenes = w.sample_scenes(m, g, prompts=prompts, single_fraction=single_fraction)
        c = sample_scorer_cameras(m, g, spread=bool((i // 4) % 2))
        kind = i % 4
        if kind in (0, 2):
            cfg = w.RenderConfig(steps=40, ambient=1.0, diffuse=0.0)
        elif kind == 1:
            u = torch.rand(2, generator=g).tolist()
            cfg = w.RenderConfig(steps=40, ambient=0.3 + 0.2 * u[0], diffuse=0.5 + 0.25 * u[1], light_jitter=0.35)
        else:
            cfg = w.RenderConfig(steps=40)
        rgb = w.render_scenes(scenes, c, 32, cfg, rng=g)
        images.append((rgb * 255).round().to(torch.uint8))
        cams.append(c.as_condition())
        targets.append(torch.tensor([scene_targets(s) for s in scenes]))
        if log and (done % 20 == 0):
            log(f"rendered {done + 1}/{len(chunks)} chunks ({time.perf_counter() - t0:.0f} s)")
    return torch.cat(images), torch.cat(cams), torch.cat(targets)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Distilled-asset-like corruptions of clean renders x (B, 3, H, W) in [0, 1]: random rescale (0.8..1.15) and
    shift (+-2 px) on white, Gaussian blur, brightness, a tinted haze over the white background, pixel noise."""
    b, _, h, w = x.shape
    u = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    scale = 0.8 + 0.35 * u(b)
    shift = (u(b, 2) * 2 - 1) * (2.0 / h) * 2  # in normalised coordinates (2 units = image width)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x - 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1  # white outside
    # blur on a random 40 %
    blur_width = 0.3 + 0.7 * u(b)
    k = torch.arange(-2, 3, dtype=torch.float32)
    ker = torch.exp(-(k[None] ** 2) / (2 * blur_width[:, None] ** 2))
    ker = ker / ker.sum(1, keepdim=True)
    blurred = F.conv2d(
        F.pad(x, (2, 2, 0, 0), mode="replicate").reshape(1, b * 3, h, w + 4),
        ker.repeat_interleave(3, 0)[:, None, None, :],
        groups=b * 3,
    ).reshape(b, 3, h, w)
    blurred = F.conv2d(
        F.pad(blurred, (0, 0, 2, 2), mode="replicate").reshape(1, b * 3, h + 4, w),
        ker.repeat_interleave(3, 0)[:, None, :, None],
        groups=b * 3,
    ).reshape(b, 3, h, w)
    x = torch.where((u(b) < 0.4)[:, None, None, None], blurred, x)
    # brightness
    x = x * (0.85 + 0.3 * u(b))[:, None, None, None]
    # haze on the background (pixels that are nearly white) for a random 30 %
    bg = (x.min(1, keepdim=True).values > 0.95).float()
    tint = 0.6 + 0.4 * u(b, 3)
    haze = 0.3 * u(b) * (u(b) < 0.3).float()
    x = x + bg * haze[:, None, None, None] * (tint[:, :, None, None] - x)
    x = x + (0.04 * u(b))[:, None, None, None] * torch.randn(x.shape, generator=g)
    return x.clamp(0, 1)


def train_scorer(
    out_dir: str | Path | None = None, config: ScorerTrainConfig | None = None, log=print, data=None
) -> ToyScorer:
    """Render a seeded training set, train the scorer with AdamW + cosine decay on the summed cross-entropy of the
    five heads, and save it to ``out_dir`` (when given). ``data`` = (images, cameras, targets) skips rendering."""
    cfg = config or ScorerTrainConfig()
    torch.set_num_threads(cfg.threads) if cfg.threads else None
    torch.manual_seed(cfg.seed)
    if data is None:
        log(f"rendering {cfg.n_images} training images (seed {cfg.seed})")
        data = render_training_set(cfg.n_images, cfg.seed, cfg.render_chunk, cfg.single_fraction, log=log)
    images, cams, targets = data
    n = images.shape[0]
    model = ToyScorer(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)),
    )
    g = torch.Generator().manual_seed(cfg.seed + 1)
    model.train()
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=g)
        seen, loss_sum, correct = 0, 0.0, 0
        for i in range(0, n, cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            x = augment(images[idx].float() / 255, g)
            cam, y = cams[idx].clone(), targets[idx]
            # mirror half the batch: the mirror image of a view from azimuth a of scene S is the view from -a of S
            # mirrored in y, which for "next to" is the pair captioned the other way round
            flip = torch.rand(len(idx), generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            cam[:, 1] = torch.where(flip, -cam[:, 1], cam[:, 1])
            y = image_order_targets(torch.where(flip[:, None], swap_pairs(y), y), cam)
            drop = torch.rand(len(idx), generator=g) < cfg.camera_dropout
            logits = model(x, cam, drop_camera=drop)
            loss = sum(F.cross_entropy(logits[k], y[:, j]) for j, k in enumerate(HEADS))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
            pred = torch.stack([logits[k].argmax(1) for k in HEADS], 1)
            correct += (pred == y).all(1).sum().item()
        log(
            f"epoch {epoch + 1}/{cfg.epochs}: loss {loss_sum / seen:.4f}, all-heads accuracy {correct / seen:.3f} "
            f"({time.perf_counter() - t0:.0f} s)"
        )
    model.eval()
    if out_dir is not None:
        meta = {"train": {k: v for k, v in asdict(cfg).items() if k != "model"}, "seconds": time.perf_counter() - t0}
        save_scorer(model, out_dir, meta)
    return model


# ------------------------------------------------------------------------------------------------------------------
# checking the scorer


@torch.no_grad()
def evaluate_scorer(
    scorer: ToyScorer,
    prompts: list[str],
    prompt_set: list[str] | None = None,
    seed: int = 12345,
    n_random_views: int = 16,
    large_set: int = 256,
) -> dict:
    """R@1 of the scorer on held-out ground-truth renders (a render seed the training never used) of ``prompts``.

    Views per prompt: the benchmark's evaluation views (metrics.evaluation_cameras, flat albedo, as the benchmark
    draws assets) and ``n_random_views`` random cameras (distillation range and higher) with jittered lambertian
    light. R@1 is taken over ``prompt_set`` (default: ``prompts``; the benchmark passes its prompts plus hard
    negatives), over ``prompts`` alone, and over ``prompt_set`` plus random other prompts up to ``large_set``.
    """
    from .metrics import evaluation_cameras, r_at_1

    w = _world()
    prompts = list(prompts)
    pset = list(prompt_set) if prompt_set is not None else prompts
    g = torch.Generator().manual_seed(seed)
    others = [p for p in w.all_prompts() if p not in pset]
    pick = torch.randperm(len(others), generator=g)[: max(0, large_set - len(pset))].tolist()
    big = pset + [others[i] for i in pick]
    eval_cams = evaluation_cameras()
    flat = w.RenderConfig(ambient=1.0, diffuse=0.0)
    lit = w.RenderConfig(light_jitter=0.35)
    keys = ("flat", "lit", "small", "big")
    res = {k: [] for k in keys}
    worst = (1.0, "")
    for p in prompts:
        scene = w.parse_prompt(p)
        x1 = w.render_scenes([scene] * len(eval_cams), eval_cams, 32, flat)
        rc = sample_scorer_cameras(n_random_views, g, spread=True)
        x2 = w.render_scenes([scene] * n_random_views, rc, 32, lit, rng=g)
        x = torch.cat([x1, x2])
        c = torch.cat([eval_cams.as_condition(), rc.as_condition()])
        n1 = len(eval_cams)
        s_big = scorer.score(x, big, c)
        s_set = s_big[:, : len(pset)]
        hit = (s_set.argmax(1) == pset.index(p)).float()
        res["flat"].append(hit[:n1].mean().item())
        res["lit"].append(hit[n1:].mean().item())
        res["small"].append(r_at_1(s_big[:, [pset.index(q) for q in prompts]], prompts.index(p)))
        res["big"].append(r_at_1(s_big, big.index(p)))
        worst = min(worst, (hit.mean().item(), p))
    n1, n2 = len(eval_cams), n_random_views
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return {
        f"r_at_1_among_{len(pset)}_prompts": (mean(res["flat"]) * n1 + mean(res["lit"]) * n2) / (n1 + n2),
        "  evaluation views, flat albedo": mean(res["flat"]),
        "  random views, lambertian": mean(res["lit"]),
        f"r_at_1_among_{len(prompts)}_prompts": mean(res["small"]),
        f"r_at_1_among_{len(big)}_prompts": mean(res["big"]),
        "worst_prompt": f"{worst[1]} ({worst[0]:.3f})",
        "prompts": len(prompts),
        "views_per_prompt": n1 + n2,
    }
