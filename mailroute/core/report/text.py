"""The report as aligned plain text: for a terminal and the text part of the report mail."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from mailroute.core.compose import one_line
from mailroute.core.report.figures import Count, GroupRow, Report, TargetFigures
from mailroute.core.report.labels import (
    COMPARISON_HEADER,
    GROUP_HEADER,
    OTHER_LABEL,
    PRIORITY_LABELS,
    STATUS_LABELS,
    TARGET_LABELS,
    TYPE_LABELS,
    _backlog_line,
    _breach_cells,
    _comparison_rows,
    _group_cells,
    _headline_share,
    _hours,
    _label,
    _open_cells,
    _per_day_or_week,
    _period_line,
    _previous_line,
    _target_cells,
)


def render_text(report: Report) -> str:
    """Aligned plain text for a terminal or the text part of the report mail."""
    sections = [
        _text_headline(report),
        _text_counts("Created by type", report.by_type, TYPE_LABELS),
        _text_counts("Created by priority", report.by_priority, PRIORITY_LABELS),
        _text_counts("Created by queue", report.by_queue),
        _text_counts("Created by mailbox", report.by_mailbox) if report.by_mailbox else "",
        _text_counts("Created, by status now", report.by_status, STATUS_LABELS),
        _text_organizations(report),
        _text_comparison(report),
        _text_groups("SLA by organization", "organization", report.organizations),
        _text_groups("SLA by tier", "tier", report.tiers),
        *(_text_target(figures) for figures in report.targets),
        _text_breaches(report),
        _text_open(report),
        _text_open_series(report),
        _text_notes(),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _text_headline(report: Report) -> str:
    lines = [f"ServiceDesk report {_period_line(report)}"]
    if not report.complete:
        lines.append(f"Period not over: figures as of {report.as_of:%Y-%m-%d %H:%M}")
    rows = [
        ("Created", str(report.created)),
        ("Open at start of period", str(report.open_at_start)),
        ("Open at end of period", str(report.open_at_end)),
        ("Awaiting first response", _backlog_line(report)),
    ]
    for figures in report.targets:
        times = figures.overall.times
        rows.append(
            (
                f"{TARGET_LABELS[figures.kind]} time",
                f"median {_hours(times.median)}, 90th percentile {_hours(times.p90)}"
                f" ({times.count} requests)",
            )
        )
        rows.append((f"{TARGET_LABELS[figures.kind]} SLA", _headline_share(figures)))
    rows.append(("SLA breaches", str(report.breach_count)))
    rows.append(("Breaches in progress", f"{report.breaches_in_progress} (overdue, still open)"))
    return "\n".join([*lines, "", *_text_table(None, rows, right=())])


def _text_counts(
    title: str, counts: Sequence[Count], labels: Mapping[str, str] | None = None
) -> str:
    rows = [(_label(key, labels), str(count)) for key, count in counts]
    if not rows:
        rows = [("(no requests)", "")]
    return "\n".join([title, *_text_table(None, rows, right=(1,), indent=2)])


def _text_organizations(report: Report) -> str:
    rows = [(one_line(_label(key), 60), str(count)) for key, count in report.by_organization]
    if report.other_organizations:
        rows.append((OTHER_LABEL, str(report.other_organizations)))
    if not rows:
        rows = [("(no requests)", "")]
    return "\n".join(["Created by organization", *_text_table(None, rows, right=(1,), indent=2)])


def _text_target(figures: TargetFigures) -> str:
    header = ("priority", "count", "median", "p90", "target", "met", "missed", "met %")
    rows = [_target_cells(row) for row in (figures.overall, *figures.by_priority)]
    title = f"{TARGET_LABELS[figures.kind]} times (business hours on the SLA clock)"
    return "\n".join([title, *_text_table(header, rows, right=range(1, 8), indent=2)])


def _text_breaches(report: Report) -> str:
    if not report.breaches:
        return "SLA breaches in the period: none"
    header = ("request", "target", "priority", "due", "late", "organization")
    rows = [_breach_cells(line) for line in report.breaches]
    title = f"SLA breaches in the period: {len(report.breaches)}"
    return "\n".join([title, *_text_table(header, rows, right=(4,), indent=2)])


def _text_open(report: Report) -> str:
    counts = ", ".join(
        f"{_label(key, PRIORITY_LABELS)} {count}" for key, count in report.open_by_priority
    )
    lines = [f"Open at end of period: {report.open_at_end} ({counts})"]
    if report.oldest_open:
        header = ("request", "priority", "status", "created", "age", "organization")
        rows = [_open_cells(line) for line in report.oldest_open]
        lines += ["Oldest:", *_text_table(header, rows, right=(4,), indent=2)]
    return "\n".join(lines)


def _text_comparison(report: Report) -> str:
    title = f"Against the previous period ({_previous_line(report)})"
    rows = _comparison_rows(report)
    return "\n".join([title, *_text_table(COMPARISON_HEADER, rows, right=(1, 2, 3), indent=2)])


def _text_groups(title: str, name: str, rows: Sequence[GroupRow]) -> str:
    """Times and targets met/missed per organization or tier, the most breaches first."""
    if not rows:
        return f"{title}: no requests"
    cells = [_group_cells(row) for row in rows]
    header = (name, *GROUP_HEADER)
    return "\n".join([title, *_text_table(header, cells, right=range(1, 10), indent=2)])


def _text_open_series(report: Report) -> str:
    """Created and open at the end of each day (each week for a long period)."""
    unit, series = _per_day_or_week(report)
    rows = [
        (f"{d.day:%Y-%m-%d}", str(d.count), "–" if d.open is None else str(d.open)) for d in series
    ]
    header = (unit, "created", f"open at end of {unit}")
    title = f"Per {unit}: open at start {report.open_at_start}, at end {report.open_at_end}"
    return "\n".join([title, *_text_table(header, rows, right=(1, 2), indent=2)])


def _text_notes() -> str:
    return (
        "Times are business hours from the start of the SLA clock, without time spent\n"
        "waiting for the customer. Median: middle value; p90: 90th percentile, nearest rank."
    )


def _text_table(
    header: Sequence[str] | None,
    rows: Sequence[Sequence[str]],
    right: Iterable[int],
    indent: int = 0,
) -> list[str]:
    """Columns padded to their widest cell; ``right`` columns right-aligned (numbers)."""
    every = [list(header)] if header else []
    every += [list(row) for row in rows]
    widths = [max(len(row[i]) for row in every) for i in range(len(every[0]))]
    aligned = set(right)
    lines = []
    for row in every:
        cells = [
            cell.rjust(widths[i]) if i in aligned else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append((" " * indent + "  ".join(cells)).rstrip())
    return lines
