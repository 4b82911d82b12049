"""The business calendar against the official Russian production calendars, and its arithmetic.

Pure unit tests: every instant is given, nothing sleeps or reads the clock.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailroute.config import BusinessHoursConfig
from mailroute.core.business_calendar import BusinessCalendar, parse_hours

MSK = ZoneInfo("Europe/Moscow")
BERLIN = ZoneInfo("Europe/Berlin")
HOUR = timedelta(hours=1)

RU = BusinessCalendar()


def msk(text: str) -> datetime:
    """'2025-12-30 18:00' as Moscow time."""
    return datetime.fromisoformat(text).replace(tzinfo=MSK)


def ber(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN)


def days_of(year: int) -> list[date]:
    first = date(year, 1, 1)
    return [first + timedelta(n) for n in range((date(year + 1, 1, 1) - first).days)]


def dates(year: int, month_days: str) -> frozenset[date]:
    """'01-01 02-23' -> the dates of ``year``."""
    return frozenset(date.fromisoformat(f"{year}-{md}") for md in month_days.split())


def calendar(**settings_: Any) -> BusinessCalendar:
    """A calendar from a [business_hours] section, through the config's own validation."""
    return BusinessCalendar.from_config(BusinessHoursConfig.model_validate(settings_))


# --------------------------------------------------------------------------- official data


class Official(NamedTuple):
    """One year of the official production calendar (five-day week)."""

    weekdays_off: frozenset[date]  # Monday-Friday days that are not worked
    working_weekends: frozenset[date]  # Saturdays/Sundays that are worked
    short_days: frozenset[date]  # pre-holiday days, one hour shorter (art. 95)
    working_days: int
    hours_40: int  # the published norm of hours for a 40-hour week


OFFICIAL = {
    # Government decree No. 1306 of 10.08.2023: Sat 06.01 -> Fri 10.05, Sun 07.01 -> Tue 31.12,
    # Sat 27.04 -> Mon 29.04, Sat 02.11 -> Tue 30.04, Sat 28.12 -> Mon 30.12.
    # Shortened days: 27.04 is not one (it takes the place of Monday 29.04, whose next day
    # 30.04 was an ordinary working day before the transfer), and neither is 28.12 (it takes
    # Monday 30.12, followed by 31.12, a transferred day off, not a holiday): the published
    # calendar has 28.12 as a full day, and its norm of 1979 hours = 248 * 8 - 5 counts five
    # short days. 02.11 is one: it takes Tuesday 30.04, the eve of 1 May.
    2024: Official(
        weekdays_off=dates(
            2024,
            "01-01 01-02 01-03 01-04 01-05 01-08 02-23 03-08 04-29 04-30 "
            "05-01 05-09 05-10 06-12 11-04 12-30 12-31",
        ),
        working_weekends=dates(2024, "04-27 11-02 12-28"),
        short_days=dates(2024, "02-22 03-07 05-08 06-11 11-02"),
        working_days=248,
        hours_40=1979,
    ),
    # Government decree No. 1335 of 04.10.2024: Sat 04.01 -> Fri 02.05, Sun 05.01 -> Wed 31.12,
    # Sun 23.02 -> Thu 08.05, Sat 08.03 -> Fri 13.06, Sat 01.11 -> Mon 03.11.
    # Shortened days: 07.05 and 30.12 are not (their next days 08.05 and 31.12 are
    # transferred days off, not holidays); 01.11 is (it takes Monday 03.11, the eve of
    # 4 November). Norm 1972 = 247 * 8 - 4.
    2025: Official(
        weekdays_off=dates(
            2025,
            "01-01 01-02 01-03 01-06 01-07 01-08 05-01 05-02 05-08 05-09 "
            "06-12 06-13 11-03 11-04 12-31",
        ),
        working_weekends=dates(2025, "11-01"),
        short_days=dates(2025, "03-07 04-30 06-11 11-01"),
        working_days=247,
        hours_40=1972,
    ),
    # Decree of September 2025 on 2026: Sat 03.01 -> Fri 09.01, Sun 04.01 -> Thu 31.12; and
    # by art. 112 itself Sun 08.03 -> Mon 09.03, Sat 09.05 -> Mon 11.05. No working weekend.
    # Shortened days: 08.05 is one (09.05 is a holiday although a Saturday); 20.02 and 06.03
    # are not (a plain weekend lies between them and the holiday). Norm 1972 = 247 * 8 - 4.
    2026: Official(
        weekdays_off=dates(
            2026,
            "01-01 01-02 01-05 01-06 01-07 01-08 01-09 02-23 03-09 05-01 05-11 06-12 11-04 12-31",
        ),
        working_weekends=frozenset(),
        short_days=dates(2026, "04-30 05-08 06-11 11-03"),
        working_days=247,
        hours_40=1972,
    ),
}

