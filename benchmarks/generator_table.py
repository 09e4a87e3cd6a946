"""Print ScaleDreamer's table from benchmarks/generator_grid.sh's JSON files as markdown: R@1 and geometry IoU
(train / held-out) by method, corpus and architecture, and ASD's per-prompt R@1 difference from each other method;
with ``--figure PNG``, also one row of renders per run (the first view of its first held-out prompts, the same
prompts in every row); with ``--json OUT``, every run's overall and per-prompt scores in one file.

Each source is a grid folder or a file written by ``--json`` (the grid folders are scratch; the JSON file is what a
docs table is kept as); a run found in several sources is taken from the last. Renders come from folders only.

    python benchmarks/generator_table.py out/gen_grid [--figure docs/results/generator_grid_heldout.png] [--json grid.json]
    python benchmarks/generator_table.py docs/results/generator_grid_cpu.json out/gen_grid --json docs/results/generator_grid_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CORPORA = ("toy16", "toy256", "toy2000")


def load_evals(root: Path, runs: list[tuple[str, str, str]]) -> dict[tuple[str, str, str, str], dict]:
    """Every scored split of every run in a grid folder, read once: (arch, method, corpus, split) -> the eval JSON."""
    evals = {}
    for run in runs:
        for split in ("train", "heldout"):
            path = root / f"{'_'.join(run)}.{split}.json"
            if path.exists():
                evals[(*run, split)] = json.loads(path.read_text())
    return evals


def load_source(source: Path) -> dict[tuple[str, str, str, str], dict]:
    """The evaluations of one source: a grid folder, or a file written by ``--json`` ("arch_method_corpus.split" ->
    overall scores and, where kept, per-prompt scores; files from before per-prompt scores were kept list only the
    prompts, and such runs are not paired)."""
    if source.is_dir():
        return load_evals(source, runs_in(source))
    evals = {}
    for key, evaluation in json.loads(source.read_text()).items():
        name, split = key.split(".")
        evals[(*run_of(name), split)] = evaluation
    return evals


def kept(evaluation: dict) -> dict:
    """What ``--json`` keeps of an evaluation: its overall scores and each prompt's R@1 and geometry IoU."""
    if "per_prompt" not in evaluation:
        return evaluation
    return {
        "overall": evaluation["overall"],
        "per_prompt": [{k: p[k] for k in ("prompt", "r_at_1", "geometry") if k in p} for p in evaluation["per_prompt"]],
    }


def score(evaluation: dict | None, metric: str = "r_at_1") -> str:
    """One overall score of an evaluation, or "-" where the run has not been scored."""
    return "-" if evaluation is None else f"{evaluation['overall'][metric]:.2f}"


def runs_in(root: Path) -> list[tuple[str, str, str]]:
    """(arch, method, corpus) of every run with a training-prompt score in a grid folder."""
    return in_order({run_of(p.name.split(".")[0]) for p in root.glob("*_*_*.train.json")})


def run_of(name: str) -> tuple[str, str, str]:
    """(arch, method, corpus) of a run's name "arch_method_corpus" (arch may hold hyphens, not underscores)."""
    arch_method, corpus = name.rsplit("_", 1)
    return (*arch_method.rsplit("_", 1), corpus)


def in_order(runs) -> list[tuple[str, str, str]]:
    """Runs sorted by architecture, method, then corpus size."""
    return sorted(runs, key=lambda r: (r[0], r[1], CORPORA.index(r[2]) if r[2] in CORPORA else len(CORPORA)))


