"""What the built-in prior knows: the toy world's words, and a warning for prompts outside them.

The built-in prior and the generators trained on it learnt only the toy world's grammar (``world``): an article,
one of its colours and shapes, and the relations "on top of" and "next to". A prompt outside it ("a hamburger")
still runs, and silently gives an abstract blob; ``out_of_world_warning`` says so in one line, naming what the world
knows and how to use a real prior instead. The engine, the CLI and the add-on show it.
"""

from __future__ import annotations

import re

from . import world as W

ARTICLES: tuple[str, ...] = ("a", "an")
RELATION_WORDS: tuple[str, ...] = tuple(dict.fromkeys(w for rel in W.RELATIONS for w in rel.split()))
KNOWN_WORDS: frozenset[str] = frozenset(ARTICLES + tuple(W.COLOURS) + W.SHAPES + RELATION_WORDS)
REAL_PRIOR = "stabilityai/stable-diffusion-2-1-base"

_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")  # letters and digits, with inner apostrophes or hyphens


def prompt_words(prompt: str) -> list[str]:
    """The prompt's words, lower case, punctuation dropped: "A Red-ish cube, 4K!" -> ["a", "red-ish", "cube", "4k"]."""
    return [w.lower() for w in _WORD.findall(prompt)]


def unknown_words(prompt: str) -> list[str]:
    """The prompt's words the toy world does not know, each once, in the order they first appear."""
    return list(dict.fromkeys(w for w in prompt_words(prompt) if w not in KNOWN_WORDS))


def in_world(prompt: str) -> bool:
    """True when the prompt is a sentence of the toy world's grammar (what the built-in prior was trained on)."""
    try:
        W.parse_prompt(prompt)
    except ValueError:
        return False
    return True


def out_of_world_warning(prompt: str) -> str | None:
    """One line for a prompt the built-in prior was not trained on, or None when the prompt is in its world.

    Names the unknown words (or, when every word is known, says the sentence is outside the grammar), what the world
    knows, and the real prior to use instead."""
    if in_world(prompt):
        return None
    unknown = unknown_words(prompt)
    if unknown:
        shown = ", ".join(repr(w) for w in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        what = f"the built-in prior does not know {shown}"
    else:
        what = "the built-in prior knows these words but not this sentence"
    return (
        f"{what}: it was trained only on 'a <colour> <shape>' and 'a <colour> <shape> on top of|next to "
        f"a <colour> <shape>' with colours {', '.join(W.COLOURS)} and shapes {', '.join(W.SHAPES)}, so this prompt "
        f"gives an abstract shape; for other prompts use a real prior: --prior {REAL_PRIOR} "
        "with its weights in the Hugging Face cache"
    )
