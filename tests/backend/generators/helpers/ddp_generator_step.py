"""Run under torchrun: one amortized-training step per rank, then save this rank's generator weights."""

import sys
from pathlib import Path

import torch

from dreamstill.backend.generators.train import GeneratorTrainConfig, GeneratorTrainer, distributed_context

out = Path(sys.argv[1])
corpus = sys.argv[2]
rank, world = distributed_context()
config = GeneratorTrainConfig(
    arch="hyper-ingp",
    method="asd",
    corpus=corpus,
    prior="tiny",
    steps=1,
    prompts_per_step=1,
    resolution=16,
    num_samples=8,
    checkpoint_every=0,
    grid_every=0,
)
trainer = GeneratorTrainer(config, out, rank=rank, world_size=world)
before = torch.cat([p.detach().flatten().clone() for p in trainer.generator.parameters()])
trainer.train_step()
after = torch.cat([p.detach().flatten() for p in trainer.generator.parameters()])
torch.save({"before": before, "after": after}, out / f"rank{rank}.pt")
torch.distributed.destroy_process_group()
