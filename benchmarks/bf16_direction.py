"""How far bf16 turns a method's update direction: the cosine, per sample, between the gradient a method returns with
the prior in bf16 and in float32 on the same inputs (z, prompts, camera, timesteps and noise from the same seed).

z is the built-in prior's encoding of the toy world's own renders of 8 prompts (32 px, one orbit view), and the same
blurred with noise added (a poor render, as early in training); each method at 10%, 50% and 90% of a 2,500-step run
(ASD's timestep anneal depends on it), 4 seeds.

    OMP_NUM_THREADS=2 python benchmarks/bf16_direction.py [--methods sds asd] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch

PROMPTS = (
    "a red cube",
    "a blue sphere",
    "a yellow cone",
    "a green cylinder",
    "a purple torus",
    "a red cube on top of a blue sphere",
    "a cyan cube next to a red pyramid",
    "a pink octahedron",
)


def world_latents(prior, cameras) -> torch.Tensor:
    """The prior's encoding of the toy world's albedo renders of PROMPTS, (B, C, h, w) float32."""
    from dreamstill.backend.eval.assets import GroundTruthAsset

    rgb = torch.stack([GroundTruthAsset(p).render(cameras, 32, 32).rgb[0] for p in PROMPTS]).permute(0, 3, 1, 2)
    with torch.no_grad():
        return prior.encode_images(rgb.float()).float()


def direction_cosines(method: str, priors: dict, z: torch.Tensor, cameras, step: int, seeds: int) -> torch.Tensor:
    """Per sample and seed, cos(grad in bf16, grad in float32)."""
    from dreamstill.backend.distill import make_method
    from dreamstill.backend.distill.base import DistillInput

    cosines = []
    for seed in range(seeds):
        grads = {}
        for name, prior in priors.items():
            inp = DistillInput(
                z=z.clone().requires_grad_(True),
                cond=prior.encode_text(list(PROMPTS)),
                uncond=prior.encode_text([""]),
                step=step,
                total_steps=2500,
                rng=torch.Generator().manual_seed(seed),
                camera=cameras.as_condition().expand(len(PROMPTS), -1),
            )
            grads[name] = make_method(method, prior).gradient(inp).grad.float().flatten(1)
        cosines.append(torch.nn.functional.cosine_similarity(grads["float32"], grads["bf16"], dim=1))
    return torch.cat(cosines)


def main() -> None:
    from dreamstill.backend.priors import load_prior
    from dreamstill.backend.render.cameras import orbit_cameras

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="+", default=["sds", "asd"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", type=int, default=4)
    args = ap.parse_args()
    torch.manual_seed(0)
    priors = {
        name: load_prior("builtin", device=args.device, dtype=d)
        for name, d in (("float32", torch.float32), ("bf16", torch.bfloat16))
    }
    cameras = orbit_cameras(1)
    good = world_latents(priors["float32"], cameras)
    poor = torch.nn.functional.avg_pool2d(good, 3, 1, 1) + 0.3 * torch.randn_like(good)
    for label, z in (("world renders", good), ("blurred + noise", poor)):
        for method in args.methods:
            for fraction in (0.1, 0.5, 0.9):
                c = direction_cosines(method, priors, z.to(args.device), cameras, int(fraction * 2500), args.seeds)
                print(
                    f"{label:16s} {method:4s} at {fraction:.0%} of the run: cos(bf16, float32) mean {c.mean():.3f} min {c.min():.3f}"
                )


if __name__ == "__main__":
    main()
