"""Numerics fingerprint of the training loops on the tiny prior: run it before and after a refactor and compare.

    python benchmarks/pipeline_fingerprint.py before.pt     # on the old code
    python benchmarks/pipeline_fingerprint.py after.pt      # on the new code
    python benchmarks/pipeline_fingerprint.py --compare before.pt after.pt

Saves, for per-prompt SDS / ASD / VSD (6 steps, lit from step 1) the field parameters, losses and the 32^3 mesh, and
for the three amortized architectures (5 ASD steps, 2 prompts x 2 views) the weights and losses. The comparison
prints whether each is bitwise identical and the largest difference. One thread: bitwise results need it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch


def fingerprint() -> dict:
    from dreamstill.backend.engine import AssetOptimizer
    from dreamstill.backend.generators.config import GeneratorTrainConfig
    from dreamstill.backend.generators.train import GeneratorTrainer
    from dreamstill.backend.priors.tiny import build_tiny_prior
    from dreamstill.protocol import JobSpec

    out, prior = {}, build_tiny_prior(seed=0)
    for method in ("sds", "asd", "vsd"):
        spec = JobSpec(prompt="a red cube", prior="tiny", method=method, steps=6, resolution=32, batch_size=2,
                       mesh_resolution=32, texture_size=0, preview_every=3, seed=3)  # fmt: skip
        opt = AssetOptimizer(spec, prior=prior)
        out[f"opt_{method}_losses"] = torch.tensor([e.loss for e in opt.run() if hasattr(e, "loss")])
        out[f"opt_{method}_params"] = torch.cat([p.detach().flatten() for p in opt.field.parameters()])
        mesh = opt.to_mesh(32) if hasattr(opt, "to_mesh") else opt.extract_mesh(32, 0)
        out[f"opt_{method}_verts"] = torch.from_numpy(mesh.vertices.copy())
    folder = Path(tempfile.mkdtemp(prefix="fingerprint_"))
    (folder / "prompts.txt").write_text("a red cube\na blue sphere\na green cone on top of a red cube\n")
    for arch in ("3dconv", "triplane", "hyper-ingp"):
        config = GeneratorTrainConfig(arch=arch, method="asd", corpus=str(folder / "prompts.txt"), prior="tiny",
                                      steps=5, prompts_per_step=2, views_per_prompt=2, resolution=16, num_samples=8,
                                      checkpoint_every=0, grid_every=0)  # fmt: skip
        trainer = GeneratorTrainer(config, folder / arch, prior=prior)
        out[f"gen_{arch}_losses"] = torch.tensor([trainer.train_step() for _ in range(5)])
        out[f"gen_{arch}_params"] = torch.cat([p.detach().flatten() for p in trainer.generator.parameters()])
    return out


def compare(before: Path, after: Path) -> int:
    a, b = torch.load(before), torch.load(after)
    differ = 0
    for key in a:
        same = key in b and a[key].shape == b[key].shape and torch.equal(a[key], b[key])
        gap = (a[key].float() - b[key].float()).abs().max().item() if same or a[key].shape == b[key].shape else "shape"
        print(f"{key:24s} {'identical' if same else 'DIFFERS'}  max |diff| {gap}")
        differ += not same
    return 1 if differ else 0


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", nargs="?", type=Path, help="write this code's fingerprint here")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), help="compare two fingerprints")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.compare:
        return compare(*args.compare)
    if args.output is None:
        parser.error("give an output file, or --compare BEFORE AFTER")
    torch.save(fingerprint(), args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
