"""`mailroute explain`: what a letter would become, touching no mailbox, database or SMTP."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mailroute.config import Config, SlaConfig
from mailroute.core import sla
from mailroute.core.business_calendar import BusinessCalendar
from mailroute.core.customers import tier_of
from mailroute.core.letter import parse
from mailroute.core.verdict import Analysis, AnalysisContext, analyze
from mailroute.errors import LetterUnreadable
from mailroute.packaged import analysis_context


@dataclass(frozen=True)
class Explainer:
    """The pure pipeline, built once for many files."""

    context: AnalysisContext
    calendar: BusinessCalendar | None = None
    sla: SlaConfig | None = None

    @classmethod
    def from_config(cls, config: Config, with_sla: bool = False) -> Explainer:
        """With ``with_sla``, results carry the due times a request would get."""
        if not with_sla:
            return cls(analysis_context(config))
        calendar = BusinessCalendar.from_config(config.business_hours)
        return cls(analysis_context(config), calendar, config.sla)

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
        analysis = analyze(letter, self.context)
        result = analysis.as_dict()
        if self.calendar is not None and self.sla is not None and analysis.action == "ticket":
            result["sla"] = self._sla(analysis, received_at)
        return result

    def _sla(self, analysis: Analysis, received_at: datetime) -> dict[str, Any]:
        """Due times from arrival; a request missing details waits with its clocks paused."""
        assert self.calendar is not None and self.sla is not None
        tier = tier_of(self.context.registry, analysis.registration_number)
        targets = sla.targets_for(self.sla, analysis.priority or "normal", tier)
        due = sla.due_times(self.calendar, received_at, targets)
        return {
            "received_at": received_at.astimezone(self.calendar.zone).isoformat(),
            "paused": bool(analysis.missing),
            "first_response_due": _iso(due.first_response),
            "resolution_due": _iso(due.resolution),
            "tier": tier,
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
