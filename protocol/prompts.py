"""Prompt lists: the one parser for prompt files and prompt text (pure Python, so Blender's Python imports it).

One prompt a line; surrounding spaces stripped; blank lines and lines starting with ``#`` skipped. ``dreamstill
batch``, amortized-training corpus files and the add-on's batch all read prompts with these rules; the add-on also
lets ';' separate prompts typed into one field.
"""

from __future__ import annotations

import os


def parse_prompts(text: str, separator: str | None = None) -> list[str]:
    """The prompts in ``text``: one a line (and between ``separator``s when one is given), stripped; blank lines and
    ``#`` comment lines dropped."""
    if separator:
        text = text.replace(separator, "\n")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def read_prompts(path: str | os.PathLike) -> list[str]:
    """``parse_prompts`` of a UTF-8 file (OSError when it cannot be read)."""
    with open(path, encoding="utf-8") as f:
        return parse_prompts(f.read())
