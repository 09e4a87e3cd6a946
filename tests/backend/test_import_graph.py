"""The backend's packages import each other in one direction only: the package import graph, built with ast from
every import statement (top-level and the lazy ones inside functions), has no cycle.

Nodes are backend's subpackages (engine, jobs, ...) and its top-level modules (cli, cli_args, ...). An edge A -> B
means some module of A imports some module of B. COMPATIBILITY_EDGES lists, by name and with the reason, the edges
kept only so that old import paths work; each should go when its callers are updated.
"""

from __future__ import annotations

import ast
from pathlib import Path

BACKEND = Path(__file__).resolve().parents[2] / "backend"

COMPATIBILITY_EDGES: dict[tuple[str, str], str] = {}


def imported_parts(module_parts: tuple[str, ...], is_package: bool, node: ast.AST) -> list[tuple[str, ...]]:
    """Backend module paths (parts below backend/) an import statement names; other imports give []."""
    prefix = ("dreamstill", "backend")
    if isinstance(node, ast.Import):
        names = [tuple(a.name.split(".")) for a in node.names]
        return [n[2:] for n in names if n[:2] == prefix and len(n) > 2]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level == 0:
        target = tuple((node.module or "").split("."))
        return [target[2:]] if target[:2] == prefix and len(target) > 2 else []
    package = module_parts if is_package else module_parts[:-1]
    base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
    if node.level - 1 > len(package):
        return []  # above backend/: not a backend module
    if node.module:
        return [base + tuple(node.module.split("."))]
    return [base + (alias.name,) for alias in node.names]


def import_graph(root: Path = BACKEND) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        module_parts = parts[:-1] if is_package else parts
        if not module_parts:  # backend/__init__.py
            continue
        source = module_parts[0]  # the subpackage, or the top-level module itself
        edges = graph.setdefault(source, set())
        for statement in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in imported_parts(module_parts, is_package, statement):
                in_backend = (root / target[0]).is_dir() or (root / f"{target[0]}.py").is_file()
                if in_backend and target[0] != source:
                    edges.add(target[0])
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle [a, b, ..., a] of the directed graph, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def describe(graph: dict[str, set[str]]) -> str:
    return "\n".join(f"  {a} -> {', '.join(sorted(b)) or '(nothing)'}" for a, b in sorted(graph.items()))


def test_backend_package_graph_is_acyclic():
    graph = import_graph()
    for (a, b), why in COMPATIBILITY_EDGES.items():
        assert b in graph.get(a, set()), f"compatibility edge {a} -> {b} is gone: remove it from the list ({why})"
        graph[a].discard(b)
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle {' -> '.join(cycle)} in the backend package graph:\n{describe(graph)}"
    # the layers this graph must keep: jobs above engine and generators, generators above engine
    assert {"engine", "generators"} <= graph["jobs"] and "engine" in graph["generators"]


def test_the_checker_finds_cycles_and_relative_imports(tmp_path):
    """The test above can fail: a planted cycle through a relative import inside a function is found."""
    for package, text in {
        "alpha": "from ..beta import thing\n",
        "beta": "def late():\n    from dreamstill.backend.gamma import other\n",
        "gamma": "from ..alpha.deep import x\n",
    }.items():
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(text)
    (tmp_path / "alpha" / "deep.py").write_text("from . import nothing\n")
    graph = import_graph(tmp_path)
    assert graph == {"alpha": {"beta"}, "beta": {"gamma"}, "gamma": {"alpha"}}
    assert find_cycle(graph) == ["alpha", "beta", "gamma", "alpha"]
    graph["gamma"].clear()
    assert find_cycle(graph) is None
