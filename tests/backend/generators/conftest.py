"""Fixtures of the amortized-generator tests: a three-prompt corpus file and tiny training configurations."""

import pytest

from dreamstill.backend.generators.config import GeneratorTrainConfig


@pytest.fixture
def toy_corpus(tmp_path) -> str:
    """The path of a corpus file of three toy-world prompts (two single objects, one composition)."""
    path = tmp_path / "prompts.txt"
    path.write_text("a red cube\na blue sphere\na green cone on top of a red cube\n")
    return str(path)


@pytest.fixture
def tiny_train_config(toy_corpus):
    """make(**overrides) -> a GeneratorTrainConfig small enough for a CPU test: the toy corpus, the tiny prior, a
    3D-conv generator, 4 steps of 2 prompts at 16 px, no checkpoints or grids."""

    def make(**overrides) -> GeneratorTrainConfig:
        base = dict(
            arch="3dconv",
            method="asd",
            corpus=toy_corpus,
            prior="tiny",
            steps=4,
            prompts_per_step=2,
            resolution=16,
            num_samples=8,
            checkpoint_every=0,
            grid_every=0,
        )
        return GeneratorTrainConfig(**{**base, **overrides})

    return make
