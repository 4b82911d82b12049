"""Period reports of the desk: what came in, how fast it was answered, what was late. Pure.

Facts in (one :class:`RequestFacts` per request, loaded by :mod:`mailroute.pipeline.reports`),
a :class:`Report` out, rendered as plain text, JSON or a self-contained HTML page with
inline SVG charts. No IO and no clock reads: the period, ``now`` and the calendar are
passed in, so the same facts always give the same report.

The period is half-open, ``[start, end)``. The *cut* is ``end``, or ``now`` when the
period is not over yet. Which requests each figure covers:

* created: requests created in the period; "status now" is their current status;
* times: requests whose first response (resolution) happened in the period, measured on
  the SLA clock: business hours from ``clock_start`` to the response, less the business
  time spent in ``awaiting_customer`` (the SLA clock is paused then, so the figure is
  comparable with the target). Each response is counted in exactly one period;
* SLA met/missed: each (request, target) is decided once: *missed* at its earliest
  breach (a recorded escalation, or a due time that passed without the response), *met*
  when done by the due time. It counts in the period in which it was decided, so a
  request created on Friday and late on Monday is a breach of the week of the Monday;
* open at end: requests created before the cut whose status at the cut (from the status
  history) was new, awaiting_customer or in_progress.

Median: the middle value, the mean of the two middle values for an even count.
90th percentile: nearest rank, the smallest observed value with at least 90 % of the
values at or below it, ``sorted(values)[ceil(0.9 * n) - 1]``: always a real response
time, never an interpolation, and defined for a single value.
"""

from __future__ import annotations

import html
import json
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr
from typing import Any

from mailroute.core.business_calendar import BusinessCalendar
from mailroute.core.compose import Draft, Identity, one_line
from mailroute.core.sla import Targets

TARGETS = ("first_response", "resolution")
PRIORITIES = ("critical", "normal", "low")
TYPES = ("incident", "service_request", "change_request", "improvement")
STATUSES = ("new", "awaiting_customer", "in_progress", "resolved", "closed")
OPEN_STATUSES = ("new", "awaiting_customer", "in_progress")
PAUSED = "awaiting_customer"
PERCENTILE = 90

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

Count = tuple[str | None, int]
ONE_MICROSECOND = timedelta(microseconds=1)


# --------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class StatusChange:
    """One ``status`` event of a request: when, from what, to what."""

    at: datetime
    old: str
    new: str


@dataclass(frozen=True)
class Breach:
    """One recorded SLA breach (a row of ``escalations``)."""

    kind: str  # first_response | resolution
    due: datetime


@dataclass(frozen=True)
class RequestFacts:
    """What a report needs of one request; plain data, no database session behind it.

    ``clock_start`` is when the SLA clock started (creation, or the moment missing details
    were supplied); None while it has not. ``status_changes`` is oldest first.
    """

    number: str
    request_type: str
    priority: str
    organization: str | None
    queue: str | None
    status: str
    created_at: datetime
    clock_start: datetime | None
    first_response_at: datetime | None = None
    resolved_at: datetime | None = None
    first_response_due: datetime | None = None
    resolution_due: datetime | None = None
    breaches: tuple[Breach, ...] = ()
    status_changes: tuple[StatusChange, ...] = ()

    def done_at(self, kind: str) -> datetime | None:
        """When the target ``kind`` was achieved (first response given, resolved)."""
        return self.first_response_at if kind == "first_response" else self.resolved_at

    def due(self, kind: str) -> datetime | None:
        return self.first_response_due if kind == "first_response" else self.resolution_due


def clock_start_from(
    created_at: datetime, initial_status: str, changes: Sequence[StatusChange]
) -> datetime | None:
    """When the SLA clock of a request started, from its status history.

    A request created complete starts its clock at creation; one created waiting for
    details (``awaiting_customer``) starts it when it first leaves that status (details
    complete, clarification rounds used up, or an operator took it on).
    """
    if initial_status != PAUSED:
        return created_at
    return changes[0].at if changes else None


def initial_status(current: str, changes: Sequence[StatusChange]) -> str:
    """The status a request was created with: the ``old`` of its first change."""
    return changes[0].old if changes else current


