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

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from mailroute.core.business_calendar import BusinessCalendar
from mailroute.core.sla import Targets

TARGETS = ("first_response", "resolution")
PRIORITIES = ("critical", "normal", "low")
TYPES = ("incident", "service_request", "change_request", "improvement")
STATUSES = ("new", "awaiting_customer", "in_progress", "resolved", "closed")
OPEN_STATUSES = ("new", "awaiting_customer", "in_progress")
PAUSED = "awaiting_customer"
PERCENTILE = 90

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
