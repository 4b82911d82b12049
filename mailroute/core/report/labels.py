"""The words and number formats the text and the HTML report share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mailroute.core.compose import one_line
from mailroute.core.report.figures import (
    BreachLine,
    DayCount,
    GroupRow,
    OpenLine,
    Report,
    TargetFigures,
    TargetRow,
)

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
MAX_DAY_COLUMNS = 62  # two months; longer periods are shown per week
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


GROUP_HEADER = (
    "created",
    "critical",
    "breaches",
    "first response median",
    "met",
    "missed",
    "resolution median",
    "met",
    "missed",
)
COMPARISON_HEADER = ("", "this period", "previous", "change")


def _group_cells(row: GroupRow) -> tuple[str, ...]:
    """One organization or tier: volume, breaches, then both targets' median, met, missed."""
    return (
        one_line(_label(row.name), 40),
        str(row.created),
        str(row.critical),
        str(row.breaches),
        _hours(row.first_response.times.median),
        str(row.first_response.met),
        str(row.first_response.missed),
        _hours(row.resolution.times.median),
        str(row.resolution.met),
        str(row.resolution.missed),
    )


def _previous_line(report: Report) -> str:
    previous = report.previous
    return f"{previous.first_day:%Y-%m-%d} – {previous.last_day:%Y-%m-%d}"


def _comparison_rows(report: Report) -> list[tuple[str, str, str, str]]:
    """Headline figures of the period and the one before: value, previous, signed change."""
    now, before = report.summary, report.previous
    counts = (
        ("Created", now.created, before.created),
        ("SLA breaches", now.breaches, before.breaches),
        ("Open at end", now.open_at_end, before.open_at_end),
    )
    hours = (
        ("First response median", now.first_response_median, before.first_response_median),
        ("Resolution median", now.resolution_median, before.resolution_median),
    )
    rows = [(label, str(a), str(b), f"{a - b:+d}") for label, a, b in counts]
    rows += [(label, _hours(a), _hours(b), _hours_change(a, b)) for label, a, b in hours]
    return rows


def _hours_change(now: float | None, before: float | None) -> str:
    return "–" if now is None or before is None else f"{now - before:+.1f} h"


def _backlog_line(report: Report) -> str:
    """``12 (5 overdue)``: requests awaiting a first response at the cut."""
    return f"{report.awaiting_first_response} ({report.overdue_first_response} overdue)"


def _weeks(days: Sequence[DayCount]) -> list[DayCount]:
    """Daily counts summed per ISO week, labelled with its first day in the period; open at
    the end of its last day."""
    weeks: dict[tuple[int, int], DayCount] = {}
    for day in days:
        key = day.day.isocalendar()[:2]
        known = weeks.get(key)
        first = known.day if known else day.day
        total = (known.count if known else 0) + day.count
        still_open = day.open if day.open is not None or known is None else known.open
        weeks[key] = DayCount(first, total, True, still_open)
    return list(weeks.values())


def _per_day_or_week(report: Report) -> tuple[str, list[DayCount]]:
    """The daily series, or weekly for a long period, with its unit's name."""
    if len(report.daily) > MAX_DAY_COLUMNS:
        return "week", _weeks(report.daily)
    return "day", list(report.daily)
