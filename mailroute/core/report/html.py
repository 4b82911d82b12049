"""The report as one self-contained HTML page with inline SVG charts, for the report mail."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence

from mailroute.core.report.figures import (
    Count,
    DayCount,
    GroupRow,
    Report,
    TargetFigures,
    TargetRow,
)
from mailroute.core.report.labels import (
    COMPARISON_HEADER,
    GROUP_HEADER,
    OTHER_LABEL,
    PRIORITY_LABELS,
    STATUS_LABELS,
    TARGET_LABELS,
    TYPE_LABELS,
    _breach_cells,
    _comparison_rows,
    _group_cells,
    _hours,
    _label,
    _open_cells,
    _per_day_or_week,
    _period_line,
    _previous_line,
    _share,
    _target_cells,
    report_subject,
)

FONT = "-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif"
INK, MUTED, LINE, PAPER = "#1f2933", "#616e7c", "#e4e7eb", "#f5f7fa"
ACCENT, GOOD, BAD, WARN = "#3366cc", "#2f8a4e", "#c8372d", "#d9822b"
PRIORITY_COLOURS = {"critical": BAD, "normal": ACCENT, "low": "#8896ab"}
TYPE_COLOURS = {
    "incident": BAD,
    "service_request": ACCENT,
    "change_request": "#7b5ea7",
    "improvement": GOOD,
}
FALLBACK_COLOUR = "#8896ab"
CLOSED_DAY = "#b8c2cc"
WEEKDAYS = ("Mo", "Tu", "We", "Th", "Fr", "Sa", "Su")
PAGE_WIDTH = 720
CHART_WIDTH = 680
MAX_HTML_ROWS = 20


def _h(value: object) -> str:
    """Every value that reaches the page goes through here (quotes escaped too)."""
    return html.escape(str(value), quote=True)


def render_html(report: Report) -> str:
    """A self-contained page: inline styles and inline SVG, no script, no external file.

    Laid out with tables (e-mail clients ignore most CSS); every chart's numbers are
    also in a table next to it, for clients that drop SVG.
    """
    body = "".join(
        [
            _html_header(report),
            _html_headline(report),
            _html_breakdowns(report),
            _html_comparison(report),
            _html_organizations(report),
            _html_groups("SLA by tier", "Tier", report.tiers),
            _html_daily(report),
            *(_html_target(figures) for figures in report.targets),
            _html_breaches(report),
            _html_open(report),
            _html_notes(),
        ]
    )
    title = _h(report_subject(report))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title></head>"
        f'<body style="margin:0;padding:0;background:{PAPER};color:{INK};font-family:{FONT};">'
        f'<table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
        f'style="background:{PAPER};"><tr><td align="center" style="padding:24px 8px;">'
        f'<table role="presentation" width="{PAGE_WIDTH}" cellpadding="0" cellspacing="0" '
        f'style="width:{PAGE_WIDTH}px;max-width:100%;background:#ffffff;'
        f'border:1px solid {LINE};border-radius:6px;">'
        f"{body}</table></td></tr></table></body></html>\n"
    )


def _section(title: str, content: str, note: str = "") -> str:
    extra = f'<div style="font-size:12px;color:{MUTED};margin:2px 0 8px 0;">{_h(note)}</div>'
    return (
        '<tr><td style="padding:16px 20px 8px 20px;">'
        f'<h2 style="font-size:16px;margin:0 0 6px 0;color:{INK};">{_h(title)}</h2>'
        f"{extra if note else ''}{content}</td></tr>"
    )


def _html_header(report: Report) -> str:
    state = (
        ""
        if report.complete
        else (
            f'<div style="color:{WARN};font-size:13px;margin-top:4px;">Period not over: '
            f"figures as of {_h(f'{report.as_of:%Y-%m-%d %H:%M}')}</div>"
        )
    )
    return (
        f'<tr><td style="padding:20px 20px 4px 20px;border-bottom:3px solid {ACCENT};">'
        f'<div style="font-size:13px;color:{MUTED};text-transform:uppercase;'
        f'letter-spacing:1px;">ServiceDesk report</div>'
        f'<div style="font-size:24px;font-weight:bold;margin:2px 0 8px 0;">'
        f"{_h(_period_line(report))}</div>{state}</td></tr>"
    )


def _html_headline(report: Report) -> str:
    fr, res = report.first_response.overall, report.resolution.overall
    cards = [
        ("Requests created", str(report.created), "", INK),
        ("Open at end", str(report.open_at_end), "", INK),
        ("First response, median", _hours(fr.times.median), _card_times(fr, "answered"), INK),
        ("Resolution, median", _hours(res.times.median), _card_times(res, "resolved"), INK),
        (
            "SLA breaches",
            str(report.breach_count),
            _card_shares(fr, res),
            BAD if report.breach_count else GOOD,
        ),
    ]
    backlog = [
        ("Open at start", str(report.open_at_start), "", INK),
        (
            "Awaiting first response",
            str(report.awaiting_first_response),
            f"{report.overdue_first_response} overdue",
            BAD if report.overdue_first_response else INK,
        ),
        (
            "Breaches in progress",
            str(report.breaches_in_progress),
            "overdue and still open",
            BAD if report.breaches_in_progress else GOOD,
        ),
    ]
    cells = "".join(_card(*card) for card in cards)
    more = "".join(_card(*card) for card in backlog)
    return (
        '<tr><td style="padding:16px 14px 4px 14px;">'
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="6">'
        f"<tr>{cells}</tr><tr>{more}</tr></table></td></tr>"
    )


def _card_times(row: TargetRow, done: str) -> str:
    if not row.times.count:
        return f"none {done}"
    return f"p90 {_hours(row.times.p90)} · {row.times.count} {done}"


def _card_shares(first: TargetRow, resolution: TargetRow) -> str:
    shares = [
        f"{_share(row)} {what}"
        for row, what in ((first, "first response"), (resolution, "resolution"))
        if row.share_met is not None
    ]
    return "met: " + ", ".join(shares) if shares else "no target decided"


def _card(label: str, value: str, note: str, colour: str) -> str:
    return (
        f'<td valign="top" width="20%" style="background:{PAPER};border-radius:4px;'
        f'padding:10px 10px;">'
        f'<div style="font-size:11px;color:{MUTED};text-transform:uppercase;">{_h(label)}</div>'
        f'<div style="font-size:24px;font-weight:bold;color:{colour};margin:4px 0;">'
        f"{_h(value)}</div>"
        f'<div style="font-size:11px;color:{MUTED};">{_h(note)}</div></td>'
    )


def _html_breakdowns(report: Report) -> str:
    by_type = _hbar_chart(
        [
            (_label(k, TYPE_LABELS), n, TYPE_COLOURS.get(k or "", FALLBACK_COLOUR))
            for k, n in report.by_type
        ]
    )
    by_priority = _hbar_chart(
        [
            (_label(k, PRIORITY_LABELS), n, PRIORITY_COLOURS.get(k or "", FALLBACK_COLOUR))
            for k, n in report.by_priority
        ]
    )
    by_status = _html_count_table(report.by_status, STATUS_LABELS)
    by_queue = _html_count_table(report.by_queue)
    content = (
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0"><tr>'
        f'<td valign="top" width="50%" style="padding-right:10px;">{_subtitle("By type")}'
        f"{by_type}</td>"
        f'<td valign="top" width="50%" style="padding-left:10px;">{_subtitle("By priority")}'
        f"{by_priority}</td></tr><tr>"
        f'<td valign="top" style="padding:10px 10px 0 0;">{_subtitle("By status now")}'
        f"{by_status}</td>"
        f'<td valign="top" style="padding:10px 0 0 10px;">{_subtitle("By queue")}'
        f"{by_queue}</td></tr>"
        + (f'<tr><td valign="top" style="padding:10px 10px 0 0;">{_subtitle("By mailbox")}'
           f"{_html_count_table(report.by_mailbox)}</td><td></td></tr>"
           if report.by_mailbox else "")
        + "</table>"
    )
    return _section("Requests created", content)


def _subtitle(text: str) -> str:
    return f'<div style="font-size:13px;font-weight:bold;margin:4px 0;">{_h(text)}</div>'


def _html_daily(report: Report) -> str:
    """Per day; a long period (a yearly report from the CLI) per week, to stay readable."""
    unit, series = _per_day_or_week(report)
    opened = (
        f"Line: requests open at the end of each {unit} "
        f"({report.open_at_start} at the start of the period, {report.open_at_end} at its end)."
    )
    if unit == "week":
        note = "Weeks start on Monday; the first and last may be partial. " + opened
        return _section("Created per week", _column_chart(series, weekdays=False), note)
    note = "Grey columns: days the desk is closed (weekends, holidays). " + opened
    return _section("Created per day", _column_chart(series), note)


def _html_target(figures: TargetFigures) -> str:
    rows = [figures.overall, *figures.by_priority]
    done = "first responses" if figures.kind == "first_response" else "resolutions"
    rows_with_times = [row for row in figures.by_priority if row.times.count]
    chart = _bullet_chart(rows_with_times, f"No {done} in the period.")
    header = ("Priority", "Count", "Median", "p90", "Target", "Met", "Missed", "Met %")
    cells = [_target_cells(row) for row in rows]
    cells = [(c[0].capitalize(), *c[1:]) for c in cells]
    table = _html_table(header, cells, right=range(1, 8), bold_first_row=True)
    note = (
        "Business hours on the SLA clock (time waiting for the customer left out). "
        "Bar: median; pale bar: 90th percentile; red line: target."
    )
    return _section(f"{TARGET_LABELS[figures.kind]} time", chart + table, note)


def _html_breaches(report: Report) -> str:
    if not report.breaches:
        content = f'<div style="color:{GOOD};font-size:14px;">No SLA breaches in the period.</div>'
        return _section("SLA breaches", content)
    header = ("Request", "Target", "Priority", "Due", "Late", "Organization")
    rows = [_breach_cells(line) for line in report.breaches[:MAX_HTML_ROWS]]
    table = _html_table(header, rows, right=(4,))
    more = len(report.breaches) - MAX_HTML_ROWS
    tail = f'<div style="font-size:12px;color:{MUTED};">and {more} more</div>' if more > 0 else ""
    counts = _breach_matrix(report)
    return _section(f"SLA breaches: {report.breach_count}", counts + table + tail)


def _breach_matrix(report: Report) -> str:
    """Breaches by target (rows) and priority (columns)."""
    priorities = [row.priority for row in report.first_response.by_priority]
    for row in report.resolution.by_priority:
        if row.priority not in priorities:
            priorities.append(row.priority)
    header = ("Target", *(_label(p, PRIORITY_LABELS) for p in priorities), "Total")
    rows = []
    for figures in report.targets:
        missed = {row.priority: row.missed for row in figures.by_priority}
        rows.append(
            (
                TARGET_LABELS[figures.kind],
                *(str(missed.get(p, 0)) for p in priorities),
                str(figures.overall.missed),
            )
        )
    table = _html_table(header, rows, right=range(1, len(header)))
    return table + '<div style="height:10px;"></div>'


def _html_open(report: Report) -> str:
    counts = ", ".join(
        f"{_label(key, PRIORITY_LABELS)} {count}" for key, count in report.open_by_priority
    )
    intro = f'<div style="font-size:14px;margin-bottom:8px;">By priority: {_h(counts)}</div>'
    if not report.oldest_open:
        return _section(f"Open at end of period: {report.open_at_end}", intro)
    header = ("Request", "Priority", "Status", "Created", "Age", "Organization")
    rows = [_open_cells(line) for line in report.oldest_open]
    table = _html_table(header, rows, right=(4,))
    title = f"Open at end of period: {report.open_at_end}"
    return _section(title, intro + _subtitle("Oldest") + table, "Age in business hours.")


def _html_organizations(report: Report) -> str:
    counts = list(report.by_organization)
    if report.other_organizations:
        counts.append((OTHER_LABEL, report.other_organizations))
    created = _section("Requests created by organization", _html_count_table(counts))
    return created + _html_groups("SLA by organization", "Organization", report.organizations)


def _html_groups(title: str, name: str, rows: Sequence[GroupRow]) -> str:
    """Times and targets met/missed per organization or tier, the most breaches first."""
    if not rows:
        return _section(title, f'<div style="font-size:13px;color:{MUTED};">No requests.</div>')
    header = (name, *(label.capitalize() for label in GROUP_HEADER))
    table = _html_table(header, [_group_cells(row) for row in rows], right=range(1, 10))
    note = "Ordered by breaches, then critical requests, then requests created, then name."
    return _section(title, table, note)


def _html_comparison(report: Report) -> str:
    header = tuple(label.capitalize() for label in COMPARISON_HEADER)
    table = _html_table(header, _comparison_rows(report), right=(1, 2, 3))
    return _section("Against the previous period", table, _previous_line(report))


def _html_notes() -> str:
    return (
        f'<tr><td style="padding:12px 20px 18px 20px;font-size:11px;color:{MUTED};'
        f'border-top:1px solid {LINE};">'
        "Times are business hours from the start of the SLA clock (creation, or when missing "
        "details arrived), without time spent waiting for the customer. Median: the middle "
        "value. p90: 90th percentile by nearest rank (the smallest observed time at or below "
        "which 90 % of times lie). A target counts as met or missed in the period in which "
        "it was decided. Generated by mailroute.</td></tr>"
    )


def _html_count_table(counts: Sequence[Count], labels: Mapping[str, str] | None = None) -> str:
    if not counts:
        return f'<div style="font-size:13px;color:{MUTED};">No requests.</div>'
    rows = [(_label(key, labels), str(count)) for key, count in counts]
    return _html_table(None, rows, right=(1,))


def _html_table(
    header: Sequence[str] | None,
    rows: Sequence[Sequence[str]],
    right: Iterable[int] = (),
    bold_first_row: bool = False,
) -> str:
    """A plain data table with inline styles; every cell escaped."""
    aligned = set(right)
    cell = "padding:4px 8px;border-bottom:1px solid " + LINE + ";font-size:13px;"

    def tr(values: Sequence[str], tag: str, extra: str = "") -> str:
        return (
            "<tr>"
            + "".join(
                f'<{tag} align="{"right" if i in aligned else "left"}" '
                f'style="{cell}{extra}">{_h(value)}</{tag}>'
                for i, value in enumerate(values)
            )
            + "</tr>"
        )

    head = tr(header, "th", f"color:{MUTED};font-weight:normal;") if header else ""
    body = "".join(
        tr(row, "td", "font-weight:bold;" if bold_first_row and i == 0 else "")
        for i, row in enumerate(rows)
    )
    return (
        '<table cellpadding="0" cellspacing="0" width="100%" '
        f'style="border-collapse:collapse;">{head}{body}</table>'
    )


# --------------------------------------------------------------------------- SVG


def _svg(width: int, height: int, label: str, content: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_h(label)}" '
        f'style="display:block;max-width:100%;height:auto;" font-family="{_h(FONT)}">'
        f"<title>{_h(label)}</title>{content}</svg>"
    )


def _text(
    x: float,
    y: float,
    value: object,
    size: int = 12,
    anchor: str = "start",
    colour: str = INK,
    weight: str = "normal",
) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
        f'fill="{colour}" font-weight="{weight}">{_h(value)}</text>'
    )


def _rect(
    x: float, y: float, width: float, height: float, colour: str, opacity: float = 1.0
) -> str:
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(width, 0):.1f}" '
        f'height="{max(height, 0):.1f}" fill="{colour}" fill-opacity="{opacity}"/>'
    )


def _hbar_chart(rows: Sequence[tuple[str, int, str]], width: int = 330) -> str:
    """Horizontal bars, one per (label, count, colour), the count written at the bar's end."""
    label_width, row_height, value_room = 118, 26, 40
    height = max(len(rows), 1) * row_height + 4
    scale = (width - label_width - value_room) / max([n for _, n, _ in rows] + [1])
    parts = []
    for i, (label, count, colour) in enumerate(rows):
        y = i * row_height + 4
        bar = count * scale
        parts.append(_text(label_width - 8, y + 15, label, anchor="end"))
        parts.append(_rect(label_width, y + 2, width - label_width - value_room, 18, PAPER))
        parts.append(_rect(label_width, y + 2, bar, 18, colour))
        parts.append(_text(label_width + bar + 5, y + 15, count, weight="bold"))
    return _svg(width, height, "bar chart", "".join(parts))