def status_at(facts: RequestFacts, moment: datetime) -> str | None:
    """The request's status just before ``moment``; None if it did not exist yet."""
    if facts.created_at >= moment:
        return None
    earlier = [change for change in facts.status_changes if change.at < moment]
    if earlier:
        return earlier[-1].new
    return initial_status(facts.status, facts.status_changes)


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Durations:
    """Business hours on the SLA clock: how many, median, 90th percentile (nearest rank)."""

    count: int
    median: float | None
    p90: float | None


@dataclass(frozen=True)
class TargetRow:
    """One line of a target's table: all priorities (``priority`` None) or one priority."""

    priority: str | None
    times: Durations
    target: float | None  # business hours, when targets were given
    met: int
    missed: int

    @property
    def decided(self) -> int:
        return self.met + self.missed

    @property
    def share_met(self) -> float | None:
        """Met / decided; None when nothing with a target was decided in the period."""
        return self.met / self.decided if self.decided else None


@dataclass(frozen=True)
class TargetFigures:
    """Times and SLA outcomes of one target (first response or resolution)."""

    kind: str
    overall: TargetRow
    by_priority: tuple[TargetRow, ...]


@dataclass(frozen=True)
class BreachLine:
    """A target missed in the period; ``late`` is business hours past due (at the cut)."""

    number: str
    kind: str
    priority: str
    organization: str | None
    due: datetime
    late: float


@dataclass(frozen=True)
class OpenLine:
    """A request open at the cut; ``age`` is business hours since it was created."""

    number: str
    priority: str
    status: str
    organization: str | None
    created_at: datetime
    age: float


@dataclass(frozen=True)
class DayCount:
    day: date
    count: int
    working: bool


@dataclass(frozen=True)
class Report:
    """Everything a renderer shows; datetimes are in the desk's zone."""

    start: datetime
    end: datetime
    as_of: datetime
    timezone: str
    first_day: date
    last_day: date
    created: int
    by_type: tuple[Count, ...]
    by_priority: tuple[Count, ...]
    by_queue: tuple[Count, ...]
    by_status: tuple[Count, ...]
    by_organization: tuple[Count, ...]
    other_organizations: int
    daily: tuple[DayCount, ...]
    first_response: TargetFigures
    resolution: TargetFigures
    breaches: tuple[BreachLine, ...]
    open_at_end: int
    open_by_priority: tuple[Count, ...]
    oldest_open: tuple[OpenLine, ...]

    @property
    def complete(self) -> bool:
        """False for a period that had not ended at ``now``: figures are so far."""
        return self.as_of >= self.end

    @property
    def targets(self) -> tuple[TargetFigures, TargetFigures]:
        return self.first_response, self.resolution

    @property
    def breach_count(self) -> int:
        return sum(figures.overall.missed for figures in self.targets)


def make_report(
    facts: Iterable[RequestFacts],
    start: datetime,
    end: datetime,
    calendar: BusinessCalendar,
    *,
    now: datetime | None = None,
    targets: Mapping[str, Targets] | None = None,
    top_organizations: int = 10,
    oldest_open: int = 10,
) -> Report:
    """The report of ``[start, end)`` as known at ``now`` (default: the period is over).

    ``targets`` (priority -> :class:`~mailroute.core.sla.Targets`) only adds the target column;
    met/missed come from each request's own due times and recorded breaches.
    """
    if end <= start:
        raise ValueError("the period must end after it starts")
    zone = calendar.zone
    cut = end if now is None else max(start, min(end, now))
    everything = list(facts)
    created = [f for f in everything if start <= f.created_at < cut]
    figures = {
        kind: _target_figures(everything, kind, start, cut, calendar, targets or {})
        for kind in TARGETS
    }
    opened = sorted((f for f in everything if status_at(f, cut) in OPEN_STATUSES), key=_by_creation)
    organizations, other = _top(created, top_organizations)
    return Report(
        start=start.astimezone(zone),
        end=end.astimezone(zone),
        as_of=cut.astimezone(zone),
        timezone=calendar.timezone,
        first_day=start.astimezone(zone).date(),
        last_day=(end - ONE_MICROSECOND).astimezone(zone).date(),
        created=len(created),
        by_type=_counts((f.request_type for f in created), TYPES),
        by_priority=_counts((f.priority for f in created), PRIORITIES),
        by_queue=_counts((f.queue for f in created), ()),
        by_status=_counts((f.status for f in created), STATUSES),
        by_organization=organizations,
        other_organizations=other,
        daily=_daily(created, start, end, calendar),
        first_response=figures["first_response"],
        resolution=figures["resolution"],
        breaches=_breach_lines(everything, start, cut, calendar),
        open_at_end=len(opened),
        open_by_priority=_counts((f.priority for f in opened), PRIORITIES),
        oldest_open=tuple(_open_line(f, cut, calendar) for f in opened[:oldest_open]),
    )


