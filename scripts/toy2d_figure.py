"""Draw the papers' 2D particle figures: every distillation method on an exact mixture-of-Gaussians prior.

    python scripts/toy2d_figure.py --out out/toy2d.png [--steps 500] [--particles 256] [--seed 0]

Scores are exact (analytic noising); the renderer is the identity, particles are optimised directly.

Rows 1-2: the target P(x|y) = 0.5 N([1,1], 0.05 I) + 0.5 N([2,1], 0.05 I) with a broad unconditional Gaussian
(moment-matched, + I), then the particles of each method (SDS at CFG 100 and 7.5, CSD, ASD, SSD, FSD, and
VSD/L2-VSD when their modules import), started from N(0, 0.3^2 I) ("empty renderings"), Adam.
Row 3: SSD's toy (Sec. 13, Fig. 7): the same conditional, unconditional P(x) = 0.2 N([0,0], 0.1 I) + 0.4 N([1,1],
0.05 I) + 0.4 N([2,1], 0.05 I) (a "singular mode" at 0); trajectories of a single particle (SGD, lr 0.05) for
mode-seeking only, h only and SSD from the origin, and h only / SSD from the trapping point [1.5, 1].
A table of measurements (mean, covariance trace, mean log-density under P(x|y), mean gradient norm, end points of
the trajectories) is printed. matplotlib is not needed: PIL draws the points.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from dreamstill.backend.distill import make_method
from dreamstill.backend.distill.particles import optimize_particles
from dreamstill.backend.priors.analytic import MixtureOfGaussiansPrior

X_RANGE, Y_RANGE = (-0.75, 2.75), (-0.75, 1.75)
PANEL_W, PANEL_H, TITLE_H = 280, 200, 18
COLOURS = [(214, 39, 40), (31, 119, 180), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75)]


def two_mode_prior() -> MixtureOfGaussiansPrior:
    return MixtureOfGaussiansPrior([0.5, 0.5], [[1.0, 1.0], [2.0, 1.0]], [0.05, 0.05])


def ssd_toy_prior() -> MixtureOfGaussiansPrior:
    return MixtureOfGaussiansPrior(
        [0.5, 0.5],
        [[1.0, 1.0], [2.0, 1.0]],
        [0.05, 0.05],
        uncond_weights=[0.2, 0.4, 0.4],
        uncond_means=[[0.0, 0.0], [1.0, 1.0], [2.0, 1.0]],
        uncond_covs=[0.1, 0.05, 0.05],
    )


def log_density(prior: MixtureOfGaussiansPrior, x: torch.Tensor) -> torch.Tensor:
    """log P(x|y) at t = 0 for x (N, 2)."""
    x = x.double()
    ones = torch.ones(x.shape[0], dtype=torch.float64)
    parts = []
    for w, comp in zip(prior.cond.weights, prior.cond.components):
        _, maha, logdet = comp.noised_terms(x, ones)
        parts.append(w.log() - 0.5 * (maha + logdet + x.shape[1] * math.log(2 * math.pi)))
    return torch.logsumexp(torch.stack(parts, -1), -1)


# --- methods ---------------------------------------------------------------------------------------------------
def method_specs():
    """(label, name, guidance, options, lr) for row 1. The 2D toys use the papers' constant t ranges, not the 3D
    anneals that are the methods' defaults (ASD [500,980] -> [20,500], SSD's t_max drop, FSD's stop at 0.3 T)."""
    full_range = {"min_step_percent": 0.02, "max_step_percent": 0.98}
    return [
        ("SDS  CFG 100", "sds", 100.0, {}, 0.02),
        ("SDS  CFG 7.5", "sds", 7.5, {}, 0.02),
        ("CSD  scale 1", "csd", 1.0, {}, 0.02),
        ("ASD  CFG 7.5", "asd", 7.5, full_range, 0.02),
        ("SSD  M=200", "ssd", 0.0, full_range, 0.02),
        ("FSD  CFG 7.5", "fsd", 7.5, {"t_sampler": "linear", "min_step_percent": 0.02}, 0.01),
        ("VSD  CFG 7.5", "vsd", 7.5, {"lora_lr": 5e-2, "lora_steps_per_iter": 5, "max_step_percent": 0.98}, 0.02),
        ("L2-VSD CFG 7.5", "l2vsd", 7.5, {"lora_lr": 5e-2, "lora_steps_per_iter": 5, "max_step_percent": 0.98}, 0.02),
    ]


def run_row1(prior, steps: int, n: int, seed: int):
    x0 = 0.3 * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    results = []
    for label, name, guidance, options, lr in method_specs():
        start = time.perf_counter()
        try:
            method = make_method(name, prior, guidance=guidance, **options)
            run = optimize_particles(method, x0, steps, lr=lr, seed=seed)
        except (ImportError, ValueError, TypeError) as err:
            print(f"{label:16s} unavailable: {err}", file=sys.stderr)
            results.append((label, None, None, None))
            continue
        results.append((label, run.particles.flatten(1), run.grad_norms, time.perf_counter() - start))
    return x0, results


