"""The packages keep to their rooms: no import circles, and imports only point down the layers.

ARCHITECTURE.md draws the layers: the pure ``core`` at the bottom; ``mail`` and ``store``
(I/O adapters) above it; ``pipeline`` (the core run against the store) above those; then
``ops`` (what operators see and do), ``service`` (the daemon) and ``cli`` at the top. This
test reads every module's imports from its source (importing nothing) and fails on a circle
or an import that points up, so the picture in ARCHITECTURE.md stays true.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mailroute"

# What each package may import besides itself and the shared modules (config, errors, logs,
# packaged). A package not listed here may import nothing of mailroute's packages.
MAY_IMPORT: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "store": frozenset({"core"}),
    "mail": frozenset({"core", "store"}),
    "pipeline": frozenset({"core", "store", "mail"}),
    "ops": frozenset({"core", "store", "mail", "pipeline"}),
    "web": frozenset({"core", "store", "mail", "pipeline", "ops"}),
    "service": frozenset({"core", "store", "mail", "pipeline", "ops", "web"}),
    "cli": frozenset({"core", "store", "mail", "pipeline", "ops", "web", "service"}),
}
# ``startup`` and ``launch`` stay outside ``cli``: importing ``mailroute.cli.anything``
# would run the command line's imports before the collector is off (mailroute.startup).
SHARED = frozenset({"config", "errors", "logs", "packaged", "startup", "launch", "__init__",
                    "__main__"})


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(source: str, known: set[str]) -> set[str]:
    """The mailroute modules a source imports (``from a import b`` counts ``a.b`` if a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        found.update(name for name in names if name in known)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path.read_text(encoding="utf-8"), set(known)) - {name}
            for name, path in known.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in sorted(graph.items()):
        layer = layer_of(module)
        allowed = MAY_IMPORT.get(layer)
        if allowed is None:
            continue
        for target in sorted(targets):
            other = layer_of(target)
            if other != layer and other not in SHARED and other not in allowed:
                wrong.append(f"{module} imports {target} ({layer} may not import {other})")
    return wrong


def test_every_package_is_known_to_the_layer_rules() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages - {"templates", "samples"} <= set(MAY_IMPORT)


def test_there_are_no_import_circles() -> None:
    assert circles(import_graph()) == []


def test_imports_only_point_down_the_layers() -> None:
    assert upward_imports(import_graph()) == []


def test_the_circle_check_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize(("module", "target"), [
    ("mailroute.core.verdict", "mailroute.store.models"),
    ("mailroute.store.repository", "mailroute.pipeline.decide"),
    ("mailroute.pipeline.decide", "mailroute.ops.customers"),
    ("mailroute.mail.outbox", "mailroute.service.daemon"),
])
def test_the_layer_check_finds_an_upward_import(module: str, target: str) -> None:
    assert upward_imports({module: {target}}) != []


def test_the_layer_check_allows_a_downward_import() -> None:
    assert upward_imports({"mailroute.pipeline.decide": {"mailroute.core.verdict"},
                           "mailroute.cli": {"mailroute.service.daemon"}}) == []


MAX_STATEMENTS = 50


def statements_in(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    return sum(isinstance(node, ast.stmt) for node in ast.walk(function)) - 1


def long_functions(source: str, where: str) -> list[str]:
    return [
        f"{where}:{node.lineno} {node.name}: {statements_in(node)} statements"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and statements_in(node) > MAX_STATEMENTS
    ]


def test_no_function_is_over_fifty_statements() -> None:
    """A function longer than that does several things; split it so each has a name."""
    found = [line for name, path in modules().items()
             for line in long_functions(path.read_text(encoding="utf-8"), name)]
    assert found == []


def test_the_length_check_counts_statements() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_STATEMENTS + 1))
    assert long_functions(f"def long():\n{body}\n", "example") == [
        f"example:1 long: {MAX_STATEMENTS + 1} statements"]
    assert long_functions("def short():\n    return 1\n", "example") == []


def test_test_modules_have_unique_names() -> None:
    """pytest imports test modules by their base name (the test folders are not packages):
    two test_cli.py in different folders stop the whole run at collection."""
    tests = Path(__file__).resolve().parent
    names: dict[str, list[str]] = {}
    for path in tests.rglob("test_*.py"):
        names.setdefault(path.name, []).append(str(path.relative_to(tests)))
    assert {name: paths for name, paths in names.items() if len(paths) > 1} == {}
