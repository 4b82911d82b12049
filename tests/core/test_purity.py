"""The pure core stays pure: no I/O library, no clock, no file read, no other layer.

`mailroute.core` turns bytes, rules, templates and `now` (all passed in) into decisions. That
is what lets the daemon, `explain`, the workers and the tests agree on every letter, and what
lets a core function be tested without a server. This test reads the source of every core
module (it imports nothing) and fails on the first thing that would make the core depend on
the world outside its arguments.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "mailroute" / "core"

# Top-level modules whose import means I/O, concurrency or process control.
FORBIDDEN_MODULES = frozenset({
    "aiosmtpd", "aiosmtplib", "alembic", "apscheduler", "asyncio", "http", "imapclient",
    "importlib.resources", "logging.handlers", "multiprocessing", "os", "prometheus_client",
    "psycopg", "requests", "selectors", "shutil", "signal", "smtplib", "socket", "sqlalchemy",
    "sqlite3", "ssl", "subprocess", "tempfile", "threading", "time", "urllib.request",
})
# mailroute packages the core must not reach into (it is imported by them, never the reverse).
FORBIDDEN_LAYERS = ("mailroute.mail", "mailroute.store", "mailroute.pipeline", "mailroute.ops",
                    "mailroute.service", "mailroute.cli", "mailroute.logs")
# Calls that read a clock, the environment or a file.
FORBIDDEN_CALLS = frozenset({"now", "utcnow", "today", "monotonic", "perf_counter",
                             "process_time", "getenv", "read_text", "read_bytes", "open",
                             "urandom"})


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def violations(source: str, path: str) -> list[Violation]:
    """Everything in one module's source that the pure core may not do."""
    found: list[Violation] = []
    for node in ast.walk(ast.parse(source, filename=path)):
        for name in _imported(node):
            if _forbidden_import(name):
                found.append(Violation(path, node.lineno, f"imports {name}"))
        if isinstance(node, ast.Call):
            called = _called_name(node.func)
            if called in FORBIDDEN_CALLS:
                found.append(Violation(path, node.lineno, f"calls {called}()"))
    return found


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return []


def _forbidden_import(name: str) -> bool:
    top = name.split(".")[0]
    prefixes = (name, ".".join(name.split(".")[:2]))
    return (top in FORBIDDEN_MODULES or any(p in FORBIDDEN_MODULES for p in prefixes)
            or name.startswith(FORBIDDEN_LAYERS))


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


CORE_MODULES = sorted(CORE.rglob("*.py"))


def test_the_core_has_modules_to_check() -> None:
    assert len(CORE_MODULES) >= 15


@pytest.mark.parametrize("module", CORE_MODULES, ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_does_no_io_and_reads_no_clock(module: Path) -> None:
    where = str(module.relative_to(CORE.parents[1]))
    found = violations(module.read_text(encoding="utf-8"), where)
    assert not found, "the pure core must not do this:\n" + "\n".join(map(str, found))


@pytest.mark.parametrize(("source", "what"), [
    ("import sqlalchemy\n", "imports sqlalchemy"),
    ("from sqlalchemy.orm import Session\n", "imports sqlalchemy.orm"),
    ("import asyncio\n", "imports asyncio"),
    ("from subprocess import run\n", "imports subprocess"),
    ("import socket\n", "imports socket"),
    ("from logging.handlers import SysLogHandler\n", "imports logging.handlers"),
    ("from importlib import resources\n", "imports importlib.resources"),
    ("from mailroute.store.models import Request\n", "imports mailroute.store.models"),
    ("from mailroute.mail import outbox\n", "imports mailroute.mail"),
    ("from datetime import datetime\nx = datetime.now()\n", "calls now()"),
    ("import time\n", "imports time"),
    ("text = path.read_text()\n", "calls read_text()"),
    ("handle = open('rules.toml')\n", "calls open()"),
])
def test_the_check_catches_each_kind_of_violation(source: str, what: str) -> None:
    assert what in [v.what for v in violations(source, "example.py")]


def test_the_check_allows_what_the_core_needs() -> None:
    source = (
        "import re\nimport hashlib\nfrom datetime import datetime, timedelta\n"
        "from email import utils\nfrom mailroute.config import Config\n"
        "from mailroute.core.words import tokens\n"
        "def due(now: datetime) -> datetime:\n    return now + timedelta(hours=4)\n"
    )
    assert violations(source, "example.py") == []
