"""`mailroute explain`: what a letter would become, touching no mailbox, database or SMTP."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from mailroute.analysis import AnalysisContext, analyze
from mailroute.config import Config
from mailroute.errors import LetterUnreadable
from mailroute.parse import parse


def explain_file(path: Path, config: Config, received_at: datetime) -> dict[str, Any]:
    """The explain JSON for one file; ``{"file", "error"}`` when it cannot be read."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return {"file": str(path), "error": f"cannot read: {exc.strerror}"}
    return explain_bytes(raw, config, received_at) | {"file": str(path)}


def explain_bytes(raw: bytes, config: Config, received_at: datetime) -> dict[str, Any]:
    try:
        letter = parse(raw)
    except LetterUnreadable as exc:
        return {"error": str(exc), "action": "quarantine"}
    return analyze(letter, _context(config)).as_dict()


@lru_cache(maxsize=4)
def _context(config: Config) -> AnalysisContext:
    return AnalysisContext.from_config(config)
