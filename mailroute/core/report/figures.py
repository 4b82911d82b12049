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
  history) was new, awaiting_customer or in_progress; open at start likewise at ``start``,
  and per day at the end of each local day (up to the cut);
* awaiting a first response: open at the cut, not waiting for the customer, not answered
  by the cut; *overdue* when its first response is missed (see below). Breaches in
  progress: targets missed and still not done at the cut, of requests open then, whenever
  the breach began; so a backlog breached before the period is not reported as "none";
* per organization and per tier: the created counts, times and met/missed above, grouped.
  Organizations are ranked by breaches, then critical requests created, then requests
  created, then name, so ties never hide the one with a critical incident;
* previous period: the same headline figures for the period of the same length just
  before ``start``, from the same facts.

Median: the middle value, the mean of the two middle values for an even count.
90th percentile: nearest rank, the smallest observed value with at least 90 % of the
values at or below it, ``sorted(values)[ceil(0.9 * n) - 1]``: always a real response
time, never an interpolation, and defined for a single value.
"""

from __future__ import annotations

import bisect
import itertools
import math
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

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
    tier: str | None = None
    mailbox: str | None = None  # with several mailboxes, the one it came in through

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
    """Requests created on a day; ``open`` at its end (None: the day is after the cut)."""

    day: date
    count: int
    working: bool
    open: int | None = None


@dataclass(frozen=True)
class GroupRow:
    """SLA of one organization or tier: what it created, its times and targets met/missed."""

    name: str | None
    created: int
    critical: int
    first_response: TargetRow
    resolution: TargetRow

    @property
    def breaches(self) -> int:
        return self.first_response.missed + self.resolution.missed


@dataclass(frozen=True)
class Summary:
    """The headline figures of a period, to compare one period with the one before it."""

    first_day: date
    last_day: date
    created: int
    breaches: int
    first_response_median: float | None
    resolution_median: float | None
    open_at_end: int


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
    by_mailbox: tuple[Count, ...]  # empty unless requests came in through several
    by_organization: tuple[Count, ...]
    other_organizations: int
    daily: tuple[DayCount, ...]
    first_response: TargetFigures
    resolution: TargetFigures
    breaches: tuple[BreachLine, ...]
    open_at_end: int
    open_by_priority: tuple[Count, ...]
    oldest_open: tuple[OpenLine, ...]
    open_at_start: int
    awaiting_first_response: int
    overdue_first_response: int
    overdue_resolution: int
    organizations: tuple[GroupRow, ...]
    tiers: tuple[GroupRow, ...]
    previous: Summary

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

    @property
    def breaches_in_progress(self) -> int:
        """Targets missed and still not done at the cut, of requests open then."""
        return self.overdue_first_response + self.overdue_resolution

    @property
    def summary(self) -> Summary:
        """This period's headline figures, in the shape of :attr:`previous`."""
        return _summary_of(self)


def _by_mailbox(created: list[RequestFacts]) -> tuple[Count, ...]:
    """Requests by the mailbox they came in through; nothing when there was only one."""
    counts = _counts((f.mailbox for f in created), ())
    return counts if len(counts) > 1 else ()


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
    met/missed come from each request's own due times and recorded breaches. The facts
    should cover the previous period of the same length too, for the comparison.
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
    organizations = _groups(everything, created, start, cut, calendar, _organization)
    awaiting = [f for f in opened if _awaiting_first_response(f, cut)]
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
        by_mailbox=_by_mailbox(created),
        by_organization=tuple((g.name, g.created) for g in organizations[:top_organizations]),
        other_organizations=sum(g.created for g in organizations[top_organizations:]),
        daily=_daily(everything, created, start, end, cut, calendar),
        first_response=figures["first_response"],
        resolution=figures["resolution"],
        breaches=_breach_lines(everything, start, cut, calendar),
        open_at_end=len(opened),
        open_by_priority=_counts((f.priority for f in opened), PRIORITIES),
        oldest_open=tuple(_open_line(f, cut, calendar) for f in opened[:oldest_open]),
        open_at_start=sum(1 for f in everything if status_at(f, start) in OPEN_STATUSES),
        awaiting_first_response=len(awaiting),
        overdue_first_response=sum(1 for f in awaiting if _missed(f, "first_response", cut)),
        overdue_resolution=sum(1 for f in opened if _overdue_resolution(f, cut)),
        organizations=organizations[:top_organizations],
        tiers=_groups(everything, created, start, cut, calendar, _tier),
        previous=_previous(everything, start, end, calendar),
    )