YEARS = sorted(OFFICIAL)


def official_working(day: date) -> bool:
    data = OFFICIAL[day.year]
    if day.weekday() < 5:
        return day not in data.weekdays_off
    return day in data.working_weekends


@pytest.mark.parametrize("year", YEARS)
def test_official_data_is_self_consistent(year: int) -> None:
    data = OFFICIAL[year]
    assert all(day.weekday() < 5 for day in data.weekdays_off)
    assert all(day.weekday() >= 5 for day in data.working_weekends)
    assert sum(official_working(day) for day in days_of(year)) == data.working_days
    assert all(official_working(day) for day in data.short_days)


@pytest.mark.parametrize("year", YEARS)
def test_every_day_matches_the_official_calendar(year: int) -> None:
    wrong = [day for day in days_of(year) if RU.is_working_day(day) != official_working(day)]
    assert wrong == []
    assert sum(RU.is_working_day(day) for day in days_of(year)) == OFFICIAL[year].working_days


@pytest.mark.parametrize("year", YEARS)
def test_the_holidays_library_agrees_with_the_official_calendar(year: int) -> None:
    library = holidays.country_holidays("RU", years=year)
    wrong = [day for day in days_of(year) if library.is_working_day(day) != official_working(day)]
    assert wrong == []


@pytest.mark.parametrize("year", YEARS)
def test_shortened_days_match_the_official_calendar(year: int) -> None:
    assert {day for day in days_of(year) if RU.is_short_day(day)} == OFFICIAL[year].short_days


@pytest.mark.parametrize("year", YEARS)
def test_open_hours_per_year_are_the_published_norm(year: int) -> None:
    # The desk's day is 8 hours, like the 40-hour week of the published norm.
    start = datetime(year, 1, 1, tzinfo=MSK)
    end = datetime(year + 1, 1, 1, tzinfo=MSK)
    assert RU.business_time_between(start, end) == OFFICIAL[year].hours_40 * HOUR


def test_short_and_full_working_saturdays() -> None:
    assert RU.opening_hours(date(2025, 11, 1)) == (msk("2025-11-01 10:00"), msk("2025-11-01 17:00"))
    assert RU.opening_hours(date(2024, 11, 2)) == (msk("2024-11-02 10:00"), msk("2024-11-02 17:00"))
    assert RU.opening_hours(date(2024, 12, 28)) == (
        msk("2024-12-28 10:00"),
        msk("2024-12-28 18:00"),
    )
    assert RU.opening_hours(date(2024, 4, 27)) == (msk("2024-04-27 10:00"), msk("2024-04-27 18:00"))
    assert RU.opening_hours(date(2025, 11, 2)) is None  # Sunday
    assert RU.opening_hours(date(2026, 1, 9)) is None  # transferred day off


def test_day_questions_refuse_datetimes() -> None:
    # Which day an instant falls on depends on the zone: the caller decides.
    with pytest.raises(TypeError):
        RU.is_working_day(datetime(2025, 1, 9, tzinfo=MSK))


# --------------------------------------------------------------------------- instants


def test_arrival_exactly_at_opening_is_open() -> None:
    at = msk("2025-10-20 10:00")
    assert RU.is_open(at)
    assert RU.next_opening(at) == at
    assert RU.is_open(msk("2025-10-20 17:59:59.999999"))


def test_arrival_exactly_at_closing_is_closed() -> None:
    assert not RU.is_open(msk("2025-10-20 18:00"))
    assert RU.next_opening(msk("2025-10-20 18:00")) == msk("2025-10-21 10:00")


def test_arrival_at_night_waits_for_the_morning() -> None:
    assert not RU.is_open(msk("2025-10-21 03:00"))
    assert RU.next_opening(msk("2025-10-21 03:00")) == msk("2025-10-21 10:00")
    assert RU.next_opening(msk("2025-10-20 23:59")) == msk("2025-10-21 10:00")


