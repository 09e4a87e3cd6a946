"""Before and after in one table, from `dreamstill eval --json` files: per method, each figure's mean over the
(prompt, seed) assets both sides have, and the paired difference after - before with its standard error.

    python benchmarks/before_after.py --before docs/results/method_comparison_cpu.json \
        --after out/compare_after/*_s0_p*.json --seeds 0
    python benchmarks/before_after.py --before out/sds_density.json --after out/sds_surface.json

A method's label "<method>-density" (eval --no-surface) pairs with "<method>", so the density stage alone and the
surface stage compare like two runs of one method. Figures an older file lacks (Chamfer, normal angle, topology)
are "-" on its side and left out of the difference.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

FIGURES = (
    ("r_at_1", "R@1 (96)"),
    ("r_at_1_prompts", "R@1 (16)"),
    ("similarity", "similarity"),
    ("geometry", "IoU"),
    ("chamfer", "Chamfer"),
    ("normal_angle_deg", "normal angle"),
    ("topology_ok", "topology ok"),
    ("faces", "faces"),
    ("seconds_per_asset", "s / asset"),
)


def seed_records(paths: list[Path], seeds: set[int] | None) -> dict[tuple[str, str, int], dict]:
    """{(method, prompt, seed): that seed's figures} over the files; later files win; "-density" dropped from names."""
    records = {}
    for path in paths:
        for row in json.loads(path.read_text())["per_prompt"]:
            method = row["method"].removesuffix("-density")
            for seed in row.get("seeds", []):
                if seeds is None or seed["seed"] in seeds:
                    records[(method, row["prompt"], seed["seed"])] = seed
    return records


def mean_and_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var / n)


def table(before: dict, after: dict) -> list[str]:
    """Markdown rows: one per (method, figure) with both sides' means over the shared assets and the paired
    difference."""
    shared = defaultdict(list)
    for key in sorted(before.keys() & after.keys()):
        shared[key[0]].append(key)
    lines = ["| method | figure | assets | before | after | after - before (± SE) |", "|---|---|---|---|---|---|"]
    for method, keys in shared.items():
        for name, label in FIGURES:
            pairs = [(before[k].get(name), after[k].get(name)) for k in keys]
            b = [x for x, _ in pairs if x is not None]
            a = [y for _, y in pairs if y is not None]
            diffs = [y - x for x, y in pairs if x is not None and y is not None]
            if not a and not b:
                continue
            cell = lambda v: f"{sum(v) / len(v):.3f}" if v else "-"  # noqa: E731
            diff = "-" if not diffs else "{:+.3f} ± {:.3f}".format(*mean_and_se(diffs))
            lines.append(f"| {method} | {label} | {len(keys)} | {cell(b)} | {cell(a)} | {diff} |")
    return lines


def per_asset(before: dict, after: dict) -> list[str]:
    """Markdown rows: one per shared (method, prompt, seed), each figure as "before -> after"."""
    shown = [f for f in FIGURES if f[0] in ("r_at_1", "geometry", "normal_angle_deg", "topology_ok", "faces")]
    lines = ["| method | prompt | seed | " + " | ".join(label for _, label in shown) + " |"]
    lines.append("|---" * (3 + len(shown)) + "|")
    fmt = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
    for key in sorted(before.keys() & after.keys()):
        cells = [f"{fmt(before[key].get(name))} -> {fmt(after[key].get(name))}" for name, _ in shown]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, nargs="+", required=True, help="eval --json files of the before run")
    parser.add_argument("--after", type=Path, nargs="+", required=True, help="eval --json files of the after run")
    parser.add_argument("--seeds", type=int, nargs="*", default=None, help="only these seeds (default: all)")
    parser.add_argument("--per-asset", action="store_true", help="also a row per asset (prompt, seed)")
    args = parser.parse_args(argv)
    seeds = set(args.seeds) if args.seeds else None
    before, after = seed_records(args.before, seeds), seed_records(args.after, seeds)
    if not before.keys() & after.keys():
        raise SystemExit("no (method, prompt, seed) asset is in both the before and the after files")
    print("\n".join(table(before, after)))
    if args.per_asset:
        print("\n" + "\n".join(per_asset(before, after)))


if __name__ == "__main__":
    main()
