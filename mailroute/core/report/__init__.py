"""Period reports of the desk: what came in, how fast it was answered, what was late. Pure.

``figures`` turns facts into a :class:`Report` (its docstring says which requests each
figure covers); ``text``, ``as_json`` and ``html`` render it; ``labels`` holds the words and
number formats the renderings share; ``mail`` makes it the report mail. Callers import from
here.
"""

from __future__ import annotations

from mailroute.core.report.as_json import render_json, report_data
from mailroute.core.report.figures import (
    OPEN_STATUSES,
    PRIORITIES,
    Breach,
    Durations,
    GroupRow,
    Report,
    RequestFacts,
    StatusChange,
    Summary,
    TargetFigures,
    TargetRow,
    clock_hours,
    clock_start_from,
    initial_status,
    make_report,
    median,
    open_series,
    outcome,
    percentile,
    status_at,
)
from mailroute.core.report.html import render_html
from mailroute.core.report.labels import report_subject
from mailroute.core.report.mail import compose_report
from mailroute.core.report.text import render_text

__all__ = [
    "OPEN_STATUSES",
    "PRIORITIES",
    "Breach",
    "Durations",
    "GroupRow",
    "Report",
    "RequestFacts",
    "StatusChange",
    "Summary",
    "TargetFigures",
    "TargetRow",
    "clock_hours",
    "clock_start_from",
    "compose_report",
    "initial_status",
    "make_report",
    "median",
    "open_series",
    "outcome",
    "percentile",
    "render_html",
    "render_json",
    "render_text",
    "report_data",
    "report_subject",
    "status_at",
]