def test_friday_evening_waits_for_monday() -> None:
    assert RU.next_opening(msk("2025-10-17 18:30")) == msk("2025-10-20 10:00")
    assert RU.next_opening(msk("2025-10-18 12:00")) == msk("2025-10-20 10:00")


def test_before_the_new_year_holidays() -> None:
    assert RU.is_open(msk("2025-12-30 17:59"))  # 30.12.2025 is a full day
    assert RU.next_opening(msk("2025-12-30 18:00")) == msk("2026-01-12 10:00")
    assert RU.next_opening(msk("2025-12-30 21:15")) == msk("2026-01-12 10:00")


def test_working_saturday() -> None:
    assert RU.next_opening(msk("2025-11-01 08:00")) == msk("2025-11-01 10:00")
    assert RU.is_open(msk("2025-11-01 16:59"))
    assert not RU.is_open(msk("2025-11-01 17:00"))  # shortened
    assert RU.next_opening(msk("2025-11-01 17:00")) == msk("2025-11-05 10:00")
    assert RU.next_opening(msk("2025-10-31 19:00")) == msk("2025-11-01 10:00")


def test_instants_in_other_zones_and_results_in_the_desks() -> None:
    at = datetime(2025, 10, 20, 7, 0, tzinfo=UTC)  # 10:00 in Moscow
    assert RU.is_open(at)
    opened = RU.next_opening(at)
    assert opened == at
    assert opened.tzinfo == MSK
    assert opened.utcoffset() == 3 * HOUR
    assert RU.next_opening(datetime(2025, 10, 20, 15, 0, tzinfo=UTC)).tzinfo == MSK


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2025, 10, 20, 12, 0)
    for call in (
        lambda: RU.is_open(naive),
        lambda: RU.next_opening(naive),
        lambda: RU.add_business_time(naive, HOUR),
        lambda: RU.business_time_between(naive, msk("2025-10-21 12:00")),
    ):
        with pytest.raises(ValueError, match="naive"):
            call()


# --------------------------------------------------------------------------- business time


def test_a_full_day_ends_at_closing_not_next_morning() -> None:
    assert RU.add_business_time(msk("2025-10-20 10:00"), 8 * HOUR) == msk("2025-10-20 18:00")
    assert RU.add_business_time(msk("2025-10-20 17:00"), HOUR) == msk("2025-10-20 18:00")


def test_add_business_time_rolls_over_to_the_next_day() -> None:
    assert RU.add_business_time(msk("2025-10-20 17:00"), 2 * HOUR) == msk("2025-10-21 11:00")
    assert RU.add_business_time(msk("2025-10-17 17:30"), HOUR) == msk("2025-10-20 10:30")


def test_start_outside_hours_counts_from_the_next_opening() -> None:
    assert RU.add_business_time(msk("2025-10-21 03:00"), HOUR) == msk("2025-10-21 11:00")
    assert RU.add_business_time(msk("2025-10-21 03:00"), timedelta(0)) == msk("2025-10-21 10:00")
    assert RU.add_business_time(msk("2025-10-21 12:00"), timedelta(0)) == msk("2025-10-21 12:00")


def test_add_business_time_across_holidays_and_shortened_days() -> None:
    # 30.04.2025 closes at 17:00; 1-4 May are off.
    assert RU.add_business_time(msk("2025-04-30 16:00"), 2 * HOUR) == msk("2025-05-05 11:00")
    # 30.12.2025 is a full day, then nothing until 12 January.
    assert RU.add_business_time(msk("2025-12-30 17:00"), 2 * HOUR) == msk("2026-01-12 11:00")
    # Through the working Saturday 01.11.2025 (7 hours) and the days off 2-4 November.
    assert RU.add_business_time(msk("2025-10-31 17:00"), 9 * HOUR) == msk("2025-11-05 11:00")
    # A week of 40 hours.
    assert RU.add_business_time(msk("2025-10-20 10:00"), 40 * HOUR) == msk("2025-10-24 18:00")


def test_negative_duration_is_refused() -> None:
    with pytest.raises(ValueError):
        RU.add_business_time(msk("2025-10-20 10:00"), -HOUR)


