"""`mailroute explain`: what a letter would become, touching no mailbox, database or SMTP."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mailroute.config import Config, SlaConfig
from mailroute.core import sla
from mailroute.core.business_calendar import BusinessCalendar
from mailroute.core.customers import tier_of
from mailroute.core.letter import ParseLimits, parse
from mailroute.core.verdict import Analysis, AnalysisContext, analyze
from mailroute.errors import LetterUnreadable
from mailroute.packaged import analysis_context
from mailroute.pipeline.workers import Understanding


@dataclass
class Explainer:
    """The pure pipeline, built once for many files; ``close()`` when done (a bounded one
    keeps one worker process for all of them)."""

    context: AnalysisContext
    calendar: BusinessCalendar | None = None
    sla: SlaConfig | None = None
    letter_seconds: float | None = None  # None: in this process, unbounded (benchmarks)
    limits: ParseLimits = field(default_factory=ParseLimits)
    _workers: Understanding | None = None

    @classmethod
    def from_config(
        cls, config: Config, with_sla: bool = False, bounded: bool = False
    ) -> Explainer:
        """With ``with_sla``, results carry the due times a request would get; ``bounded``,
        each letter is understood in a worker under ``[limits] letter_seconds``, as the
        daemon does (a letter that would hang the daemon does not hang `explain`)."""
        budget = config.limits.letter_seconds if bounded else None
        context = analysis_context(config)
        limits = ParseLimits.from_config(config.limits)
        if not with_sla:
            return cls(context, letter_seconds=budget, limits=limits)
        calendar = BusinessCalendar.from_config(config.business_hours)
        return cls(context, calendar, config.sla, budget, limits)

    def close(self) -> None:
        """Stop the worker process, if one was started."""
        if self._workers is not None:
            self._workers.close()
            self._workers = None

    def explain_file(self, path: Path, received_at: datetime) -> dict[str, Any]:
        """The explain JSON for one file; with an ``error`` key when it cannot be read."""
        try:
            raw = path.read_bytes()
        except OSError as exc:
            return {"file": str(path), "error": f"cannot read: {exc.strerror}"}
        return self.explain_bytes(raw, received_at) | {"file": str(path)}

    def explain_bytes(self, raw: bytes, received_at: datetime) -> dict[str, Any]:
        if self.letter_seconds is not None:
            return self._explain_bounded(raw, received_at, self.letter_seconds)
        try:
            letter = parse(raw, self.limits)
        except LetterUnreadable as exc:
            return {"error": str(exc), "action": "quarantine"}
        return self._result(analyze(letter, self.context), received_at)

    def _explain_bounded(self, raw: bytes, received_at: datetime, budget: float) -> dict[str, Any]:
        if self._workers is None:
            self._workers = Understanding(self.context, self.limits, 1, budget)
        (known,) = self._workers.understand_all([raw])
        if known.analysis is None:
            assert known.fault is not None
            fault = known.fault
            return {"error": f"{fault.stage}: {fault.reason}", "stage": fault.stage,
                    "action": "quarantine"}
        return self._result(known.analysis, received_at)

    def _result(self, analysis: Analysis, received_at: datetime) -> dict[str, Any]:
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
