"""No function or method in backend/, protocol/ or blender_addon/ is longer than 80 lines (decorators excluded,
docstring included): a longer one does several jobs and should be split."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("backend", "protocol", "blender_addon")
MAX_LINES = 80


def long_functions(source: str, name: str = "<source>", limit: int = MAX_LINES) -> list[tuple[str, int, int]]:
    """(qualified name, first line, length) of every function in ``source`` longer than ``limit`` lines."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qualified = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    length = child.end_lineno - child.lineno + 1
                    if length > limit:
                        found.append((qualified, child.lineno, length))
                visit(child, qualified + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source, name), "")
    return found


def test_checker_counts_lines_from_def_to_last_statement():
    body = "".join(f"        x{i} = {i}\n" for i in range(80))  # def line + 80 statements = 81 lines
    source = f"class A:\n    def short(self):\n        pass\n\n    @staticmethod\n    def long():\n{body}"
    assert long_functions(source) == [("A.long", 6, 81)]
    assert long_functions(source, limit=81) == []


def test_no_function_over_80_lines():
    too_long = [
        f"{path.relative_to(ROOT)}:{line} {name} ({length} lines)"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for name, line, length in long_functions(path.read_text(), str(path))
    ]
    assert not too_long, "split these functions (at most 80 lines each):\n" + "\n".join(too_long)
