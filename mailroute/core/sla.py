"""Service levels in business time: targets, due times, pauses, breaches. Pure.

The clocks start when a request is complete (nothing missing) and stop while
it waits for the customer (``awaiting_customer``); a pause moves the due
times by the business time it lasted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mailroute.core.business_calendar import BusinessCalendar

if TYPE_CHECKING:
    from mailroute.config import SlaConfig, SlaTarget


@dataclass(frozen=True)
class Targets:
    """How much business time a request may take to be answered and resolved."""

    first_response: timedelta | None
    resolution: timedelta | None


@dataclass(frozen=True)
class DueTimes:
    first_response: datetime | None
    resolution: datetime | None


def targets_for(config: SlaConfig, priority: str, tier: str | None = None) -> Targets:
    """The tier's targets for this priority when the tier defines them, else the defaults."""
    target: SlaTarget = getattr(config, priority, config.normal)
    if tier and priority in config.tiers.get(tier, {}):
        target = config.tiers[tier][priority]
    return Targets(_hours(target.first_response), _hours(target.resolution))


def due_times(calendar: BusinessCalendar, start: datetime, targets: Targets) -> DueTimes:
    """Deadlines counted in open hours from ``start``."""
    return DueTimes(
        _add(calendar, start, targets.first_response), _add(calendar, start, targets.resolution)
    )


def resume(
    calendar: BusinessCalendar, due: datetime | None, paused_at: datetime, resumed_at: datetime
) -> datetime | None:
    """A deadline after a pause: the business time left at the pause, counted from now."""
    if due is None:
        return None
    left = calendar.business_time_between(paused_at, due)
    return calendar.add_business_time(resumed_at, left)


def breaches(
    now: datetime,
    due: DueTimes,
    first_response_at: datetime | None,
    resolved_at: datetime | None,
) -> list[str]:
    """Which targets are missed at ``now``: ``first_response`` and/or ``resolution``."""
    missed = []
    if due.first_response and first_response_at is None and now > due.first_response:
        missed.append("first_response")
    if due.resolution and resolved_at is None and now > due.resolution:
        missed.append("resolution")
    return missed


def _hours(value: float | None) -> timedelta | None:
    return None if value is None else timedelta(hours=value)


def _add(calendar: BusinessCalendar, start: datetime, span: timedelta | None) -> datetime | None:
    return None if span is None else calendar.add_business_time(start, span)
