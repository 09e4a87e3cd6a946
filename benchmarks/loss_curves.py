"""Training-loss curves of train-generator runs, side by side: the median loss in each window of steps, and for each
later run the first step where its loss differs from the first run's by more than 1% (two runs of the same flags on
one CPU never differ; on a GPU they part within a few dozen steps).

    python benchmarks/loss_curves.py runs/a runs/b --window 500
    python benchmarks/loss_curves.py runs/a.training.log runs/b.training.log   # runs from before losses.csv

A run is a train-generator folder (its losses.csv) or the command's captured output (the progress bar's loss=...).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

BAR_LOSS = re.compile(r"(\d+)/\d+ \[[^\]]*loss=([0-9.e+-]+)\]")


def read_losses(path: Path) -> dict[int, float]:
    """{step: loss} from a run folder's losses.csv, or from a captured progress bar (the last value shown per step)."""
    if path.is_dir():
        rows = (path / "losses.csv").read_text().splitlines()[1:]
        return {int(step): float(loss) for step, loss in (row.split(",") for row in rows)}
    return {int(step): float(loss) for step, loss in BAR_LOSS.findall(path.read_text(errors="ignore"))}


def window_medians(losses: dict[int, float], window: int, last_step: int) -> list[float | None]:
    """Median loss of steps [k w + 1, (k + 1) w] for each window up to ``last_step`` (None: no step logged there)."""
    out = []
    for start in range(0, last_step, window):
        values = [v for s, v in losses.items() if start < s <= start + window]
        out.append(statistics.median(values) if values else None)
    return out


def first_divergence(a: dict[int, float], b: dict[int, float], tolerance: float = 0.01) -> int | None:
    """The first step logged by both where |a - b| > tolerance |a| (None: they agree wherever both logged)."""
    return next((s for s in sorted(set(a) & set(b)) if abs(a[s] - b[s]) > tolerance * abs(a[s])), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="train-generator folders or captured logs")
    parser.add_argument("--window", type=int, default=500, help="steps per window (500)")
    args = parser.parse_args(argv)
    curves = {run: read_losses(run) for run in args.runs}
    empty = [str(run) for run, losses in curves.items() if not losses]
    if empty:
        sys.exit(f"no losses found in {', '.join(empty)} (a train-generator folder or its captured output)")
    last = max(max(losses) for losses in curves.values())
    header = [f"{s + 1}-{min(s + args.window, last)}" for s in range(0, last, args.window)]
    print(f"{'run':<60} {'steps':>6} " + " ".join(f"{h:>11}" for h in header) + "  first >1% apart from run 1")
    first = next(iter(curves.values()))
    for i, (run, losses) in enumerate(curves.items()):
        medians = window_medians(losses, args.window, last)
        cells = " ".join(f"{m:>11.4g}" if m is not None else f"{'-':>11}" for m in medians)
        apart = "" if i == 0 else str(first_divergence(first, losses) or "never")
        print(f"{str(run)[-60:]:<60} {len(losses):>6} {cells}  {apart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