def _by_creation(facts: RequestFacts) -> tuple[datetime, str]:
    return facts.created_at, facts.number


def _counts(values: Iterable[str | None], known: Sequence[str]) -> tuple[Count, ...]:
    """Counts in a fixed order: the known values (zeros too), then the rest by count."""
    counter = Counter(values)
    rest = sorted((k for k in counter if k not in known), key=lambda k: (-counter[k], k or ""))
    return tuple((key, counter[key]) for key in (*known, *rest))


def _daily(
    everything: Sequence[RequestFacts],
    created: Sequence[RequestFacts],
    start: datetime,
    end: datetime,
    cut: datetime,
    calendar: BusinessCalendar,
) -> tuple[DayCount, ...]:
    """Requests created on each local day of the period (empty days too), open at its end."""
    zone = calendar.zone
    per_day = Counter(f.created_at.astimezone(zone).date() for f in created)
    day, last = start.astimezone(zone).date(), (end - ONE_MICROSECOND).astimezone(zone).date()
    days = []
    while day <= last:
        days.append(day)
        day += timedelta(days=1)
    moments = [
        min(datetime.combine(d + timedelta(days=1), time(0), tzinfo=zone), cut)
        for d in days
        if datetime.combine(d, time(0), tzinfo=zone) < cut
    ]
    series = open_series(everything, moments)
    return tuple(
        DayCount(d, per_day[d], calendar.is_working_day(d), series[i] if i < len(series) else None)
        for i, d in enumerate(days)
    )


def open_series(facts: Iterable[RequestFacts], moments: Sequence[datetime]) -> list[int]:
    """How many requests were open at each of ``moments`` (ascending), as :func:`status_at`.

    Each request's open spans are laid over the moments by bisection, so a yearly report
    of many requests costs spans x log(days), not days x requests x changes.
    """
    diff = [0] * (len(moments) + 1)
    for f in facts:
        for opened, closed in _open_spans(f):
            low = bisect.bisect_right(moments, opened)
            high = len(moments) if closed is None else bisect.bisect_right(moments, closed)
            if low < high:
                diff[low] += 1
                diff[high] -= 1
    return list(itertools.accumulate(diff[:-1]))


def _open_spans(facts: RequestFacts) -> list[tuple[datetime, datetime | None]]:
    """Spans ``(opened, closed]`` in which :func:`status_at` gives an open status."""
    spans: list[tuple[datetime, datetime | None]] = []
    since = (
        facts.created_at
        if initial_status(facts.status, facts.status_changes) in OPEN_STATUSES
        else None
    )
    for change in facts.status_changes:
        is_open = change.new in OPEN_STATUSES
        if since is None and is_open:
            since = change.at
        elif since is not None and not is_open:
            spans.append((since, change.at))
            since = None
    if since is not None:
        spans.append((since, None))
    return spans


# --------------------------------------------------------------------------- groups


def _organization(facts: RequestFacts) -> str | None:
    return facts.organization


def _tier(facts: RequestFacts) -> str | None:
    return facts.tier


def _groups(
    everything: Sequence[RequestFacts],
    created: Sequence[RequestFacts],
    start: datetime,
    cut: datetime,
    calendar: BusinessCalendar,
    key: Callable[[RequestFacts], str | None],
) -> tuple[GroupRow, ...]:
    """SLA per group (organization, tier), the most breaches first, then ``_rank``."""
    volume = Counter(key(f) for f in created)
    critical = Counter(key(f) for f in created if f.priority == "critical")
    tallies = {kind: _tally(everything, kind, start, cut, calendar, key) for kind in TARGETS}
    names = set(volume)
    for hours, outcomes in tallies.values():
        names.update(hours, outcomes)
    rows = [
        GroupRow(
            name,
            volume[name],
            critical[name],
            *(
                _row(
                    None,
                    tallies[kind][0].get(name, []),
                    tallies[kind][1].get(name, Counter()),
                    None,
                )
                for kind in TARGETS
            ),
        )
        for name in names
    ]
    return tuple(sorted(rows, key=_rank))


