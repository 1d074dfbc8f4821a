"""The house rules that keep the layout honest: arrows point one way, and there are no import cycles.

    pipelines -> components -> {textrec, cluster};  serving -> {textrec, cluster};  cluster -> textrec

``textrec`` never imports kfp, TorchServe (``ts``) or kubernetes; only ``cluster`` imports kubernetes.
The rules are read from the source (every ``import`` statement, including those inside functions and
under ``TYPE_CHECKING``), so a rule broken in a rarely run branch still fails here.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("textrec", "cluster", "components", "pipelines", "serving")
# Which of the project's packages each package may import (itself always).
MAY_IMPORT = {
    "textrec": set(),
    "cluster": {"textrec"},
    "components": {"textrec", "cluster", "serving"},  # deploy_model rolls a model onto serving
    "serving": {"textrec", "cluster"},
    "pipelines": {"components", "textrec", "serving"},
}
THIRD_PARTY_BANNED = {
    "textrec": {"kfp", "ts", "kubernetes"},
    "cluster": {"kfp", "ts"},
    "serving": {"kfp", "kubernetes"},
    "components": {"kubernetes", "ts"},
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    """Every module named by an import statement in ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return out


MODULES = modules()
GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_what_the_layout_allows(package):
    wrong = []
    for name, targets in GRAPH.items():
        if name.split(".")[0] != package:
            continue
        for target in targets:
            top = target.split(".")[0]
            if top in PACKAGES and top != package and top not in MAY_IMPORT[package]:
                wrong.append(f"{name} imports {target}")
            if top in THIRD_PARTY_BANNED.get(package, set()):
                wrong.append(f"{name} imports {target} ({top} is not for {package})")
    assert not wrong, "imports against the layout:\n" + "\n".join(sorted(wrong))


def _module_edges() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (``from a import b`` counts b when it is a module)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for name, targets in GRAPH.items():
        for target in targets:
            if target in MODULES and target != name:
                edges[name].add(target)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
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
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(set(edges) | {w for targets in edges.values() for w in targets}):
        if v not in index:
            visit(v)
    return found


def test_no_module_takes_part_in_an_import_cycle():
    edges = _module_edges()
    # A package's __init__ re-exporting its own modules is a facade, not a cycle: drop the edges from a
    # package to its own submodules (the submodules' imports of the package still count).
    for name in list(edges):
        if MODULES[name].name == "__init__.py":
            edges[name] = {t for t in edges[name] if not t.startswith(name + ".")}
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
