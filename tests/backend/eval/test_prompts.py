"""The benchmark's prompts and the prompts R@1 chooses among."""

from dreamstill.backend.eval.prompts import (
    BENCHMARK_PROMPT_SET,
    BENCHMARK_PROMPTS,
    QUICK_PROMPTS,
    benchmark_prompt_set,
    hard_negatives,
)
from dreamstill.backend.priors.builtin import world as W


def test_benchmark_prompts_are_in_the_grammar_and_mixed():
    assert len(BENCHMARK_PROMPTS) >= 16 and len(set(BENCHMARK_PROMPTS)) == len(BENCHMARK_PROMPTS)
    scenes = [W.parse_prompt(p) for p in BENCHMARK_PROMPTS]
    assert sum(s.is_composition for s in scenes) >= 6 and sum(not s.is_composition for s in scenes) >= 6
    assert {o.shape for s in scenes for o in s.objects} == set(W.SHAPES)
    assert {o.colour for s in scenes for o in s.objects} == set(W.COLOURS)
    assert set(QUICK_PROMPTS) <= set(BENCHMARK_PROMPTS)


def test_hard_negatives_are_one_mistake_away():
    single = hard_negatives("a red cube")
    assert len(single) == len(W.SHAPES) - 1 and "a red cylinder" in single and "a red cube" not in single
    pair = hard_negatives("a red cube on top of a blue sphere")
    assert pair == [
        "a red cylinder on top of a blue sphere",  # each shape by its look-alike
        "a red cube on top of a blue octahedron",
        "a blue sphere on top of a red cube",  # the objects swapped
    ]


def test_prompt_set_is_the_prompts_then_their_negatives_once_each():
    pset = benchmark_prompt_set(("a red cube", "a red cylinder"))
    assert pset[:2] == ("a red cube", "a red cylinder") and len(set(pset)) == len(pset) == 8
    assert BENCHMARK_PROMPT_SET[: len(BENCHMARK_PROMPTS)] == BENCHMARK_PROMPTS and len(BENCHMARK_PROMPT_SET) == 96
