"""Merge `dreamstill eval --json` files into one table: one row per file, plus a prompt-weighted row per method
when a method's prompts were split across several processes (files named METHOD_a.json, METHOD_b.json)."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

KEYS = ("r_at_1", "r_at_1_prompts", "similarity", "geometry", "diversity", "seconds_per_step", "seconds_per_asset")


def main(paths: list[str]) -> None:
    groups: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    print(f"{'run':<16} {'prompts':>7} " + " ".join(f"{k:>17}" for k in KEYS))
    for path in sorted(paths):
        data = json.loads(Path(path).read_text())
        overall, n = data["overall"], len(data.get("per_prompt", [])) or 1
        name = Path(path).stem
        groups[name.split("_")[0] if name[-2:] in ("_a", "_b") else name].append((n, overall))
        print(f"{name:<16} {n:>7} " + " ".join(f"{_fmt(overall.get(k)):>17}" for k in KEYS))
    for method, rows in groups.items():
        if len(rows) > 1:
            total = sum(n for n, _ in rows)
            merged = {k: sum(n * (o.get(k) or 0.0) for n, o in rows) / total for k in KEYS}
            print(f"{method + ' (all)':<16} {total:>7} " + " ".join(f"{_fmt(merged[k]):>17}" for k in KEYS))


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main(sys.argv[1:])