def _by_creation(facts: RequestFacts) -> tuple[datetime, str]:
    return facts.created_at, facts.number


def _counts(values: Iterable[str | None], known: Sequence[str]) -> tuple[Count, ...]:
    """Counts in a fixed order: the known values (zeros too), then the rest by count."""
    counter = Counter(values)
    rest = sorted((k for k in counter if k not in known), key=lambda k: (-counter[k], k or ""))
    return tuple((key, counter[key]) for key in (*known, *rest))


def _top(created: Sequence[RequestFacts], limit: int) -> tuple[tuple[Count, ...], int]:
    """The ``limit`` organizations with most requests, and how many requests the rest had."""
    ranked = _counts((f.organization for f in created), ())
    return ranked[:limit], sum(count for _, count in ranked[limit:])


def _daily(
    created: Sequence[RequestFacts], start: datetime, end: datetime, calendar: BusinessCalendar
) -> tuple[DayCount, ...]:
    """Requests created on each local day of the period, empty days included."""
    zone = calendar.zone
    per_day = Counter(f.created_at.astimezone(zone).date() for f in created)
    day, last = start.astimezone(zone).date(), (end - ONE_MICROSECOND).astimezone(zone).date()
    days = []
    while day <= last:
        days.append(DayCount(day, per_day[day], calendar.is_working_day(day)))
        day += timedelta(days=1)
    return tuple(days)


# --------------------------------------------------------------------------- times


