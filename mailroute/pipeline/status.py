"""How a request's status changes, and what each change does to its SLA clocks.

Statuses: ``new`` → ``in_progress`` → ``resolved`` → ``closed``, with
``awaiting_customer`` (clocks paused) in between whenever the desk waits for the
customer. Every change is recorded as a ``status`` event with old and new.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from mailroute.config import SlaConfig
from mailroute.core import sla
from mailroute.core.business_calendar import BusinessCalendar
from mailroute.store import repository as repo
from mailroute.store.models import Request

STATUSES = ("new", "awaiting_customer", "in_progress", "resolved", "closed")
WORKED_ON = ("in_progress", "resolved", "closed")


class InvalidStatus(ValueError):
    """A status name mailroute does not know."""


def set_status(
    session: Session,
    request: Request,
    status: str,
    now: datetime,
    calendar: BusinessCalendar,
    **detail: object,
) -> bool:
    """Move ``request`` to ``status``; returns False when it already was there."""
    if status not in STATUSES:
        raise InvalidStatus(f"unknown status {status!r}; one of: {', '.join(STATUSES)}")
    old = request.status
    if old == status:
        return False
    if status == "awaiting_customer":
        request.sla_paused_at = request.sla_paused_at or now
    elif old == "awaiting_customer":
        _resume_clocks(request, now, calendar)
    if status in WORKED_ON and request.first_response_at is None:
        request.first_response_at = now
    if status == "resolved":
        request.resolved_at = now
    if status == "closed":
        request.closed_at = now
        request.resolved_at = request.resolved_at or now
    request.status = status
    request.updated_at = now
    repo.add_event(session, request, "status", now, old=old, new=status, **detail)
    return True


def start_clocks(
    request: Request, start: datetime, calendar: BusinessCalendar, config: SlaConfig
) -> None:
    """Set the due times of a request that has just become complete."""
    targets = sla.targets_for(config, request.priority, request.tier)
    due = sla.due_times(calendar, start, targets)
    request.first_response_due = due.first_response
    request.resolution_due = due.resolution
    request.sla_paused_at = None


def reopen(
    session: Session,
    request: Request,
    now: datetime,
    calendar: BusinessCalendar,
    config: SlaConfig,
) -> None:
    """A customer says a resolved or closed request is not done: it needs work again."""
    set_status(session, request, "new", now, calendar, reason="customer replied")
    request.resolved_at = None
    request.closed_at = None
    targets = sla.targets_for(config, request.priority, request.tier)
    request.resolution_due = sla.due_times(calendar, now, targets).resolution


def is_breached(request: Request, now: datetime) -> bool:
    if request.status in ("awaiting_customer", "closed"):
        return False
    due = sla.DueTimes(request.first_response_due, request.resolution_due)
    return bool(sla.breaches(now, due, request.first_response_at, request.resolved_at))


def _resume_clocks(request: Request, now: datetime, calendar: BusinessCalendar) -> None:
    paused = request.sla_paused_at
    request.sla_paused_at = None
    if paused is None:
        return
    request.first_response_due = sla.resume(calendar, request.first_response_due, paused, now)
    request.resolution_due = sla.resume(calendar, request.resolution_due, paused, now)
