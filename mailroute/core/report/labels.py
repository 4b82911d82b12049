"""The words and number formats the text and the HTML report share."""

from __future__ import annotations

from collections.abc import Mapping

from mailroute.core.compose import one_line
from mailroute.core.report.figures import BreachLine, OpenLine, Report, TargetFigures, TargetRow

TARGET_LABELS = {"first_response": "First response", "resolution": "Resolution"}
TYPE_LABELS = {
    "incident": "Incident",
    "service_request": "Service request",
    "change_request": "Change request",
    "improvement": "Improvement",
}
PRIORITY_LABELS = {"critical": "Critical", "normal": "Normal", "low": "Low"}
STATUS_LABELS = {
    "new": "New",
    "awaiting_customer": "Awaiting customer",
    "in_progress": "In progress",
    "resolved": "Resolved",
    "closed": "Closed",
}
NONE_LABEL = "(none)"
OTHER_LABEL = "other"


def report_subject(report: Report) -> str:
    """``ServiceDesk report 2026-11-16 – 2026-11-22``: one line, safe for a header."""
    days = report.first_day.isoformat()
    if report.last_day != report.first_day:
        days += f" – {report.last_day.isoformat()}"
    suffix = "" if report.complete else f" (so far, {report.as_of:%Y-%m-%d %H:%M})"
    return one_line(f"ServiceDesk report {days}{suffix}", 250)


def _label(value: str | None, labels: Mapping[str, str] | None = None) -> str:
    if value is None or value == "":
        return NONE_LABEL
    return (labels or {}).get(value, value)


def _hours(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} h"


def _share(row: TargetRow) -> str:
    return "–" if row.share_met is None else f"{row.share_met:.0%}"


def _headline_share(figures: TargetFigures) -> str:
    row = figures.overall
    if row.share_met is None:
        return "no target decided"
    return f"{row.share_met:.0%} met ({row.met} of {row.decided})"


def _period_line(report: Report) -> str:
    days = f"{report.first_day:%Y-%m-%d}"
    if report.last_day != report.first_day:
        days += f" – {report.last_day:%Y-%m-%d}"
    return f"{days} ({report.timezone})"


def _target_cells(row: TargetRow) -> tuple[str, ...]:
    return (
        "all" if row.priority is None else _label(row.priority, PRIORITY_LABELS),
        str(row.times.count),
        _hours(row.times.median),
        _hours(row.times.p90),
        _hours(row.target),
        str(row.met),
        str(row.missed),
        _share(row),
    )


def _breach_cells(line: BreachLine) -> tuple[str, ...]:
    return (
        line.number,
        TARGET_LABELS.get(line.kind, line.kind),
        _label(line.priority, PRIORITY_LABELS),
        f"{line.due:%Y-%m-%d %H:%M}",
        _hours(line.late),
        one_line(_label(line.organization), 40),
    )


def _open_cells(line: OpenLine) -> tuple[str, ...]:
    return (
        line.number,
        _label(line.priority, PRIORITY_LABELS),
        _label(line.status, STATUS_LABELS),
        f"{line.created_at:%Y-%m-%d %H:%M}",
        _hours(line.age),
        one_line(_label(line.organization), 40),
    )
