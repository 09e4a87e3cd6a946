"""Prompt files and the names of a batch's results (pure Python: no torch, no bpy).

A prompt file holds one prompt a line; blank lines and lines starting with ``#`` are skipped. This is the one
parser for prompt lists: ``dreamstill batch``, amortized training corpora and the add-on's batch use the same rules.
"""

from __future__ import annotations

import os
import re


def parse_prompts(text: str) -> list[str]:
    """The prompts in ``text``: one a line, stripped; blank lines and ``#`` comment lines dropped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def read_prompts(path: str | os.PathLike) -> list[str]:
    """``parse_prompts`` of a UTF-8 file (OSError when it cannot be read)."""
    with open(path, encoding="utf-8") as f:
        return parse_prompts(f.read())


def prompt_slug(prompt: str, limit: int = 48) -> str:
    """Lower-case words of the prompt joined by '_': ``"A red cube!"`` -> ``"a_red_cube"``."""
    return re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")[:limit].rstrip("_") or "prompt"


def output_name(index: int, prompt: str, fmt: str) -> str:
    """``NNN_words_of_the_prompt.fmt``: sortable, readable, safe on every file system."""
    return f"{index:03d}_{prompt_slug(prompt)}.{fmt}"
