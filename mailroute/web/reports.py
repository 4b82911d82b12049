"""The reports and health pages: the CLI's figures, and a bar chart drawn on the server."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from mailroute.core.report import render_text
from mailroute.core.report.figures import DayCount
from mailroute.ops.health import about, check_health, database_file_problems, mailbox_labels
from mailroute.pipeline.reports import build_report, period_for_days, sla_targets

CHART_WIDTH, CHART_HEIGHT = 720, 200


@dataclass(frozen=True)
class Bar:
    """One day of the chart, in SVG coordinates (the template draws it; it escapes labels)."""

    x: float
    y: float
    width: float
    height: float
    label: str
    count: int
    working: bool


def report_page(console: Any, days: int) -> dict[str, Any]:
    """The report of the last ``days`` days, as `mailroute report` prints it, and its chart."""
    now = console.clock()
    calendar = console.calendar
    today = now.astimezone(calendar.zone).date()
    start, end = period_for_days(today - timedelta(days=days - 1), today, calendar)
    report = build_report(console.store, calendar, start, end, now,
                          targets=sla_targets(console.config.sla))
    return {"text": render_text(report), "bars": bars(report.daily), "days": days,
            "chart_width": CHART_WIDTH, "chart_height": CHART_HEIGHT}


def bars(daily: tuple[DayCount, ...]) -> list[Bar]:
    """Requests created a day as bars scaled to the chart's height (20 px left for labels)."""
    if not daily:
        return []
    top = max(day.count for day in daily) or 1
    step = CHART_WIDTH / len(daily)
    usable = CHART_HEIGHT - 20
    return [
        Bar(x=i * step + 2, y=usable - usable * day.count / top, width=max(step - 4, 1),
            height=usable * day.count / top, label=day.day.strftime("%d.%m"),
            count=day.count, working=day.working)
        for i, day in enumerate(daily)
    ]


def health_page(console: Any, suppress_for: timedelta) -> dict[str, Any]:
    """What `mailroute status --json` says."""
    from mailroute.ops.health import Health

    now = console.clock()
    config = console.config
    problems = database_file_problems(config.database.url)
    health = Health(problems=problems) if problems else check_health(
        console.store, config.health, now, suppress_for,
        letter_seconds=config.limits.letter_seconds, labels=mailbox_labels(config))
    return {"health": health.as_dict(), "about": about(config, health, now)}
