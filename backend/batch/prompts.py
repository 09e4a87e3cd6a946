"""The names of a batch's results (pure Python: no torch, no bpy); prompt files are read by
``dreamstill.protocol.prompts`` (re-exported here), the one parser for prompt lists."""

from __future__ import annotations

import re

from dreamstill.protocol.prompts import parse_prompts, read_prompts

__all__ = ["output_name", "parse_prompts", "prompt_slug", "read_prompts"]


def prompt_slug(prompt: str, limit: int = 48) -> str:
    """Lower-case words of the prompt joined by '_': ``"A red cube!"`` -> ``"a_red_cube"``."""
    return re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")[:limit].rstrip("_") or "prompt"


def output_name(index: int, prompt: str, fmt: str) -> str:
    """``NNN_words_of_the_prompt.fmt``: sortable, readable, safe on every file system."""
    return f"{index:03d}_{prompt_slug(prompt)}.{fmt}"