def _column_chart(days: Sequence[DayCount], width: int = CHART_WIDTH, weekdays: bool = True) -> str:
    """One column per day (or week): closed days grey, a light grid, dates underneath."""
    top, bottom, left, right = 16, 34, 34, 6
    height = 190
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([d.count for d in days] + [d.open or 0 for d in days] + [1])
    step = _grid_step(peak)
    ceiling = step * math.ceil(peak / step)
    slot = plot_w / max(len(days), 1)
    parts = _column_grid(ceiling, step, left, top, plot_w, plot_h)
    every = max(1, math.ceil(len(days) / 16))
    for i, day in enumerate(days):
        x = left + i * slot
        bar_h = plot_h * day.count / ceiling
        parts.append(_column(x, slot, top + plot_h, bar_h, day))
        if i % every == 0:
            middle = x + slot / 2
            if weekdays:
                parts.append(
                    _text(middle, height - 20, WEEKDAYS[day.day.weekday()], 10, "middle", MUTED)
                )
            parts.append(_text(middle, height - 8, f"{day.day:%d.%m}", 10, "middle", MUTED))
    parts.append(_open_line(days, left, top + plot_h, slot, plot_h / ceiling))
    return _svg(width, height, "requests created over the period", "".join(parts))


def _open_line(days: Sequence[DayCount], left: int, base: float, slot: float, scale: float) -> str:
    """Requests open at the end of each day (week), as a line over the columns."""
    points = [
        f"{left + (i + 0.5) * slot:.1f},{base - day.open * scale:.1f}"
        for i, day in enumerate(days)
        if day.open is not None
    ]
    if not points:
        return ""
    return f'<polyline points="{" ".join(points)}" fill="none" stroke="{WARN}" stroke-width="2"/>'


