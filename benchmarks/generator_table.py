"""Print ScaleDreamer's table from benchmarks/generator_grid.sh's JSON files: R@1 (train / held-out) by method,
corpus and architecture, as markdown.

    python benchmarks/generator_table.py out/gen_grid
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CORPORA = ("toy16", "toy256", "toy2000")


def r_at_1(path: Path) -> str:
    if not path.exists():
        return "-"
    return f"{json.loads(path.read_text())['overall']['r_at_1']:.2f}"


def main(folder: str) -> int:
    root = Path(folder)
    runs = sorted({p.name.split(".")[0] for p in root.glob("*_*_*.train.json")})
    if not runs:
        print(f"no <arch>_<method>_<corpus>.train.json files in {root}", file=sys.stderr)
        return 1
    pairs = sorted({tuple(r.rsplit("_", 1)[0].rsplit("_", 1)) for r in runs})
    print("| architecture | method | " + " | ".join(f"{c} train / held-out" for c in CORPORA) + " |")
    print("|---|---|" + "---|" * len(CORPORA))
    for arch, method in pairs:
        cells = [f"{r_at_1(root / f'{arch}_{method}_{c}.train.json')} / {r_at_1(root / f'{arch}_{method}_{c}.heldout.json')}"
                 for c in CORPORA]
        print(f"| {arch} | {method} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "out/gen_grid"))