def median(values: Sequence[float]) -> float | None:
    """The middle value (mean of the two middle ones); None for no values."""
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile: ``sorted(values)[ceil(p / 100 * n) - 1]``; None if empty."""
    if not 0 < p <= 100:
        raise ValueError("p must be in (0, 100]")
    if not values:
        return None
    rank = math.ceil(p / 100 * len(values))
    return sorted(values)[max(rank, 1) - 1]


def durations(values: Sequence[float]) -> Durations:
    return Durations(len(values), median(values), percentile(values, PERCENTILE))


def clock_hours(facts: RequestFacts, until: datetime, calendar: BusinessCalendar) -> float:
    """Business hours on the SLA clock from ``clock_start`` to ``until``, pauses left out."""
    if facts.clock_start is None:
        raise ValueError(f"{facts.number}: the SLA clock has not started")
    total = calendar.business_time_between(facts.clock_start, until)
    for paused, resumed in _pauses(facts, until):
        total -= calendar.business_time_between(max(paused, facts.clock_start), min(resumed, until))
    return max(total, timedelta(0)) / timedelta(hours=1)


def _pauses(facts: RequestFacts, until: datetime) -> list[tuple[datetime, datetime]]:
    """Intervals spent in ``awaiting_customer``; one still running ends at ``until``."""
    pauses = []
    since = (
        facts.created_at if initial_status(facts.status, facts.status_changes) == PAUSED else None
    )
    for change in facts.status_changes:
        if change.new == PAUSED and since is None:
            since = change.at
        elif change.old == PAUSED and since is not None:
            pauses.append((since, change.at))
            since = None
    if since is not None:
        pauses.append((since, until))
    return pauses


def _target_figures(
    facts: Sequence[RequestFacts],
    kind: str,
    start: datetime,
    cut: datetime,
    calendar: BusinessCalendar,
    targets: Mapping[str, Targets],
) -> TargetFigures:
    """The table of one target: every priority, then each priority on its own."""
    hours: dict[str, list[float]] = {}
    outcomes: dict[str, Counter[str]] = {}
    for f in facts:
        done = f.done_at(kind)
        if done is not None and f.clock_start is not None and start <= done < cut:
            hours.setdefault(f.priority, []).append(clock_hours(f, done, calendar))
        decided = outcome(f, kind, cut)
        if decided is not None and start <= decided[1] < cut:
            outcomes.setdefault(f.priority, Counter())[decided[0]] += 1
    priorities = [p for p, _ in _counts([*hours, *outcomes], PRIORITIES)]
    rows = tuple(
        _row(p, hours.get(p or "", []), outcomes.get(p or "", Counter()), _target(targets, p, kind))
        for p in priorities
    )
    everything = [value for values in hours.values() for value in values]
    total = sum(outcomes.values(), Counter[str]())
    return TargetFigures(kind, _row(None, everything, total, None), rows)


def _row(
    priority: str | None, values: list[float], outcomes: Counter[str], target: float | None
) -> TargetRow:
    return TargetRow(priority, durations(values), target, outcomes["met"], outcomes["missed"])


def _target(targets: Mapping[str, Targets], priority: str | None, kind: str) -> float | None:
    chosen = targets.get(priority or "")
    span: timedelta | None = getattr(chosen, kind, None)
    return None if span is None else span / timedelta(hours=1)


# --------------------------------------------------------------------------- SLA


def outcome(facts: RequestFacts, kind: str, cut: datetime) -> tuple[str, datetime] | None:
    """("missed", earliest breach) or ("met", when done) for one target; None: undecided.

    A breach is a recorded escalation or a due time passed (before ``cut``) without the
    response; a due time passing while the request waits for the customer is not one,
    because the pause will move it.
    """
    missed = [breach.due for breach in facts.breaches if breach.kind == kind]
    due, done = facts.due(kind), facts.done_at(kind)
    if due is not None and _late(facts, due, done, cut):
        missed.append(due)
    if missed:
        return "missed", min(missed)
    if due is not None and done is not None:
        return "met", done
    return None


def _late(facts: RequestFacts, due: datetime, done: datetime | None, cut: datetime) -> bool:
    if done is not None:
        return done > due
    return due < cut and status_at(facts, cut) != PAUSED


def _breach_lines(
    facts: Sequence[RequestFacts], start: datetime, cut: datetime, calendar: BusinessCalendar
) -> tuple[BreachLine, ...]:
    """Targets missed in the period, the earliest first."""
    lines = []
    for f in facts:
        for kind in TARGETS:
            decided = outcome(f, kind, cut)
            if decided is None or decided[0] != "missed" or not start <= decided[1] < cut:
                continue
            due, done = decided[1], f.done_at(kind)
            stop = done if done is not None and done < cut else cut
            late = calendar.business_time_between(due, stop) / timedelta(hours=1)
            zone = calendar.zone
            lines.append(
                BreachLine(f.number, kind, f.priority, f.organization, due.astimezone(zone), late)
            )
    return tuple(sorted(lines, key=lambda line: (line.due, line.number, line.kind)))


def _open_line(facts: RequestFacts, cut: datetime, calendar: BusinessCalendar) -> OpenLine:
    return OpenLine(
        number=facts.number,
        priority=facts.priority,
        status=status_at(facts, cut) or facts.status,
        organization=facts.organization,
        created_at=facts.created_at.astimezone(calendar.zone),
        age=calendar.business_time_between(facts.created_at, cut) / timedelta(hours=1),
    )


# --------------------------------------------------------------------------- labels


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


# --------------------------------------------------------------------------- text


def render_text(report: Report) -> str:
    """Aligned plain text for a terminal or the text part of the report mail."""
    sections = [
        _text_headline(report),
        _text_counts("Created by type", report.by_type, TYPE_LABELS),
        _text_counts("Created by priority", report.by_priority, PRIORITY_LABELS),
        _text_counts("Created by queue", report.by_queue),
        _text_counts("Created, by status now", report.by_status, STATUS_LABELS),
        _text_organizations(report),
        *(_text_target(figures) for figures in report.targets),
        _text_breaches(report),
        _text_open(report),
        _text_notes(),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _text_headline(report: Report) -> str:
    lines = [f"ServiceDesk report {_period_line(report)}"]
    if not report.complete:
        lines.append(f"Period not over: figures as of {report.as_of:%Y-%m-%d %H:%M}")
    rows = [
        ("Created", str(report.created)),
        ("Open at end of period", str(report.open_at_end)),
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


def _text_breaches(report: Report) -> str:
    if not report.breaches:
        return "SLA breaches in the period: none"
    header = ("request", "target", "priority", "due", "late", "organization")
    rows = [_breach_cells(line) for line in report.breaches]
    title = f"SLA breaches in the period: {len(report.breaches)}"
    return "\n".join([title, *_text_table(header, rows, right=(4,), indent=2)])


def _breach_cells(line: BreachLine) -> tuple[str, ...]:
    return (
        line.number,
        TARGET_LABELS.get(line.kind, line.kind),
        _label(line.priority, PRIORITY_LABELS),
        f"{line.due:%Y-%m-%d %H:%M}",
        _hours(line.late),
        one_line(_label(line.organization), 40),
    )


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


def _open_cells(line: OpenLine) -> tuple[str, ...]:
    return (
        line.number,
        _label(line.priority, PRIORITY_LABELS),
        _label(line.status, STATUS_LABELS),
        f"{line.created_at:%Y-%m-%d %H:%M}",
        _hours(line.age),
        one_line(_label(line.organization), 40),
    )


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


# --------------------------------------------------------------------------- JSON


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
            "by_status_now": _json_counts(report.by_status),
            "by_organization": _json_counts(report.by_organization),
            "other_organizations": report.other_organizations,
            "daily": [
                {"date": d.day.isoformat(), "count": d.count, "working_day": d.working}
                for d in report.daily
            ],
        },
        "first_response": _json_target(report.first_response),
        "resolution": _json_target(report.resolution),
        "breaches": {
            "total": report.breach_count,
            "requests": [_json_breach(line) for line in report.breaches],
        },
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


# --------------------------------------------------------------------------- HTML

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
MAX_DAY_COLUMNS = 62  # two months; longer periods are charted per week


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
            _html_organizations(report),
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
    cells = "".join(_card(*card) for card in cards)
    return (
        '<tr><td style="padding:16px 14px 4px 14px;">'
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="6">'
        f"<tr>{cells}</tr></table></td></tr>"
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
        f"{by_queue}</td></tr></table>"
    )
    return _section("Requests created", content)


def _subtitle(text: str) -> str:
    return f'<div style="font-size:13px;font-weight:bold;margin:4px 0;">{_h(text)}</div>'


def _html_daily(report: Report) -> str:
    """Per day; a long period (a yearly report from the CLI) per week, to stay readable."""
    if len(report.daily) > MAX_DAY_COLUMNS:
        weeks = _weeks(report.daily)
        note = "Weeks start on Monday; the first and last may be partial."
        return _section("Created per week", _column_chart(weeks, weekdays=False), note)
    note = "Grey columns: days the desk is closed (weekends, holidays)."
    return _section("Created per day", _column_chart(report.daily), note)


def _weeks(days: Sequence[DayCount]) -> list[DayCount]:
    """Daily counts summed per ISO week, each labelled with its first day in the period."""
    weeks: dict[tuple[int, int], DayCount] = {}
    for day in days:
        key = day.day.isocalendar()[:2]
        known = weeks.get(key)
        first = known.day if known else day.day
        weeks[key] = DayCount(first, (known.count if known else 0) + day.count, True)
    return list(weeks.values())


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
    return _section("Requests created by organization", _html_count_table(counts))


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
    peak = max([d.count for d in days] + [1])
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
    return _svg(width, height, "requests created over the period", "".join(parts))


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


# --------------------------------------------------------------------------- mail


def compose_report(report: Report, identity: Identity, recipient: str, message_id: str) -> Draft:
    """The report mail: multipart/alternative, plain text first, the HTML page second.

    Marked like :func:`mailroute.core.compose.compose_notice` (``Auto-Submitted``,
    ``X-Mailroute-Kind``) so that no autoresponder answers it and mailroute's own
    intake recognises it.
    """
    subject = report_subject(report)
    message = EmailMessage(policy=SMTP)
    message["From"] = formataddr((one_line(identity.name), identity.address))
    message["To"] = one_line(recipient, 320)
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    message["X-Mailroute-Kind"] = "report"
    message["Content-Language"] = "en"
    message.set_content(render_text(report), charset="utf-8", cte="quoted-printable")
    message.add_alternative(
        render_html(report), subtype="html", charset="utf-8", cte="quoted-printable"
    )
    return Draft("report", identity.address, recipient, subject, message_id, message.as_bytes())


__all__ = [
    "Breach",
    "Durations",
    "Report",
    "RequestFacts",
    "StatusChange",
    "TargetFigures",
    "TargetRow",
    "clock_hours",
    "clock_start_from",
    "compose_report",
    "make_report",
    "median",
    "percentile",
    "render_html",
    "render_json",
    "render_text",
    "report_subject",
]
