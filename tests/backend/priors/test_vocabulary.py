"""What the built-in prior knows, and the warning for prompts outside its world (issue 21, item 6)."""

import pytest

from dreamstill.backend.priors.builtin import vocabulary as V
from dreamstill.backend.priors.builtin import world as W
from dreamstill.backend.priors.builtin.tokenizer import grammar_words


def test_known_words_are_the_grammars_words():
    assert V.KNOWN_WORDS == set(grammar_words())
    assert {"on", "top", "of", "next", "to", "a", "an"} <= V.KNOWN_WORDS


@pytest.mark.parametrize(
    "prompt,unknown",
    [
        ("a hamburger", ["hamburger"]),
        ("A red cube, 4K photo of a red cube!", ["4k", "photo"]),
        ("a teal cube next to a teal dog-house", ["teal", "dog-house"]),
        ("a red cube on top of a blue sphere", []),
        ("a cube", []),
    ],
)
def test_unknown_words(prompt, unknown):
    assert V.unknown_words(prompt) == unknown


@pytest.mark.parametrize("prompt", ["a red cube", "  An Orange Torus next to a pink cone. ", W.all_prompts()[-1]])
def test_no_warning_inside_the_world(prompt):
    assert V.out_of_world_warning(prompt) is None


def test_warning_names_the_unknown_words_what_the_world_knows_and_a_real_prior():
    text = V.out_of_world_warning("a juicy hamburger")
    assert "\n" not in text
    assert "'juicy', 'hamburger'" in text
    assert all(s in text for s in W.SHAPES) and all(c in text for c in W.COLOURS)
    assert "on top of|next to" in text
    assert "--prior stabilityai/stable-diffusion-2-1-base" in text and "Hugging Face cache" in text


def test_warning_for_known_words_outside_the_grammar_and_for_many_unknown_words():
    assert "not this sentence" in V.out_of_world_warning("a cube")  # no colour
    many = V.out_of_world_warning("one two three four five six seven")
    assert "'five'" in many and "'six'" not in many and "..." in many
