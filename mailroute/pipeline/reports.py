"""Reports from the database: the facts in three queries, the report mailed via the outbox.

The figures themselves are computed by :mod:`mailroute.core.report`, which is pure; this
module only reads rows into :class:`~mailroute.core.report.RequestFacts`, picks periods in
the desk's time zone and queues the report mail as outbox rows, like an escalation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, RowMapping, exists, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailroute.config import SlaConfig
from mailroute.core import sla
from mailroute.core.business_calendar import BusinessCalendar
from mailroute.core.compose import Draft, Identity
from mailroute.core.report import (
    OPEN_STATUSES,
    PRIORITIES,
    Breach,
    Report,
    RequestFacts,
    StatusChange,
    clock_start_from,
    compose_report,
    initial_status,
    make_report,
)
from mailroute.store import Store
from mailroute.store import repository as repo
from mailroute.store.models import Escalation, Letter, OutboxItem, Request, RequestEvent

Schedule = Literal["daily", "weekly", "monthly"]
SCHEDULES: tuple[Schedule, ...] = ("daily", "weekly", "monthly")

# When a request's first letter arrived: the report counts a request as created then,
# so a mailbox adopted with two years of history is not "created today".
def _arrival() -> ColumnElement[datetime]:
    return func.coalesce(
        select(func.min(Letter.received_at)).where(Letter.request_id == Request.id)
        .correlate(Request).scalar_subquery(),
        Request.created_at,
    )


FACT_COLUMNS = (
    Request.id,
    Request.number,
    Request.request_type,
    Request.priority,
    Request.organization,
    Request.queue,
    Request.tier,
    Request.mailbox,
    Request.status,
    _arrival().label("arrived_at"),
    Request.first_response_at,
    Request.resolved_at,
    Request.first_response_due,
    Request.resolution_due,
)


# --------------------------------------------------------------------------- facts


def load_facts(store: Store, start: datetime, end: datetime, now: datetime) -> list[RequestFacts]:
    """Every request the report of ``[start, end)`` can mention, as known at ``now``.

    Three queries whatever the number of requests: the requests, their status events
    (for the SLA clock start, pauses and the status at the end of the period) and their
    recorded breaches. A request qualifies when it was created before the cut and was
    created, answered, resolved, closed or due in the period or later, had a breach
    recorded then, or is still open: a superset that :func:`~mailroute.core.report.make_report`
    narrows down.
    """
    cut = max(start, min(end, now))
    relevant = _relevant(start, cut)
    with store.transaction() as session:
        query = select(*FACT_COLUMNS).where(relevant).order_by(Request.id)
        rows = session.execute(query).mappings().all()
        changes = _status_changes(session, relevant)
        breaches = _breaches(session, relevant)
    return [_facts(row, changes.get(row["id"], []), breaches.get(row["id"], [])) for row in rows]


def _relevant(start: datetime, cut: datetime) -> ColumnElement[bool]:
    """Requests that may count in the period; an over-approximation, never an omission."""
    breached_since = exists().where(Escalation.request_id == Request.id, Escalation.due >= start)
    arrived = _arrival()
    return (arrived < cut) & or_(
        arrived >= start,
        Request.status.in_(OPEN_STATUSES),
        Request.first_response_at >= start,
        Request.resolved_at >= start,
        Request.closed_at >= start,
        Request.first_response_due >= start,
        Request.resolution_due >= start,
        breached_since,
    )


def _status_changes(
    session: Session, relevant: ColumnElement[bool]
) -> dict[int, list[StatusChange]]:
    """Status events of the qualifying requests, oldest first (ids as a subquery)."""
    ids = select(Request.id).where(relevant)
    query = (
        select(RequestEvent.request_id, RequestEvent.at, RequestEvent.detail)
        .where(RequestEvent.kind == "status", RequestEvent.request_id.in_(ids))
        .order_by(RequestEvent.request_id, RequestEvent.at, RequestEvent.id)
    )
    changes: dict[int, list[StatusChange]] = {}
    for request_id, at, detail in session.execute(query):
        change = _change(at, detail)
        if change is not None:
            changes.setdefault(request_id, []).append(change)
    return changes


def _change(at: datetime, detail: Mapping[str, Any] | None) -> StatusChange | None:
    """A status event's detail as a change; None for one without old and new."""
    old, new = (detail or {}).get("old"), (detail or {}).get("new")
    if not isinstance(old, str) or not isinstance(new, str):
        return None
    return StatusChange(at, old, new)


def _breaches(session: Session, relevant: ColumnElement[bool]) -> dict[int, list[Breach]]:
    """Recorded escalations of the qualifying requests (ids as a subquery, no IN list)."""
    ids = select(Request.id).where(relevant)
    query = (
        select(Escalation.request_id, Escalation.kind, Escalation.due)
        .where(Escalation.request_id.in_(ids))
        .order_by(Escalation.request_id, Escalation.due, Escalation.id)
    )
    breaches: dict[int, list[Breach]] = {}
    for request_id, kind, due in session.execute(query):
        breaches.setdefault(request_id, []).append(Breach(kind, due))
    return breaches