def test_business_time_between() -> None:
    assert RU.business_time_between(msk("2025-10-20 00:00"), msk("2025-10-27 00:00")) == 40 * HOUR
    assert RU.business_time_between(msk("2025-10-20 17:00"), msk("2025-10-21 11:00")) == 2 * HOUR
    assert RU.business_time_between(msk("2025-12-30 17:00"), msk("2026-01-12 11:00")) == 2 * HOUR
    assert RU.business_time_between(msk("2025-10-21 11:00"), msk("2025-10-20 17:00")) == timedelta()
    assert RU.business_time_between(msk("2025-10-20 12:00"), msk("2025-10-20 12:00")) == timedelta()
    start, end = datetime(2025, 10, 20, 7, tzinfo=UTC), datetime(2025, 10, 20, 12, tzinfo=BERLIN)
    assert RU.business_time_between(start, end) == 3 * HOUR  # 10:00 to 13:00 Moscow


instants = st.datetimes(
    min_value=datetime(2023, 12, 1), max_value=datetime(2027, 1, 31), timezones=st.just(UTC)
)
durations = st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(hours=300))


@settings(max_examples=200, deadline=None)
@given(start=instants, duration=durations)
def test_business_time_between_inverts_add_business_time(
    start: datetime, duration: timedelta
) -> None:
    end = RU.add_business_time(start, duration)
    assert end > start
    assert RU.business_time_between(start, end) == duration
    opening, closing = RU.opening_hours(end.date()) or pytest.fail(f"{end} on a closed day")
    assert opening < end <= closing


@settings(max_examples=200, deadline=None)
@given(start=instants, end=instants)
def test_add_business_time_reaches_the_last_open_moment(start: datetime, end: datetime) -> None:
    elapsed = RU.business_time_between(start, end)
    if elapsed > timedelta(0):
        reached = RU.add_business_time(start, elapsed)
        assert reached <= end
        assert RU.business_time_between(reached, end) == timedelta(0)
        if RU.is_open(end - timedelta(microseconds=1)):  # end in (opening, closing]
            assert reached == end


@settings(max_examples=100, deadline=None)
@given(first=instants, second=instants, third=instants)
def test_business_time_is_additive(first: datetime, second: datetime, third: datetime) -> None:
    a, b, c = sorted((first, second, third))
    between = RU.business_time_between
    assert between(a, c) == between(a, b) + between(b, c)


@settings(max_examples=100, deadline=None)
@given(at=instants)
def test_next_opening_is_open_and_nothing_opens_before_it(at: datetime) -> None:
    opened = RU.next_opening(at)
    assert opened >= at
    assert RU.is_open(opened)
    assert RU.business_time_between(at, opened) == timedelta(0)


# --------------------------------------------------------------------------- DST zones


BERLIN_DESK = BusinessCalendar(timezone="Europe/Berlin", calendar="")


def test_opening_hours_are_wall_clock_across_dst() -> None:
    # Summer time starts on Sunday 30.03.2025 and ends on Sunday 26.10.2025.
    friday, monday = (
        BERLIN_DESK.opening_hours(date(2025, 3, 28)),
        BERLIN_DESK.opening_hours(date(2025, 3, 31)),
    )
    assert friday is not None and monday is not None
    assert friday[0] == ber("2025-03-28 10:00") == datetime(2025, 3, 28, 9, tzinfo=UTC)
    assert monday[0] == ber("2025-03-31 10:00") == datetime(2025, 3, 31, 8, tzinfo=UTC)
    assert BERLIN_DESK.next_opening(ber("2025-10-24 18:00")) == datetime(
        2025, 10, 27, 9, tzinfo=UTC
    )


def test_business_time_across_dst_weekends() -> None:
    friday, monday = ber("2025-03-28 17:00"), ber("2025-03-31 11:00")
    assert BERLIN_DESK.add_business_time(friday, 2 * HOUR) == monday
    assert BERLIN_DESK.business_time_between(friday, monday) == 2 * HOUR
    friday, monday = ber("2025-10-24 17:00"), ber("2025-10-27 11:00")
    assert BERLIN_DESK.add_business_time(friday, 2 * HOUR) == monday
    assert BERLIN_DESK.business_time_between(friday, monday) == 2 * HOUR