def _column(x: float, slot: float, base: float, bar_h: float, day: DayCount) -> str:
    """One column with its count on top when there is room for it."""
    gap = min(slot * 0.2, 6)
    colour = ACCENT if day.working else CLOSED_DAY
    column = _rect(x + gap / 2, base - bar_h, slot - gap, bar_h, colour)
    if day.count and slot >= 18:
        column += _text(x + slot / 2, base - bar_h - 3, day.count, 10, "middle")
    return column


def _grid_step(peak: int) -> int:
    """A round step for the y axis giving at most about five grid lines."""
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000):
        if peak / step <= 5:
            return step
    return int(10 ** len(str(peak)))


def _column_grid(
    ceiling: int, step: int, left: int, top: int, plot_w: float, plot_h: float
) -> list[str]:
    parts = []
    for value in range(0, ceiling + 1, step):
        y = top + plot_h - plot_h * value / ceiling
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w:.1f}" y2="{y:.1f}" '
            f'stroke="{LINE}" stroke-width="1"/>'
        )
        parts.append(_text(left - 6, y + 4, value, 10, "end", MUTED))
    return parts


def _bullet_chart(rows: Sequence[TargetRow], empty: str, width: int = CHART_WIDTH) -> str:
    """Per priority: median bar over a pale p90 bar, the target as a red tick."""
    if not rows:
        return f'<div style="font-size:13px;color:{MUTED};margin-bottom:6px;">{_h(empty)}</div>'

    label_width, row_height, value_room = 90, 30, 130
    height = len(rows) * row_height + 22
    plot_w = width - label_width - value_room
    peak = max(max(r.times.p90 or 0.0, r.target or 0.0) for r in rows) or 1.0
    scale = plot_w / (peak * 1.05)
    parts = []
    for i, row in enumerate(rows):
        y = i * row_height + 4
        median_w, p90_w = (row.times.median or 0.0) * scale, (row.times.p90 or 0.0) * scale
        colour = PRIORITY_COLOURS.get(row.priority or "", FALLBACK_COLOUR)
        parts.append(
            _text(label_width - 8, y + 16, _label(row.priority, PRIORITY_LABELS), anchor="end")
        )
        parts.append(_rect(label_width, y + 3, plot_w, 18, PAPER))
        parts.append(_rect(label_width, y + 3, p90_w, 18, colour, 0.3))
        parts.append(_rect(label_width, y + 7, median_w, 10, colour))
        if row.target is not None:
            x = label_width + row.target * scale
            parts.append(
                f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x:.1f}" y2="{y + 24:.1f}" '
                f'stroke="{BAD}" stroke-width="2"/>'
            )
        summary = f"{_hours(row.times.median)} / {_hours(row.times.p90)}"
        parts.append(_text(label_width + plot_w + 8, y + 16, summary, 11, colour=MUTED))
    parts.append(_axis_hours(label_width, height - 4, plot_w, peak * 1.05))
    return _svg(width, height, "times against targets", "".join(parts))


def _axis_hours(left: int, y: float, plot_w: float, span: float) -> str:
    """Hour marks under the bullet chart."""
    step = float(_grid_step(max(1, math.ceil(span))))
    marks = []
    value = 0.0
    while value <= span:
        x = left + plot_w * value / span
        marks.append(_text(x, y, f"{value:g} h", 10, "middle", MUTED))
        value += step
    return "".join(marks)