def _facts(
    row: RowMapping, changes: Sequence[StatusChange], breaches: Sequence[Breach]
) -> RequestFacts:
    first = initial_status(row["status"], changes)
    return RequestFacts(
        number=row["number"],
        request_type=row["request_type"],
        priority=row["priority"],
        organization=row["organization"],
        queue=row["queue"],
        status=row["status"],
        created_at=row["arrived_at"],
        clock_start=clock_start_from(row["arrived_at"], first, changes),
        first_response_at=row["first_response_at"],
        resolved_at=row["resolved_at"],
        first_response_due=row["first_response_due"],
        resolution_due=row["resolution_due"],
        breaches=tuple(breaches),
        status_changes=tuple(changes),
        tier=row["tier"],
        mailbox=row["mailbox"],
    )


# --------------------------------------------------------------------------- report


def build_report(
    store: Store,
    calendar: BusinessCalendar,
    start: datetime,
    end: datetime,
    now: datetime,
    *,
    targets: Mapping[str, sla.Targets] | None = None,
    top_organizations: int = 10,
) -> Report:
    """The report of ``[start, end)``; a period not over at ``now`` is reported so far.

    The facts are loaded from the start of the previous period of the same length, which
    the report compares this one with.
    """
    facts = load_facts(store, start - (end - start), end, now)
    return make_report(
        facts,
        start,
        end,
        calendar,
        now=now,
        targets=targets,
        top_organizations=top_organizations,
    )


def sla_targets(config: SlaConfig) -> dict[str, sla.Targets]:
    """The default (tier-less) target of each priority, for the report's target column."""
    return {priority: sla.targets_for(config, priority) for priority in PRIORITIES}


# --------------------------------------------------------------------------- periods


def previous_period(
    now: datetime, schedule: Schedule, calendar: BusinessCalendar
) -> tuple[datetime, datetime]:
    """The last complete day, ISO week (Monday to Sunday) or month before ``now``.

    Boundaries are local midnights of the desk's zone, returned as aware datetimes in it;
    the period is ``[start, end)``.
    """
    today = now.astimezone(calendar.zone).date()
    if schedule == "daily":
        first, after = today - timedelta(days=1), today
    elif schedule == "weekly":
        after = today - timedelta(days=today.weekday())
        first = after - timedelta(days=7)
    elif schedule == "monthly":
        after = today.replace(day=1)
        first = (after - timedelta(days=1)).replace(day=1)
    else:
        raise ValueError(f"unknown schedule {schedule!r}; one of: {', '.join(SCHEDULES)}")
    return _midnight(first, calendar), _midnight(after, calendar)


def period_for_days(
    first: date, last: date, calendar: BusinessCalendar
) -> tuple[datetime, datetime]:
    """``--from first --to last`` (both days included) as ``[start, end)`` in the desk's zone."""
    if last < first:
        raise ValueError(f"the period ends ({last}) before it starts ({first})")
    return _midnight(first, calendar), _midnight(last + timedelta(days=1), calendar)


def _midnight(day: date, calendar: BusinessCalendar) -> datetime:
    return datetime.combine(day, time(0), tzinfo=calendar.zone)


# --------------------------------------------------------------------------- mail


def queue_report_mail(
    store: Store,
    report: Report,
    identity: Identity,
    recipients: Iterable[str],
    now: datetime,
) -> int:
    """Queue the report for each recipient (one outbox row each); returns rows queued.

    The Message-ID is derived from the period and the recipient, so a report is queued
    once per recipient: a second daemon instance, or a job re-run after a restart,
    finds the row there and queues nothing (the outbox's Message-ID is unique).
    """
    addresses = _recipients(recipients)
    queued = 0
    with store.transaction() as session:
        for address in addresses:
            message_id = report_message_id(report, identity, address)
            draft = compose_report(report, identity, address, message_id)
            if _queue(session, draft, now):
                queued += 1
    return queued


def report_message_id(report: Report, identity: Identity, recipient: str) -> str:
    """``<report.2026-11-16.2026-11-22.<hash>@domain>``; a report so far adds its time."""
    domain = identity.address.rpartition("@")[2] or "mailroute.invalid"
    who = hashlib.sha256(recipient.lower().encode()).hexdigest()[:12]
    stamp = "" if report.complete else f".{report.as_of:%Y%m%dT%H%M%S}"
    return f"<report.{report.first_day}.{report.last_day}{stamp}.{who}@{domain}>"


def _recipients(recipients: Iterable[str]) -> list[str]:
    """Addresses in order, blanks and repeats dropped; anything header-unsafe refused."""
    addresses: dict[str, str] = {}
    for value in recipients:
        address = value.strip()
        if not address:
            continue
        if "@" not in address or any(ch.isspace() or ord(ch) < 32 for ch in address):
            raise ValueError(f"not an e-mail address: {address!r}")
        addresses.setdefault(address.lower(), address)
    return list(addresses.values())


def _queue(session: Session, draft: Draft, now: datetime) -> bool:
    """Add one outbox row; False when this Message-ID is already queued or sent."""
    if session.scalar(select(OutboxItem.id).where(OutboxItem.message_id == draft.message_id)):
        return False
    item = repo.pending_reply(
        kind=draft.kind,
        sender=draft.sender,
        recipient=draft.recipient,
        subject=draft.subject,
        message_id=draft.message_id,
        raw=draft.raw,
        not_before=now,
        now=now,
    )
    try:
        with session.begin_nested():
            session.add(item)
    except IntegrityError:
        return False  # another instance queued it first
    return True
