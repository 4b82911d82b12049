"""SLA arithmetic in business time (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from mailroute.config import SlaConfig
from mailroute.core.business_calendar import BusinessCalendar
from mailroute.core.sla import DueTimes, breaches, due_times, resume, targets_for

MSK = ZoneInfo("Europe/Moscow")
CAL = BusinessCalendar()


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=MSK)


def test_default_targets() -> None:
    config = SlaConfig()
    assert targets_for(config, "critical").first_response == timedelta(hours=1)
    assert targets_for(config, "normal").resolution == timedelta(hours=24)
    assert targets_for(config, "low").resolution is None


def test_tier_overrides_only_what_it_names() -> None:
    config = SlaConfig.model_validate(
        {"tiers": {"gold": {"critical": {"first_response": 0.5, "resolution": 4}}}})
    assert targets_for(config, "critical", "gold").first_response == timedelta(minutes=30)
    assert targets_for(config, "normal", "gold") == targets_for(config, "normal")
    assert targets_for(config, "critical", "silver") == targets_for(config, "critical")


def test_saturday_night_critical_is_due_monday() -> None:
    due = due_times(CAL, at(2026, 11, 21, 23, 40), targets_for(SlaConfig(), "critical"))
    assert due.first_response == at(2026, 11, 23, 11, 0)
    assert due.resolution == at(2026, 11, 23, 18, 0)


def test_normal_resolution_spans_three_working_days_over_new_year() -> None:
    due = due_times(CAL, at(2025, 12, 30, 17, 0), targets_for(SlaConfig(), "normal"))
    assert due.first_response == at(2026, 1, 12, 13, 0)  # 1 h on 30.12, 3 h after the holidays
    # 24 h = 1 h on 30.12 (31.12 is off) + 8 + 8 + 7 h from 12.01
    assert due.resolution == at(2026, 1, 14, 17, 0)


def test_pause_moves_deadline_by_business_time_left() -> None:
    due = at(2026, 11, 23, 14, 0)  # Monday
    paused, resumed = at(2026, 11, 23, 12, 0), at(2026, 11, 24, 17, 0)  # 2 h were left
    assert resume(CAL, due, paused, resumed) == at(2026, 11, 25, 11, 0)
    assert resume(CAL, None, paused, resumed) is None


def test_breaches() -> None:
    due = DueTimes(at(2026, 11, 23, 11, 0), at(2026, 11, 23, 18, 0))
    assert breaches(at(2026, 11, 23, 10, 59), due, None, None) == []
    assert breaches(at(2026, 11, 23, 12, 0), due, None, None) == ["first_response"]
    assert breaches(at(2026, 11, 23, 19, 0), due, at(2026, 11, 23, 10, 30), None) == [
        "resolution"]
    assert breaches(at(2026, 11, 24, 9, 0), due, at(2026, 11, 23, 10, 30),
                    at(2026, 11, 23, 17, 0)) == []