def run_trajectories(prior, steps: int, seed: int):
    """SSD Fig. 7: one particle, each estimator, recording every step (SGD lr 0.05)."""
    cases = [
        ("mode-seeking, from 0", "mode_seeking", 200, [0.0, 0.0]),
        ("h only, from 0", "mode_disengaging", 200, [0.0, 0.0]),
        ("SSD M=200, from 0", "ssd", 200, [0.0, 0.0]),
        ("SSD M=500, from 0", "ssd", 500, [0.0, 0.0]),
        ("h only, from trap [1.5,1]", "mode_disengaging", 200, [1.5, 1.0]),
        ("SSD M=200, from trap", "ssd", 200, [1.5, 1.0]),
        ("SSD M=500, from trap", "ssd", 500, [1.5, 1.0]),
    ]
    full_range = {"min_step_percent": 0.02, "max_step_percent": 0.98}
    out = []
    for label, estimator, threshold, start in cases:
        method = make_method("ssd", prior, estimator=estimator, threshold_t=threshold, **full_range)
        run = optimize_particles(
            method, torch.tensor([start]), steps, lr=0.05, optimizer="sgd", seed=seed, snapshot_every=1
        )
        path = torch.stack([s.flatten() for s in run.snapshots])
        out.append((label, path))
    return out


# --- drawing ---------------------------------------------------------------------------------------------------
def to_px(x: torch.Tensor) -> list[tuple[float, float]]:
    u = (x[:, 0] - X_RANGE[0]) / (X_RANGE[1] - X_RANGE[0]) * (PANEL_W - 1)
    v = (1 - (x[:, 1] - Y_RANGE[0]) / (Y_RANGE[1] - Y_RANGE[0])) * (PANEL_H - 1)
    return list(zip(u.tolist(), v.tolist()))


def density_background(prior) -> Image.Image:
    xs = torch.linspace(*X_RANGE, PANEL_W)
    ys = torch.linspace(Y_RANGE[1], Y_RANGE[0], PANEL_H)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    dens = log_density(prior, grid).exp()
    shade = (255 - 90 * (dens / dens.max()).sqrt()).clamp(0, 255).byte().reshape(PANEL_H, PANEL_W)
    return Image.fromarray(shade.numpy(), mode="L").convert("RGB")


def panel(background: Image.Image, title: str) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (PANEL_W, PANEL_H + TITLE_H), "white")
    img.paste(background, (0, TITLE_H))
    draw = ImageDraw.Draw(img)
    draw.text((4, 3), title, fill=(0, 0, 0))
    draw.rectangle([0, TITLE_H, PANEL_W - 1, PANEL_H + TITLE_H - 1], outline=(160, 160, 160))
    return img, draw


def dots(draw, x: torch.Tensor, colour, r: float = 1.6):
    for u, v in to_px(x):
        draw.ellipse([u - r, v - r + TITLE_H, u + r, v + r + TITLE_H], fill=colour)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="out/toy2d.png")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--particles", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.steps <= 0 or args.particles <= 0:
        ap.error("--steps and --particles must be positive")
    torch.set_num_threads(1)  # tiny tensors: BLAS threads only contend on a shared machine
    torch.manual_seed(args.seed)
    prior = two_mode_prior()
    bg = density_background(prior)

    x0, results = run_row1(prior, args.steps, args.particles, args.seed)
    target = prior.sample(args.particles, torch.Generator().manual_seed(args.seed + 1)).flatten(1)
    panels = []
    img, draw = panel(bg, "target P(x|y) + start")
    dots(draw, target, (90, 90, 90))
    dots(draw, x0, (31, 119, 180), 1.2)
    panels.append(img)
    print(f"{'method':16s} {'mean':>16s} {'tr cov':>7s} {'logp':>7s} {'|grad|':>8s} {'sec':>5s}")
    tc = torch.cov(target.T)
    print(
        f"{'target':16s} {str([round(v, 2) for v in target.mean(0).tolist()]):>16s} {float(tc.trace()):7.3f} "
        f"{float(log_density(prior, target).mean()):7.2f}"
    )
    for i, (label, x, norms, secs) in enumerate(results):
        img, draw = panel(bg, label if x is not None else f"{label}: n/a")
        if x is not None:
            dots(draw, x, COLOURS[i % len(COLOURS)])
            finite = torch.isfinite(x).all(1)
            xf = x[finite]
            print(
                f"{label:16s} {str([round(v, 2) for v in xf.mean(0).tolist()]):>16s} "
                f"{float(torch.cov(xf.T).trace()):7.3f} {float(log_density(prior, xf).mean()):7.2f} "
                f"{float(norms.mean()):8.3f} {secs:5.1f}"
            )
        panels.append(img)

    toy = ssd_toy_prior()
    trajectories = run_trajectories(toy, args.steps, args.seed)
    row2 = []
    for i, (label, path) in enumerate(trajectories):
        img, draw = panel(bg, label)
        pts = [(u, v + TITLE_H) for u, v in to_px(path)]
        draw.line(pts, fill=COLOURS[i % len(COLOURS)], width=2)
        dots(draw, path[-1:], (0, 0, 0), 3.0)
        row2.append(img)
        end = path[-1]
        print(
            f"trajectory {label:28s} ends at [{end[0]:.3f}, {end[1]:.3f}], "
            f"log P(x|y) = {float(log_density(toy, path[-1:])[0]):.2f}"
        )

    cols = max(len(panels) + 1, len(row2) + 1) // 2
    rows = [panels[i : i + cols] for i in range(0, len(panels), cols)] + [
        row2[i : i + cols] for i in range(0, len(row2), cols)
    ]
    sheet = Image.new("RGB", (cols * PANEL_W, len(rows) * (PANEL_H + TITLE_H)), "white")
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            sheet.paste(im, (c * PANEL_W, r * (PANEL_H + TITLE_H)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