def test_hours_spanning_the_switch_count_real_time() -> None:
    night = BusinessCalendar(
        timezone="Europe/Berlin",
        calendar="",
        workdays=frozenset(range(7)),
        open=time(1),
        close=time(5),
    )
    spring, autumn = night.opening_hours(date(2025, 3, 30)), night.opening_hours(date(2025, 10, 26))
    assert spring is not None and autumn is not None
    assert spring[1].astimezone(UTC) - spring[0].astimezone(UTC) == 3 * HOUR
    assert autumn[1].astimezone(UTC) - autumn[0].astimezone(UTC) == 5 * HOUR
    assert night.add_business_time(ber("2025-03-30 01:00"), 3 * HOUR) == ber("2025-03-30 05:00")
    assert night.business_time_between(ber("2025-10-26 00:00"), ber("2025-10-27 00:00")) == 5 * HOUR
    # 02:30 does not exist on 30 March: an opening then moves forward by the gap.
    gap = BusinessCalendar(
        timezone="Europe/Berlin", calendar="", workdays=frozenset(range(7)), open=time(2, 30)
    )
    assert gap.next_opening(ber("2025-03-30 00:00")) == datetime(2025, 3, 30, 1, 30, tzinfo=UTC)


def test_german_calendar_has_holidays_but_no_pre_holiday_short_days() -> None:
    germany = BusinessCalendar(timezone="Europe/Berlin", calendar="DE")
    assert not germany.is_working_day(date(2025, 12, 25))
    assert not germany.is_working_day(date(2025, 4, 21))  # Easter Monday
    assert germany.is_working_day(date(2025, 12, 24))  # Christmas Eve, a Wednesday
    assert not germany.is_short_day(date(2025, 12, 24))
    assert not germany.is_short_day(date(2025, 4, 17))  # the day before Good Friday


# --------------------------------------------------------------------------- configuration


def test_config_defaults_make_the_default_calendar() -> None:
    assert calendar() == BusinessCalendar()
    assert calendar().zone == MSK


def test_extra_holidays_and_workdays_win_over_the_library() -> None:
    cal = calendar(
        extra_holidays=["2025-10-20", "2025-11-01"],
        extra_workdays=["2025-05-02", "2025-10-18", "2025-10-19"],
    )
    assert not cal.is_working_day(date(2025, 10, 20))
    assert not cal.is_working_day(date(2025, 11, 1))  # was a working Saturday
    assert cal.next_opening(msk("2025-10-31 18:00")) == msk("2025-11-05 10:00")
    assert cal.opening_hours(date(2025, 5, 2)) == (msk("2025-05-02 10:00"), msk("2025-05-02 18:00"))
    assert cal.is_working_day(date(2025, 10, 18))  # plain Saturday
    assert cal.next_opening(msk("2025-10-17 18:00")) == msk("2025-10-18 10:00")
    # 01.05 is a holiday, so 30.04 stays short; 02.05 is worked but is no holiday.
    assert cal.is_short_day(date(2025, 4, 30))
    assert not cal.is_short_day(date(2025, 5, 2))


def test_an_extra_workday_on_a_holiday_unshortens_its_eve() -> None:
    cal = calendar(extra_workdays=["2025-06-12"])
    assert cal.is_working_day(date(2025, 6, 12))
    assert not cal.is_short_day(date(2025, 6, 11))


def test_extra_short_days_and_short_day_hours() -> None:
    cal = calendar(short_days=["2025-10-20", "2025-10-25"], short_day_hours=2.5)
    assert cal.opening_hours(date(2025, 10, 20)) == (
        msk("2025-10-20 10:00"),
        msk("2025-10-20 15:30"),
    )
    assert not cal.is_short_day(date(2025, 10, 25))  # a Saturday off stays off
    assert cal.opening_hours(date(2025, 10, 25)) is None
    # Derived short days close short_day_hours early too.
    assert cal.opening_hours(date(2025, 3, 7)) == (msk("2025-03-07 10:00"), msk("2025-03-07 15:30"))
    # A shortening that swallows the day leaves it closed.
    assert (
        calendar(short_days=["2025-10-20"], short_day_hours=8).opening_hours(date(2025, 10, 20))
        is None
    )


