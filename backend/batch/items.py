"""One batch item per prompt: its JobSpec and where its asset goes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .prompts import output_name


@dataclass(frozen=True)
class BatchItem:
    """Prompt number ``index`` (from 1) of the batch, its asset ``path`` and the JobSpec that makes it."""

    index: int
    prompt: str
    path: Path
    spec: object  # dreamstill.protocol.JobSpec


def make_items(prompts: list[str], out_dir: Path, fmt: str, make_spec) -> list[BatchItem]:
    """``make_spec(prompt, path)`` -> JobSpec for each prompt (it raises JobSpecError naming the field to fix)."""
    items = []
    for i, prompt in enumerate(prompts, 1):
        path = out_dir / output_name(i, prompt, fmt)
        items.append(BatchItem(i, prompt, path, make_spec(prompt, path)))
    return items