def _rank(row: GroupRow) -> tuple[int, int, int, bool, str]:
    """Breaches, then critical requests, then volume (all descending), then the name."""
    return -row.breaches, -row.critical, -row.created, row.name is None, row.name or ""


# --------------------------------------------------------------------------- backlog


def _awaiting_first_response(facts: RequestFacts, cut: datetime) -> bool:
    """Open at the cut, not waiting for the customer, and not answered by then."""
    answered = facts.first_response_at is not None and facts.first_response_at < cut
    return status_at(facts, cut) in ("new", "in_progress") and not answered


def _missed(facts: RequestFacts, kind: str, cut: datetime) -> bool:
    decided = outcome(facts, kind, cut)
    return decided is not None and decided[0] == "missed" and decided[1] < cut


def _overdue_resolution(facts: RequestFacts, cut: datetime) -> bool:
    """Open at the cut and its resolution missed: a breach still in progress."""
    return status_at(facts, cut) != PAUSED and _missed(facts, "resolution", cut)


def _previous(
    everything: Sequence[RequestFacts], start: datetime, end: datetime, calendar: BusinessCalendar
) -> Summary:
    """The headline figures of the period of the same length that ends at ``start``."""
    before = start - (end - start)
    created = sum(1 for f in everything if before <= f.created_at < start)
    figures = [_target_figures(everything, kind, before, start, calendar, {}) for kind in TARGETS]
    zone = calendar.zone
    return Summary(
        first_day=before.astimezone(zone).date(),
        last_day=(start - ONE_MICROSECOND).astimezone(zone).date(),
        created=created,
        breaches=sum(f.overall.missed for f in figures),
        first_response_median=figures[0].overall.times.median,
        resolution_median=figures[1].overall.times.median,
        open_at_end=sum(1 for f in everything if status_at(f, start) in OPEN_STATUSES),
    )


def _summary_of(report: Report) -> Summary:
    return Summary(
        first_day=report.first_day,
        last_day=report.last_day,
        created=report.created,
        breaches=report.breach_count,
        first_response_median=report.first_response.overall.times.median,
        resolution_median=report.resolution.overall.times.median,
        open_at_end=report.open_at_end,
    )


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


def _tally(
    facts: Sequence[RequestFacts],
    kind: str,
    start: datetime,
    cut: datetime,
    calendar: BusinessCalendar,
    key: Callable[[RequestFacts], str | None],
) -> tuple[dict[str | None, list[float]], dict[str | None, Counter[str]]]:
    """Times of responses in the period and outcomes decided in it, grouped by ``key``."""
    hours: dict[str | None, list[float]] = {}
    outcomes: dict[str | None, Counter[str]] = {}
    for f in facts:
        done = f.done_at(kind)
        if done is not None and f.clock_start is not None and start <= done < cut:
            hours.setdefault(key(f), []).append(clock_hours(f, done, calendar))
        decided = outcome(f, kind, cut)
        if decided is not None and start <= decided[1] < cut:
            outcomes.setdefault(key(f), Counter())[decided[0]] += 1
    return hours, outcomes


def _priority(facts: RequestFacts) -> str:
    return facts.priority


def _target_figures(
    facts: Sequence[RequestFacts],
    kind: str,
    start: datetime,
    cut: datetime,
    calendar: BusinessCalendar,
    targets: Mapping[str, Targets],
) -> TargetFigures:
    """The table of one target: every priority, then each priority on its own."""
    hours, outcomes = _tally(facts, kind, start, cut, calendar, _priority)
    priorities = [p for p, _ in _counts([*hours, *outcomes], PRIORITIES)]
    rows = tuple(
        _row(p, hours.get(p, []), outcomes.get(p, Counter()), _target(targets, p, kind))
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
