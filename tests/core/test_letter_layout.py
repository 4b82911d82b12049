"""The letter parser stays a package a newcomer can read: one module per concern, in layers.

`mailroute.core.letter` is split by concern (model, charsets, transfer, headers, addresses,
filenames, text, mime, body, parser). This reads each module's source (importing nothing)
and holds the split to what makes it readable: the modules import one another in one
direction only (no circle, and never the package itself, which imports them all), each says
in a docstring what it owns, and no function is over 50 statements. Callers keep importing
from the package, so its public names are checked too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mailroute" / "core" / "letter"
PREFIX = "mailroute.core.letter"
MAX_STATEMENTS = 50
CONCERNS = ("model", "charsets", "transfer", "headers", "addresses", "filenames", "text",
            "mime", "body", "parser")


def sources() -> dict[str, ast.Module]:
    """Module name (``headers``, ``__init__``) -> its parsed source."""
    return {path.stem: ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for path in sorted(PACKAGE.glob("*.py"))}


def sibling_imports(tree: ast.Module) -> set[str]:
    """The modules of this package that a module imports (``__init__`` for the package)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            found.add(node.module or "__init__")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PREFIX):
            found.add(node.module.removeprefix(PREFIX).lstrip(".") or "__init__")
    return found


def circle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle as a path of modules, or [] when the graph is a DAG."""
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str]:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return [*path[path.index(target):], target] if target in path else [target]
            if target not in state and (found := visit(target, [*path, target])):
                return found
        state[module] = "done"
        return []

    for module in sorted(graph):
        if module not in state and (found := visit(module, [module])):
            return found
    return []


def statements(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Statements in a function's body, nested ones included."""
    return sum(isinstance(node, ast.stmt) for node in ast.walk(function)) - 1


def test_the_parser_is_a_package_of_one_module_per_concern() -> None:
    assert set(CONCERNS) | {"__init__"} <= set(sources())


def test_the_modules_import_one_another_without_circles() -> None:
    graph = {name: sibling_imports(tree) for name, tree in sources().items()}
    assert circle(graph) == []


def test_no_module_imports_the_package_itself() -> None:
    """The package imports every module, so a module importing it would be a circle."""
    importers = [name for name, tree in sources().items()
                 if name != "__init__" and "__init__" in sibling_imports(tree)]
    assert importers == []


def test_every_module_says_what_it_owns() -> None:
    undocumented = [name for name, tree in sources().items() if not ast.get_docstring(tree)]
    assert undocumented == []


def test_no_function_is_over_50_statements() -> None:
    long = [f"{name}.{node.name}: {statements(node)}"
            for name, tree in sources().items() for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and statements(node) > MAX_STATEMENTS]
    assert long == []


def test_callers_import_what_they_used_to_from_the_package() -> None:
    import mailroute.core.letter as letter

    for name in ("parse", "ParsedLetter", "ParseLimits", "Address", "Attachment", "HeaderMap",
                 "decode_header", "sanitize_filename", "unflow", "MAX_IDS"):
        assert name in letter.__all__
        assert getattr(letter, name) is not None


def test_the_circle_check_finds_a_circle() -> None:
    assert circle({"headers": {"charsets"}, "charsets": {"mime"}, "mime": {"headers"}}) == [
        "charsets", "mime", "headers", "charsets"]
    assert circle({"parser": {"body", "mime"}, "body": {"mime"}, "mime": set()}) == []


@pytest.mark.parametrize(("source", "expected"), [
    ("from mailroute.core.letter.headers import unfold\n", {"headers"}),
    ("from mailroute.core.letter import parse\n", {"__init__"}),
    ("from . import mime\n", {"__init__"}),
    ("from .body import walk\n", {"body"}),
    ("from mailroute.errors import LetterUnreadable\n", set()),
])
def test_the_import_check_sees_each_way_of_importing(source: str, expected: set[str]) -> None:
    assert sibling_imports(ast.parse(source)) == expected
