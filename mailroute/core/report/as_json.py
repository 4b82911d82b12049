"""The report as JSON (named so that it does not shadow the standard library's ``json``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mailroute.core.report.figures import (
    BreachLine,
    Count,
    GroupRow,
    OpenLine,
    Report,
    Summary,
    TargetFigures,
    TargetRow,
)


def render_json(report: Report) -> str:
    """Machine-readable: fixed keys (sorted), ISO dates, hours rounded to 0.01."""
    return json.dumps(report_data(report), ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def report_data(report: Report) -> dict[str, Any]:
    """The report as plain JSON-able data, the structure :func:`render_json` writes."""
    return {
        "period": {
            "start": report.start.isoformat(),
            "end": report.end.isoformat(),
            "as_of": report.as_of.isoformat(),
            "complete": report.complete,
            "timezone": report.timezone,
            "first_day": report.first_day.isoformat(),
            "last_day": report.last_day.isoformat(),
        },
        "created": {
            "total": report.created,
            "by_type": _json_counts(report.by_type),
            "by_priority": _json_counts(report.by_priority),
            "by_queue": _json_counts(report.by_queue),
            "by_mailbox": _json_counts(report.by_mailbox),
            "by_status_now": _json_counts(report.by_status),
            "by_organization": _json_counts(report.by_organization),
            "other_organizations": report.other_organizations,
            "daily": [
                {
                    "date": d.day.isoformat(),
                    "count": d.count,
                    "working_day": d.working,
                    "open_at_end_of_day": d.open,
                }
                for d in report.daily
            ],
        },
        "first_response": _json_target(report.first_response),
        "resolution": _json_target(report.resolution),
        "breaches": {
            "total": report.breach_count,
            "in_progress": report.breaches_in_progress,
            "requests": [_json_breach(line) for line in report.breaches],
        },
        "open_at_start": report.open_at_start,
        "awaiting_first_response": {
            "total": report.awaiting_first_response,
            "overdue": report.overdue_first_response,
            "resolution_overdue": report.overdue_resolution,
        },
        "organizations": [_json_group(row) for row in report.organizations],
        "tiers": [_json_group(row) for row in report.tiers],
        "previous_period": _json_summary(report.previous),
        "open_at_end": {
            "total": report.open_at_end,
            "by_priority": _json_counts(report.open_by_priority),
            "oldest": [_json_open(line) for line in report.oldest_open],
        },
    }


def _json_counts(counts: Sequence[Count]) -> list[dict[str, Any]]:
    return [{"name": key, "count": count} for key, count in counts]


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _json_target(figures: TargetFigures) -> dict[str, Any]:
    return {
        "all": _json_row(figures.overall),
        "by_priority": [_json_row(row) for row in figures.by_priority],
    }


def _json_row(row: TargetRow) -> dict[str, Any]:
    return {
        "priority": row.priority,
        "count": row.times.count,
        "median_hours": _round(row.times.median),
        "p90_hours": _round(row.times.p90),
        "target_hours": _round(row.target),
        "met": row.met,
        "missed": row.missed,
        "met_share": _round(row.share_met, 4),
    }


def _json_group(row: GroupRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "created": row.created,
        "critical": row.critical,
        "breaches": row.breaches,
        "first_response": _json_row(row.first_response),
        "resolution": _json_row(row.resolution),
    }


def _json_summary(summary: Summary) -> dict[str, Any]:
    return {
        "first_day": summary.first_day.isoformat(),
        "last_day": summary.last_day.isoformat(),
        "created": summary.created,
        "breaches": summary.breaches,
        "first_response_median_hours": _round(summary.first_response_median),
        "resolution_median_hours": _round(summary.resolution_median),
        "open_at_end": summary.open_at_end,
    }


def _json_breach(line: BreachLine) -> dict[str, Any]:
    return {
        "number": line.number,
        "target": line.kind,
        "priority": line.priority,
        "organization": line.organization,
        "due": line.due.isoformat(),
        "late_hours": _round(line.late),
    }


def _json_open(line: OpenLine) -> dict[str, Any]:
    return {
        "number": line.number,
        "priority": line.priority,
        "status": line.status,
        "organization": line.organization,
        "created_at": line.created_at.isoformat(),
        "age_hours": _round(line.age),
    }
