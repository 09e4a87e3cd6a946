"""What one benchmark run does: methods, prior, steps, seeds, prompts, views and resolutions."""

from __future__ import annotations

from dataclasses import dataclass, field

from .prompts import BENCHMARK_PROMPT_SET, BENCHMARK_PROMPTS, QUICK_PROMPTS


@dataclass
class BenchmarkConfig:
    methods: tuple[str, ...] = ("sds",)
    prior: str = "builtin"
    steps: int = 0  # 0 = the JobSpec default
    seeds: int = 3
    seed_start: int = 0  # seeds are seed_start, seed_start + 1, ... (to split a run across processes)
    prompts: tuple[str, ...] = BENCHMARK_PROMPTS
    prompt_set: tuple[str, ...] = BENCHMARK_PROMPT_SET  # the prompts R@1 chooses among
    # ScaleDreamer's R@1 chooses among the evaluation prompts alone (no hard negatives): r_at_1_prompts
    reference_prompts: tuple[str, ...] = BENCHMARK_PROMPTS
    guidance: float = 0.0
    options: dict = field(default_factory=dict)
    n_azimuth: int = 8
    elevations: tuple[float, ...] = (0.0, 20.0, 45.0, 80.0)
    render_size: int = 32
    shading: str = "albedo"  # how assets are drawn for scoring (the scorer was trained on flat and shaded renders)
    mesh_resolution: int = 64
    surface: bool = True  # per-prompt assets with the surface stage (JobSpec.surface); False: the density stage alone
    geometry_resolution: int = 48
    device: str | None = None

    @staticmethod
    def quick(**overrides) -> BenchmarkConfig:
        """The smoke setting: 4 prompts, 2 seeds, 50 steps (R@1 still over the full benchmark prompt set)."""
        base = dict(prompts=QUICK_PROMPTS, seeds=2, steps=50)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return BenchmarkConfig(**base)