def test_weekday_hours() -> None:
    cal = calendar(weekday_hours={"fri": "10:00-17:00", "mon": "09:00-18:00"})
    assert cal.opening_hours(date(2025, 10, 17)) == (
        msk("2025-10-17 10:00"),
        msk("2025-10-17 17:00"),
    )
    assert cal.opening_hours(date(2025, 3, 7)) == (msk("2025-03-07 10:00"), msk("2025-03-07 16:00"))
    assert cal.next_opening(msk("2025-10-17 17:00")) == msk("2025-10-20 09:00")
    assert cal.add_business_time(msk("2025-10-17 16:00"), 2 * HOUR) == msk("2025-10-20 10:00")
    # The working Saturday 01.11.2025 replaces Monday 03.11 and keeps Monday's hours, short.
    assert cal.opening_hours(date(2025, 11, 1)) == (
        msk("2025-11-01 09:00"),
        msk("2025-11-01 17:00"),
    )


def test_no_public_holiday_calendar() -> None:
    cal = calendar(calendar="")
    assert cal.is_working_day(date(2025, 1, 1))
    assert not cal.is_working_day(date(2025, 11, 1))
    assert not any(cal.is_short_day(day) for day in days_of(2025))
    assert cal.next_opening(msk("2025-12-30 18:00")) == msk("2025-12-31 10:00")
    assert cal.calendar_known_for(2100)
    assert cal.known_until() == date.max


def test_six_day_week() -> None:
    cal = calendar(workdays=["mon", "tue", "wed", "thu", "fri", "sat"])
    assert cal.is_working_day(date(2025, 10, 18))
    assert not cal.is_working_day(date(2025, 3, 8))  # a Saturday holiday
    assert not cal.is_working_day(date(2025, 10, 19))


@pytest.mark.parametrize(
    "settings_",
    [
        {"calendar": "XX"},
        {"weekday_hours": {"fri": "25:00-26:00"}},
        {"weekday_hours": {"fri": "17:00-10:00"}},
        {"extra_holidays": ["2025-10-20"], "extra_workdays": ["2025-10-20"]},
    ],
)
def test_bad_settings_are_refused(settings_: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        calendar(**settings_)


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ValueError):
        BusinessCalendar(timezone="Mars/Olympus")
    with pytest.raises(ValueError):
        BusinessCalendar(open=time(18), close=time(10))
    with pytest.raises(ValueError):
        BusinessCalendar(workdays=frozenset({7}))


def test_calendar_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        RU.calendar = ""  # type: ignore[misc]
    assert hash(RU) == hash(BusinessCalendar())


def test_parse_hours() -> None:
    assert parse_hours("9:30 - 17:00") == (time(9, 30), time(17))
    for bad in ("9-17", "10:00", "10:00-24:00", "18:00-10:00"):
        with pytest.raises(ValueError):
            parse_hours(bad)


def test_a_desk_that_never_opens_fails_instead_of_looping() -> None:
    never = BusinessCalendar(calendar="", workdays=frozenset())
    with pytest.raises(ValueError, match="not open"):
        never.next_opening(msk("2025-10-20 12:00"))


# --------------------------------------------------------------------------- calendar coverage


def test_calendar_known_for_the_years_the_library_has_decrees_for() -> None:
    assert all(RU.calendar_known_for(year) for year in (*YEARS, 2027))
    last = RU.known_until()
    assert last.month == 12 and last.day == 31
    assert RU.calendar_known_for(last.year)
    assert not RU.calendar_known_for(last.year + 1)
    assert not RU.calendar_known_for(2090)  # inside the library's range, no decree
    assert not RU.calendar_known_for(1900)  # before the library's range


def test_unknown_years_lack_even_the_automatic_carry_over() -> None:
    # Why an unknown year deserves a warning: holidays 0.109 lists even the art. 112
    # carry-overs (a holiday on a weekend moves to the next working day) year by year, so
    # in a year without a decree a Saturday holiday just vanishes (04.11.2090 is a
    # Saturday; Monday 06.11 would be off). If this fails, the library has learnt the
    # rule: update the docstring of calendar_known_for.
    assert not RU.calendar_known_for(2090)
    assert date(2090, 11, 4).weekday() == 5
    assert RU.is_working_day(date(2090, 11, 6))


def test_non_decree_calendars_are_known_for_the_library_range() -> None:
    germany = BusinessCalendar(timezone="Europe/Berlin", calendar="DE")
    assert germany.calendar_known_for(2090)
    assert germany.known_until().year >= 2090
