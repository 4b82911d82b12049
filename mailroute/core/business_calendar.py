"""The desk's business calendar: working days, opening hours, business-time arithmetic.

Pure: no IO of its own and no clock reads; the caller passes every instant (``now``
included). Replies wait for :meth:`BusinessCalendar.next_opening`; SLA deadlines are
:meth:`BusinessCalendar.add_business_time`.

Where the days come from (default calendar ``"RU"``):

* Public holidays, the government's yearly transfers of days off and the working
  Saturdays/Sundays those transfers create come from the ``holidays`` library
  (``holidays.country_holidays("RU")``): its dict holds every non-working day (holidays,
  transferred days off, art. 112 carry-overs) and its documented ``weekend_workdays``
  attribute the working weekend days. ``extra_holidays`` / ``extra_workdays`` win over it.
* Shortened pre-holiday days (Labour Code art. 95: the working day immediately before a
  non-working public holiday is one hour shorter) are known neither to ``holidays`` nor
  to workalendar, so they are derived; see :meth:`BusinessCalendar.is_short_day`.
  ``short_days`` adds more.

Time arithmetic is done on instants (UTC), opening hours are wall-clock times in the
desk's zone, so a zone with DST opens at 10:00 local time on both sides of the switch.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from types import MappingProxyType
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

__all__ = ["BusinessCalendar", "Calendars", "HoursSettings", "calendar_of", "parse_hours"]

WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# Countries whose labour law shortens the working day before a public holiday and whose
# shortened days are therefore derived (Russian Labour Code art. 95). Elsewhere such a
# rule would be a surprise (a German desk closing early on 24 December); use short_days.
PRE_HOLIDAY_SHORTENING = frozenset({"RU"})

# How many closed days in a row are searched for the next opening before giving up:
# a calendar without any open time would otherwise loop for ever.
MAX_CLOSED_DAYS = 3 * 366

ONE_DAY = timedelta(days=1)


class HoursSettings(Protocol):
    """What :meth:`BusinessCalendar.from_config` reads: ``config.BusinessHoursConfig``.

    A protocol rather than an import, so that this module type-checks strictly on its
    own and does not pull pydantic in; the config section satisfies it.
    """

    @property
    def timezone(self) -> str: ...
    @property
    def open(self) -> time: ...
    @property
    def close(self) -> time: ...
    @property
    def workdays(self) -> Sequence[str]: ...
    @property
    def weekday_hours(self) -> Mapping[str, str]: ...
    @property
    def calendar(self) -> str: ...
    @property
    def extra_holidays(self) -> Sequence[date]: ...
    @property
    def extra_workdays(self) -> Sequence[date]: ...
    @property
    def short_days(self) -> Sequence[date]: ...
    @property
    def short_day_hours(self) -> float: ...


def parse_hours(span: str) -> tuple[time, time]:
    """``"10:00-17:00"`` -> (10:00, 17:00), the format of ``weekday_hours`` in the config."""
    start, sep, end = span.replace(" ", "").partition("-")
    if not sep:
        raise ValueError(f'{span!r} is not of the form "HH:MM-HH:MM"')
    opening, closing = _parse_time(start), _parse_time(end)
    if opening >= closing:
        raise ValueError(f"{span!r}: opening must be before closing")
    return opening, closing


def _parse_time(text: str) -> time:
    hours, sep, minutes = text.partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError(f'{text!r} is not a time of the form "HH:MM"')
    if int(hours) > 23 or int(minutes) > 59:
        raise ValueError(f"{text!r} is not a time of day (00:00-23:59)")
    return time(int(hours), int(minutes))


# --------------------------------------------------------------------------- library data


@dataclass(frozen=True)
class _LibraryYear:
    """What the ``holidays`` library says about one year of one country, frozen."""

    days_off: frozenset[date]  # holidays, transferred days off, carry-overs
    weekend_workdays: frozenset[date]  # Saturdays/Sundays made working days
    holidays: frozenset[date]  # the public holidays proper (no transfers, no carry-overs)
    substitutions: tuple[tuple[date, date], ...]  # (day off, working day it was taken from)


@functools.lru_cache(maxsize=512)
def _library_year(code: str, year: int) -> _LibraryYear:
    """One year of the ``holidays`` calendar; cached because the library is slow to build.

    The library objects themselves are mutable (lazy expansion) and so are not kept.
    """
    full = holidays.country_holidays(code, years=year, expand=False)
    plain = holidays.country_holidays(code, years=year, expand=False, observed=False)
    substitutions = _substitutions(full, year)
    moved = {day_off for day_off, _ in substitutions}
    return _LibraryYear(
        days_off=frozenset(day for day in full if day.year == year),
        weekend_workdays=frozenset(day for day in full.weekend_workdays if day.year == year),
        holidays=frozenset(day for day in plain if day.year == year and day not in moved),
        substitutions=substitutions,
    )


def _substitutions(calendar: holidays.HolidayBase, year: int) -> tuple[tuple[date, date], ...]:
    """The year's transfers, (day off, the weekend/holiday day it was moved from).

    ``holidays`` keeps each year's government decree as ``special_public_holidays``:
    ``(to_month, to_day, from_month, from_day[, from_year])``; 3-tuples are one-off named
    holidays. The library only exposes the resulting day sets, not which working
    Saturday belongs to which day off, which the shortened-day rule needs.
    """
    raw: Any = getattr(calendar, "special_public_holidays", {}).get(year, ())
    entries = (raw,) if raw and isinstance(raw[0], int) else raw
    result = []
    for entry in entries:
        if len(entry) not in (4, 5):
            continue
        from_year = int(entry[4]) if len(entry) == 5 else year
        day_off = date(year, int(entry[0]), int(entry[1]))
        result.append((day_off, date(from_year, int(entry[2]), int(entry[3]))))
    return tuple(result)


@dataclass(frozen=True)
class _LibraryInfo:
    country: str
    first_year: int
    last_year: int
    decree_years: frozenset[int] | None  # None: the calendar does not depend on decrees


@functools.lru_cache(maxsize=32)
def _library_info(code: str) -> _LibraryInfo:
    """Which country ``code`` is, and for which years the library knows its calendar.

    Raises ValueError for a code the library does not know.
    """
    try:
        calendar = holidays.country_holidays(code, expand=False)
    except NotImplementedError as exc:
        raise ValueError(f"unknown holiday calendar {code!r}: {exc}") from None
    decree_years: frozenset[int] | None = None
    if getattr(calendar, "has_substituted_holidays", False):
        years: set[int] = set()
        for name in ("special_public_holidays", "special_public_holidays_observed"):
            years.update(int(year) for year in getattr(calendar, name, {}))
        decree_years = frozenset(years)
    return _LibraryInfo(
        country=str(getattr(calendar, "country", code.upper())),
        first_year=calendar.start_year,
        last_year=calendar.end_year,
        decree_years=decree_years,
    )


# --------------------------------------------------------------------------- the calendar


@dataclass(frozen=True, kw_only=True)
class BusinessCalendar:
    """When the desk is open, and how much open time lies between two instants.

    Immutable and safe to share. Weekdays are numbered as ``date.weekday()`` (Monday 0).
    """

    timezone: str = "Europe/Moscow"
    open: time = time(10, 0)
    close: time = time(18, 0)
    workdays: frozenset[int] = frozenset(range(5))
    weekday_hours: Mapping[int, tuple[time, time]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    calendar: str = "RU"
    extra_holidays: frozenset[date] = frozenset()
    extra_workdays: frozenset[date] = frozenset()
    short_days: frozenset[date] = frozenset()
    short_day_hours: timedelta = timedelta(hours=1)

    _zone: ZoneInfo = field(init=False, repr=False, compare=False, hash=False)
    _hours: tuple[tuple[time, time], ...] = field(init=False, repr=False, compare=False, hash=False)
    _derive_short_days: bool = field(init=False, repr=False, compare=False, hash=False)
    _day_hours: dict[date, tuple[datetime, datetime] | None] = field(
        init=False, repr=False, compare=False, hash=False
    )  # _utc_hours by day: every due time of a backlog walks the same few days

    def __post_init__(self) -> None:
        """Validate once, so that a bad calendar fails at start-up, not on the first letter."""
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.timezone!r}") from exc
        if not set(self.workdays) | set(self.weekday_hours) <= set(range(7)):
            raise ValueError("weekdays are numbered 0 (Monday) to 6 (Sunday)")
        hours = {day: self.weekday_hours.get(day, (self.open, self.close)) for day in range(7)}
        for day, (opening, closing) in hours.items():
            if opening.tzinfo is not None or closing.tzinfo is not None:
                raise ValueError("opening hours are wall-clock times: give naive times")
            if opening >= closing:
                raise ValueError(
                    f"{WEEKDAY_NAMES[day]}: open ({opening:%H:%M}) must be before "
                    f"close ({closing:%H:%M})"
                )
        both = set(self.extra_holidays) & set(self.extra_workdays)
        if both:
            listed = ", ".join(sorted(day.isoformat() for day in both))
            raise ValueError(f"both an extra holiday and an extra workday: {listed}")
        if self.short_day_hours < timedelta(0):
            raise ValueError("short_day_hours must not be negative")
        code = self.calendar.strip().upper()
        derive = bool(code) and _library_info(code).country in PRE_HOLIDAY_SHORTENING
        set_ = object.__setattr__
        set_(self, "calendar", code)
        set_(self, "workdays", frozenset(self.workdays))
        set_(self, "weekday_hours", MappingProxyType(dict(self.weekday_hours)))
        set_(self, "extra_holidays", frozenset(self.extra_holidays))
        set_(self, "extra_workdays", frozenset(self.extra_workdays))
        set_(self, "short_days", frozenset(self.short_days))
        set_(self, "_zone", zone)
        set_(self, "_hours", tuple(hours[day] for day in range(7)))
        set_(self, "_derive_short_days", derive)
        set_(self, "_day_hours", {})

    @classmethod
    def from_config(cls, cfg: HoursSettings) -> BusinessCalendar:
        """The calendar of the ``[business_hours]`` section (a ``BusinessHoursConfig``).

        Raises ValueError for what the section's own validation lets through (an
        unknown holiday calendar, a weekday_hours time like 25:00).
        """
        return cls(
            timezone=cfg.timezone,
            open=cfg.open,
            close=cfg.close,
            workdays=frozenset(WEEKDAY_NAMES.index(name) for name in cfg.workdays),
            weekday_hours={
                WEEKDAY_NAMES.index(name): parse_hours(span)
                for name, span in cfg.weekday_hours.items()
            },
            calendar=cfg.calendar,
            extra_holidays=frozenset(cfg.extra_holidays),
            extra_workdays=frozenset(cfg.extra_workdays),
            short_days=frozenset(cfg.short_days),
            short_day_hours=timedelta(hours=cfg.short_day_hours),
        )

    @property
    def zone(self) -> ZoneInfo:
        """The desk's time zone; every datetime returned is in it."""
        return self._zone

    # ----------------------------------------------------------------------- days

    def is_working_day(self, day: date) -> bool:
        """Whether the desk works on ``day`` (production calendar plus config corrections)."""
        _check_date(day)
        if day in self.extra_holidays:
            return False
        if day in self.extra_workdays:
            return True
        if self.calendar:
            year = self._year(day.year)
            if day in year.weekend_workdays:
                return True
            if day in year.days_off:
                return False
        return day.weekday() in self.workdays

    def is_short_day(self, day: date) -> bool:
        """Whether ``day`` is a working day that closes ``short_day_hours`` early.

        Besides ``short_days`` from the config, for a Russian calendar (Labour Code art. 95
        as applied in the official production calendars):

        * a working day whose next day is a public holiday proper (the art. 112 list, as
          the library gives it with ``observed=False`` minus the decree's transfers) is
          shortened; the day before a transferred day off or before an ordinary weekend
          is not (2025-05-07 and 2025-12-30 were full days, 2026-05-08 was short because
          09.05 is a Saturday holiday);
        * a working Saturday/Sunday created by a transfer works to the regime of the
          weekday whose day off it took (the reading the published calendars and the
          labour ministry's explanations follow): 2024-11-02 took 2024-04-30,
          the eve of 1 May, and was short; 2024-04-27 (took 29.04) and 2024-12-28 (took
          30.12, before a transferred day off) were full days; 2025-11-01 (took 03.11,
          the eve of 4 November) was short.
        """
        if not self.is_working_day(day):
            return False
        if day in self.short_days:
            return True
        if not self._derive_short_days:
            return False
        if self._is_public_holiday(day + ONE_DAY):
            return True
        partner = self._transfer_partner(day)
        return partner is not None and self._is_public_holiday(partner + ONE_DAY)

    def opening_hours(self, day: date) -> tuple[datetime, datetime] | None:
        """(opening, closing) of ``day`` as aware datetimes in the desk's zone; None if closed.

        A working Saturday/Sunday from a transfer keeps the hours of the weekday it
        replaces (``weekday_hours`` of that weekday). None is also returned for a short
        day whose shortening swallows the whole day.
        """
        hours = self._utc_hours(day)
        if hours is None:
            return None
        return hours[0].astimezone(self._zone), hours[1].astimezone(self._zone)

    # ----------------------------------------------------------------------- instants

    def is_open(self, at: datetime) -> bool:
        """Whether the desk is open at ``at`` (open at the opening minute, closed at closing)."""
        instant = self._instant(at)
        hours = self._utc_hours(instant.astimezone(self._zone).date())
        return hours is not None and hours[0] <= instant < hours[1]

    def next_opening(self, at: datetime) -> datetime:
        """``at`` itself (in the desk's zone) if open, else the next opening after it."""
        instant = self._instant(at)
        for opening, closing in self._intervals_from(instant.astimezone(self._zone).date()):
            if instant < closing:
                return max(instant, opening).astimezone(self._zone)
        raise AssertionError("unreachable: _intervals_from never ends")  # pragma: no cover

    def add_business_time(self, start: datetime, duration: timedelta) -> datetime:
        """The instant at which ``duration`` of open time has passed since ``start``.

        Counting starts at ``next_opening(start)`` (so a zero duration gives that
        opening). A duration that is used up exactly at a closing returns the closing,
        not the next morning: a deadline "within 8 business hours" of 10:00 is 18:00.
        """
        if duration < timedelta(0):
            raise ValueError("duration must not be negative")
        instant = self._instant(start)
        remaining = duration
        for opening, closing in self._intervals_from(instant.astimezone(self._zone).date()):
            if instant >= closing:
                continue
            begin = max(instant, opening)
            if remaining <= closing - begin:
                return (begin + remaining).astimezone(self._zone)
            remaining -= closing - begin
        raise AssertionError("unreachable: _intervals_from never ends")  # pragma: no cover

    def business_time_between(self, start: datetime, end: datetime) -> timedelta:
        """Open time between two instants; zero if ``end`` is not after ``start``.

        The inverse of :meth:`add_business_time`: for a positive ``d``,
        ``business_time_between(s, add_business_time(s, d)) == d``.
        """
        begin, finish = self._instant(start), self._instant(end)
        total = timedelta(0)
        day, last = begin.astimezone(self._zone).date(), finish.astimezone(self._zone).date()
        while day <= last:
            hours = self._utc_hours(day)
            if hours is not None:
                low, high = max(begin, hours[0]), min(finish, hours[1])
                if low < high:
                    total += high - low
            day += ONE_DAY
        return total

    # ----------------------------------------------------------------------- calendar data

    def calendar_known_for(self, year: int) -> bool:
        """Whether the installed ``holidays`` library knows the official calendar of ``year``.

        The Russian calendar depends on a government decree published each autumn for the
        next year (transfers, and even the carry-over of a holiday that falls on a
        weekend). ``holidays`` keeps each decree as per-year ``special_public_holidays``
        (``special_public_holidays_observed`` for carry-overs only); a year with neither
        is a year whose decree the installed library does not have, and is then computed
        from the fixed holiday dates alone. A calendar without yearly decrees is known
        for the library's supported range; no calendar (``""``) is always known.
        """
        if not self.calendar:
            return True
        info = _library_info(self.calendar)
        if not info.first_year <= year <= info.last_year:
            return False
        return info.decree_years is None or year in info.decree_years

    def known_until(self) -> date:
        """The last day of the last year :meth:`calendar_known_for` (``date.max``: no calendar).

        The daemon warns at start-up when this is before the end of the coming year.
        """
        if not self.calendar:
            return date.max
        info = _library_info(self.calendar)
        if info.decree_years is None:
            return date(info.last_year, 12, 31)
        known = [year for year in info.decree_years if info.first_year <= year <= info.last_year]
        return date(max(known), 12, 31) if known else date(info.first_year - 1, 12, 31)

    # ----------------------------------------------------------------------- internals

    def _year(self, year: int) -> _LibraryYear:
        return _library_year(self.calendar, year)

    def _is_public_holiday(self, day: date) -> bool:
        """A non-working public holiday proper: not a transferred day off, not a carry-over.

        One that ``extra_workdays`` makes a working day does not shorten the day before.
        """
        return (
            bool(self.calendar)
            and day in self._year(day.year).holidays
            and day not in self.extra_workdays
        )

    def _transfer_partner(self, day: date) -> date | None:
        """The weekday whose day off a library working Saturday/Sunday ``day`` took."""
        if not self.calendar:
            return None
        if day not in self._year(day.year).weekend_workdays:
            return None
        for year in (day.year - 1, day.year, day.year + 1):
            for day_off, moved_from in self._year(year).substitutions:
                if moved_from == day:
                    return day_off
        return None

    def _utc_hours(self, day: date) -> tuple[datetime, datetime] | None:
        """Opening hours of ``day`` in UTC, where comparison and subtraction are real time.

        (Between two datetimes of the same ZoneInfo Python compares and subtracts wall
        clocks, which is wrong across a DST switch.)
        """
        if day not in self._day_hours:
            self._day_hours[day] = self._compute_utc_hours(day)
        return self._day_hours[day]

    def _compute_utc_hours(self, day: date) -> tuple[datetime, datetime] | None:
        if not self.is_working_day(day):
            return None
        partner = self._transfer_partner(day)
        opening, closing = self._hours[(partner or day).weekday()]
        open_wall = datetime.combine(day, opening)
        close_wall = datetime.combine(day, closing)
        if self.is_short_day(day):
            close_wall -= self.short_day_hours
        opening_utc, closing_utc = self._wall_to_utc(open_wall), self._wall_to_utc(close_wall)
        if closing_utc <= opening_utc:  # shortened to nothing, or squeezed by a DST gap
            return None
        return opening_utc, closing_utc

    def _intervals_from(self, day: date) -> Iterator[tuple[datetime, datetime]]:
        """Opening intervals (UTC) of ``day`` and the following days, in order."""
        closed = 0
        while True:
            hours = self._utc_hours(day)
            if hours is None:
                closed += 1
                if closed > MAX_CLOSED_DAYS:
                    raise ValueError(
                        f"the desk is not open on any of the {closed} days up to {day}"
                    )
            else:
                closed = 0
                yield hours
            day += ONE_DAY

    def _instant(self, at: datetime) -> datetime:
        """``at`` as a UTC datetime; a naive datetime is refused.

        A naive datetime could be UTC (``utcnow()``), the host's zone or the desk's
        zone; guessing would shift SLA deadlines by hours without any error.
        """
        if not isinstance(at, datetime):
            raise TypeError(f"expected a datetime, got {type(at).__name__}")
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(
                f"naive datetime {at.isoformat()}: its zone is unknown; pass an aware "
                "datetime (e.g. datetime.now(UTC))"
            )
        return at.astimezone(UTC)

    def _wall_to_utc(self, wall: datetime) -> datetime:
        """A wall-clock time of the desk's zone as a UTC instant.

        A time skipped by a DST switch moves forward by the gap; a repeated one means
        its first occurrence (``fold=0``).
        """
        return wall.replace(tzinfo=self._zone).astimezone(UTC)


def _check_date(day: date) -> None:
    if isinstance(day, datetime):
        raise TypeError(
            "expected a date, got a datetime: which day it is depends on the zone; "
            "pass at.astimezone(calendar.zone).date()"
        )


@dataclass(frozen=True)
class Calendars:
    """The calendar of each mailbox (by its label), and the one of requests that name no
    mailbox (from before there were several): with several mailboxes, each may keep its
    own hours, and a request's SLA clock runs in the hours of the mailbox it came in through.
    """

    default: BusinessCalendar
    by_mailbox: Mapping[str, BusinessCalendar] = field(default_factory=dict)

    def of(self, mailbox: str | None) -> BusinessCalendar:
        return self.by_mailbox.get(mailbox, self.default) if mailbox else self.default


def calendar_of(calendar: BusinessCalendar | Calendars, mailbox: str | None) -> BusinessCalendar:
    """The calendar a request of ``mailbox`` runs on, given one calendar or several."""
    return calendar.of(mailbox) if isinstance(calendar, Calendars) else calendar