def table(rows: list[tuple[str, str]], cell) -> str:
    """Markdown: one row per (architecture, method), one "train / held-out" column per corpus, cell(arch, method,
    corpus, split) the text of each half."""
    lines = [
        "| architecture | method | " + " | ".join(f"{c} train / held-out" for c in CORPORA) + " |",
        "|---|---|" + "---|" * len(CORPORA),
    ]
    for arch, method in rows:
        cells = [f"{cell(arch, method, c, 'train')} / {cell(arch, method, c, 'heldout')}" for c in CORPORA]
        lines.append(f"| {arch} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_difference(ours: dict | None, theirs: dict | None) -> str:
    """Mean per-prompt R@1 of one run minus another's on the same prompts, +- its standard error (sample std of the
    n differences / sqrt(n)): the runs of one corpus column are scored on the same prompts."""
    if ours is None or theirs is None or "per_prompt" not in ours or "per_prompt" not in theirs:
        return "-"
    ours, theirs = ({p["prompt"]: p["r_at_1"] for p in e["per_prompt"]} for e in (ours, theirs))
    if ours.keys() != theirs.keys():
        raise SystemExit(f"runs scored on different prompts cannot be paired: {sorted(ours)} / {sorted(theirs)}")
    diffs = [ours[k] - theirs[k] for k in ours]
    mean = sum(diffs) / len(diffs)
    se = (sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs)) ** 0.5 if len(diffs) > 1 else 0.0
    return f"{mean:+.2f} ± {se:.2f}"


def figure(
    roots: list[Path], runs: list[tuple[str, str, str]], evals: dict, path: Path, prompts: int = 8, cell: int = 64
) -> None:
    import torch
    from PIL import Image, ImageDraw

    label_h = 12
    rows = []
    for arch, method, corpus in runs:
        found = [a for a in (r / f"{arch}_{method}_{corpus}.heldout.assets.pt" for r in roots) if a.exists()]
        if found:
            assets = found[-1]
            records = torch.load(assets, weights_only=True)[:prompts]
            label = f"{arch} {method} {corpus}: held-out R@1 {score(evals.get((arch, method, corpus, 'heldout')))}"
            rows.append((label, [r["renders"][0].permute(1, 2, 0).numpy() for r in records]))
    if not rows:
        raise SystemExit(f"no *.heldout.assets.pt in {', '.join(map(str, roots))}")
    sheet = Image.new("RGB", (prompts * cell, len(rows) * (cell + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, images) in enumerate(rows):
        y = r * (cell + label_h)
        draw.text((2, y), label, fill=(0, 0, 0))
        for c, img in enumerate(images):
            sheet.paste(Image.fromarray(img).resize((cell, cell), Image.NEAREST), (c * cell, y + label_h))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    print(f"figure: {path} (columns: the first {prompts} held-out prompts, view 0)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "sources",
        nargs="*",
        default=[Path("out/gen_grid")],
        type=Path,
        help="grid folders or --json files; a run in several is taken from the last",
    )
    parser.add_argument("--figure", type=Path, default=None, help="PNG of held-out renders, one row per run")
    parser.add_argument("--paired", default="asd", help="method compared per prompt with each other one")
    parser.add_argument("--json", type=Path, default=None, help="write every run's scores (overall, per prompt) here")
    args = parser.parse_args(argv)
    evals = {}
    for source in args.sources:
        if not source.exists():
            print(f"{source}: no such grid folder or JSON file", file=sys.stderr)
            return 1
        evals.update(load_source(source))
    runs = in_order({key[:3] for key in evals if key[3] == "train"})
    if not runs:
        print(f"no <arch>_<method>_<corpus>.train scores in {', '.join(map(str, args.sources))}", file=sys.stderr)
        return 1
    rows = list(dict.fromkeys((arch, method) for arch, method, _ in runs))
    for title, metric in (("R@1 among 16 prompts", "r_at_1"), ("geometry IoU", "geometry")):
        print(f"{title}\n" + table(rows, lambda a, m, c, split: score(evals.get((a, m, c, split)), metric)) + "\n")
    others = [(a, m) for a, m in rows if m != args.paired and (a, args.paired) in rows]
    if others:
        print(
            f"R@1 of {args.paired} minus each other method, same prompts (mean per-prompt difference ± standard "
            f"error)\n"
            + table(
                others,
                lambda a, m, c, split: paired_difference(
                    evals.get((a, args.paired, c, split)), evals.get((a, m, c, split))
                ),
            )
            + "\n"
        )
    if args.json:
        scores = {
            f"{a}_{m}_{c}.{split}": kept(evals[(a, m, c, split)])
            for a, m, c in runs
            for split in ("train", "heldout")
            if (a, m, c, split) in evals
        }
        args.json.write_text(json.dumps(scores, indent=1))
        print(f"scores: {args.json} ({len(scores)} evaluations)")
    if args.figure:
        figure([s for s in args.sources if s.is_dir()], runs, evals, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
