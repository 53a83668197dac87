"""The package layout: one package per pipeline phase, lower layers never import higher ones, no import cycles.

Every ``gream_lit`` import in the source counts, at module level or inside a function, so a cycle cannot
hide behind a deferred import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gream_lit

ROOT = Path(gream_lit.__file__).parent

# a package may import its own modules and those of lower layers only
LAYERS = {
    "metrics": 0,
    "stats": 0,
    "tables": 0,
    "data": 1,
    "modeling": 2,
    "inference": 3,
    "indexing": 4,
    "alignment": 4,
    "baselines": 4,
    "rl": 4,
    "curriculum": 5,
    "experiment": 6,
}
ENTRY = {"gream_lit", "gream_lit.__main__"}  # the package's front door and ``python -m gream_lit``


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``{module: gream_lit modules it imports}``, resolving ``from package import module``."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("gream_lit")}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("gream_lit"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else node.module)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else parts[-1]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_belongs_to_a_layer() -> None:
    unplaced = {package(m) for m in import_graph() if m not in ENTRY} - set(LAYERS)
    assert not unplaced, f"packages without a layer in tests/test_layout.py: {sorted(unplaced)}"


def test_lower_layers_never_import_higher_ones() -> None:
    wrong = [
        f"{a} -> {b}"
        for a, targets in import_graph().items()
        if a not in ENTRY
        for b in targets
        if package(a) != package(b) and LAYERS[package(b)] >= LAYERS[package(a)]
    ]
    assert not wrong, "imports against the layer order:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
