"""`mailroute explain`: what a letter would become, touching no mailbox, database or SMTP."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mailroute.analysis import AnalysisContext, analyze
from mailroute.config import Config
from mailroute.errors import LetterUnreadable
from mailroute.parse import parse


@dataclass(frozen=True)
class Explainer:
    """The pure pipeline, built once for many files."""

    context: AnalysisContext

    @classmethod
    def from_config(cls, config: Config) -> Explainer:
        return cls(AnalysisContext.from_config(config))

    def explain_file(self, path: Path, received_at: datetime) -> dict[str, Any]:
        """The explain JSON for one file; with an ``error`` key when it cannot be read."""
        try:
            raw = path.read_bytes()
        except OSError as exc:
            return {"file": str(path), "error": f"cannot read: {exc.strerror}"}
        return self.explain_bytes(raw, received_at) | {"file": str(path)}

    def explain_bytes(self, raw: bytes, received_at: datetime) -> dict[str, Any]:
        try:
            letter = parse(raw)
        except LetterUnreadable as exc:
            return {"error": str(exc), "action": "quarantine"}
        return analyze(letter, self.context).as_dict()
