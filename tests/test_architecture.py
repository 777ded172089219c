"""The package structure the README draws: layers, no import circles, tools named only by toolkits.

Every import is read from the source (function-level imports too: a lazy import is still a
dependency), so these checks fail the moment a shortcut is taken.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shoplab_core", "sandbox", "rewrite", "recsys_core", "agents", "training", "ui")
# What each package may import of the others (data flows one way: README, "Architecture").
ALLOWED = {
    "shoplab_core": set(),
    "sandbox": {"shoplab_core"},
    "rewrite": {"shoplab_core", "sandbox"},
    "recsys_core": {"shoplab_core", "sandbox"},
    "agents": {"shoplab_core", "sandbox"},  # plug-ins reach agents as toolkits, never by import
    "training": {"shoplab_core", "sandbox", "rewrite", "recsys_core", "agents"},
    "ui": {"shoplab_core", "sandbox", "rewrite", "recsys_core", "agents"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The project modules `name` imports, resolved to the longest known module name."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    # Imports under `if TYPE_CHECKING:` count too: a type a module needs is a dependency, and a circle
    # through one is a circle in the design even if Python never runs it.
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from pkg import submodule` depends on the submodule; `from pkg import name`, on pkg.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_exports" and len(node.args) > 1 \
                and isinstance(node.args[1], ast.Dict):
            # A package's public names, imported on first use (shoplab_core.lazy): {module: [names]}.
            targets = [key.value for key in node.args[1].keys if isinstance(key, ast.Constant)]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _package(module: str) -> str:
    return module.split(".")[0]


def test_packages_import_only_the_layers_below_them():
    wrong = sorted(f"{m} imports {t}" for m, targets in GRAPH.items() for t in targets
                   if _package(t) != _package(m) and _package(t) not in ALLOWED[_package(m)])
    assert not wrong, "\n".join(wrong)


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), package `__init__`s included:
    a module that imports its own package's `__init__` while that `__init__` re-exports the module
    is a circle too."""
    graph = GRAPH
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
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
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_no_import_circles():
    assert _cycles() == []


def test_the_checker_sees_a_circle_and_a_lazy_import(monkeypatch):
    # A guard against a checker that passes on anything: a lazy import back from a module it imports.
    monkeypatch.setitem(GRAPH, "sandbox.tasks", GRAPH["sandbox.tasks"] | {"sandbox.environment"})
    assert any({"sandbox.environment", "sandbox.tasks"} <= set(c) for c in _cycles())
    assert "agents.react.config" in _imports("agents.react.graph", MODULES["agents.react.graph"])
    assert "agents.react.graph" in _imports("agents.react", MODULES["agents.react"])  # a lazy export


def _tool_names() -> set[str]:
    from sandbox import TOOLS, load_toolkits

    names = set(TOOLS)
    for kit in load_toolkits({"rewrite": None, "recsys": None}):
        names |= {spec.name for spec in kit.specs()}
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_no_hard_coded_tool_lists_outside_the_toolkits(package):
    """A list of tool names in code means a second place to update when a tool is added; tools are
    selected by toolkit group (`shoppingbench`, `cart`, ...) or read from the toolkits instead."""
    names = _tool_names()
    offenders = []
    for module, path in MODULES.items():
        if _package(module) != package:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.List | ast.Tuple | ast.Set | ast.Dict):
                items = node.keys if isinstance(node, ast.Dict) else node.elts
                strings = {n.value for n in items if isinstance(n, ast.Constant) and isinstance(n.value, str)}
                if len(strings & names) >= 2:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {sorted(strings & names)}")
    assert not offenders, "\n".join(offenders)
