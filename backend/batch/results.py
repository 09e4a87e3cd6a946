"""A batch's results on disk: writing them whole, remembering what was written, and checking it on a rerun.

``.batch_done.json`` in the output folder records, for every finished prompt, the size and SHA-256 of each of its
files (the asset, its texture or .mtl, its views). A rerun skips a prompt when ``verify`` finds its files as they
were written; a missing, truncated or changed file makes the prompt run again. An asset with no record (written by
an older dreamstill) counts as done when it is not empty.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MANIFEST_NAME = ".batch_done.json"


def _digest(path: Path) -> dict:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return {"size": path.stat().st_size, "sha256": sha.hexdigest()}


class Manifest:
    """The record of finished prompts in ``out_dir``: {asset name: {file name: {size, sha256}}}."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / MANIFEST_NAME
        try:
            self.entries = json.loads(self.path.read_text()) if self.path.exists() else {}
        except ValueError:
            self.entries = {}

    def record(self, asset: Path, files: list[Path]) -> None:
        """Remember ``files`` (the asset among them) as the finished result of ``asset``; saved at once."""
        self.entries[asset.name] = {p.name: _digest(p) for p in files if p.exists()}
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.entries, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def verify(self, asset: Path) -> str | None:
        """None when ``asset`` and its recorded files are on disk as written; otherwise what is wrong."""
        if not asset.exists():
            return "missing"
        files = self.entries.get(asset.name)
        if files is None:
            return None if asset.stat().st_size > 0 else f"{asset.name} is empty"
        for name, want in files.items():
            path = asset.with_name(name)
            if not path.exists():
                return f"{name} is missing"
            if _digest(path) != want:
                return f"{name} changed since it was written (size or SHA-256 differs)"
        return None


def write_result(out_dir: Path, files: dict[str, bytes], main: str) -> list[Path]:
    """Write a prompt's files into ``out_dir`` whole (temporary names, then renames; ``main`` last)."""
    from ..mesh.export import write_files_atomic

    ordered = [(out_dir / name, data) for name, data in sorted(files.items()) if name != main]
    ordered.append((out_dir / main, files[main]))
    write_files_atomic(ordered)
    return [ordered[-1][0]] + [path for path, _ in ordered[:-1]]
