"""Read models for `mailroute tickets`: requests as plain, JSON-ready dicts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailroute.config import Config
from mailroute.core.business_calendar import BusinessCalendar, Calendars, calendar_of
from mailroute.core.letter.model import ParseLimits
from mailroute.core.letter.parser import parse
from mailroute.errors import LetterUnreadable
from mailroute.pipeline.status import is_breached, set_status
from mailroute.store import Store
from mailroute.store import repository as repo
from mailroute.store.models import AttachmentRecord, Letter, Request
from mailroute.store.repository import RequestFilter


def list_rows(
    store: Store, limit: int | None = None, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Requests newest first, with the fields of `tickets list --json`."""
    return list_page(store, limit, now=now)[0]


def list_page(
    store: Store,
    limit: int | None = None,
    where: RequestFilter | None = None,
    now: datetime | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """The requests matching ``where``, newest first, up to ``limit``; and how many match."""
    now = now or datetime.now(UTC)
    with store.reading() as session:
        found, total = repo.list_requests(session, limit, where)
        arrivals = _arrivals(session, [request.id for request, _count in found])
        return [
            _summary(request, count, now, arrivals.get(request.id)) for request, count in found
        ], total


def _arrivals(session: Session, request_ids: list[int]) -> dict[int, datetime]:
    """When each request's first letter arrived: an adopted backlog was not created today."""
    if not request_ids:
        return {}
    query = (
        select(Letter.request_id, func.min(Letter.received_at))
        .where(Letter.request_id.in_(request_ids))
        .group_by(Letter.request_id)
    )
    return {request_id: arrived for request_id, arrived in session.execute(query)
            if request_id is not None}


def calendars(config: Config) -> Calendars:
    """Each mailbox's calendar by its label; requests of no mailbox run on the first's."""
    boxes = config.all_mailboxes()
    by_mailbox = {box.label: BusinessCalendar.from_config(config.for_mailbox(box).business_hours)
                  for box in boxes}
    return Calendars(by_mailbox[boxes[0].label], by_mailbox)


def change_status(
    store: Store,
    number: str,
    status: str,
    calendar: BusinessCalendar | Calendars,
    now: datetime,
    note: str | None = None,
    by: str = "operator",
) -> tuple[str, str] | None:
    """Set a request's status (an operator's action, ``by`` whom for the history); returns
    (old, new) or None if unknown."""
    with store.transaction() as session:
        request = repo.request_by_number(session, number)
        if request is None:
            return None
        old = request.status
        set_status(session, request, status, now, calendar_of(calendar, request.mailbox), by=by,
                   note=note)
        return old, request.status


def show_request(
    store: Store, number: str, now: datetime | None = None, limits: ParseLimits | None = None
) -> dict[str, Any] | None:
    """One request with its letters, replies and history; with ``limits``, each letter
    also carries its subject, its text as the pipeline reads it (customer HTML turned
    into text, never passed on) and its attachments' names, types and sizes."""
    now = now or datetime.now(UTC)
    with store.reading() as session:
        request = repo.request_by_number(session, number)
        if request is None:
            return None
        arrived = min((x.received_at for x in request.letters), default=None)
        detail = _summary(request, len(request.letters) + len(request.replies), now, arrived)
        detail |= {
            "requester_name": request.requester_name,
            "queue": request.queue,
            "language": request.language,
            "missing": list(request.missing),
            "tier": request.tier,
            "clarifications": request.clarifications,
            "first_response_at": _iso(request.first_response_at),
            "resolved_at": _iso(request.resolved_at),
            "closed_at": _iso(request.closed_at),
            "parent": _number(session, request.parent_id),
            "reasons": list(request.reasons),
            "letters": [_letter(session, x, limits) for x in request.letters],
            "replies": [
                {
                    "id": x.id,
                    "kind": x.kind,
                    "state": x.state,
                    "to": x.recipient,
                    "message_id": x.message_id,
                    "not_before": _iso(x.not_before),
                    "sent_at": _iso(x.sent_at),
                    "attempts": x.attempts,
                    "error": x.last_error,
                }
                for x in request.replies
            ],
            "events": [{"at": _iso(x.at), "kind": x.kind, **x.detail} for x in request.events],
        }
        return detail


def _letter(session: Session, letter: Letter, limits: ParseLimits | None) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": letter.id,
        "state": letter.state,
        "from": letter.sender,
        "message_id": letter.message_id,
        "received_at": _iso(letter.received_at),
    }
    if limits is None:
        return shown
    try:
        text: str | None = parse(letter.raw, limits).text
    except LetterUnreadable:
        text = None  # filed to a request once, unreadable now only under tighter limits
    files = session.scalars(
        select(AttachmentRecord).where(AttachmentRecord.letter_id == letter.id)
        .order_by(AttachmentRecord.id)
    )
    return shown | {
        "subject": letter.subject,
        "text": text,
        "attachments": [
            {"filename": x.filename, "content_type": x.content_type, "size": x.size,
             "inline": x.inline}
            for x in files
        ],
    }


def _number(session: Any, request_id: int | None) -> str | None:
    parent = session.get(Request, request_id) if request_id else None
    return parent.number if parent else None


def _summary(
    request: Request, messages: int, now: datetime, arrived: datetime | None
) -> dict[str, Any]:
    return {
        "number": request.number,
        "status": request.status,
        "request_type": request.request_type,
        "priority": request.priority,
        "organization": request.organization,
        "registration_number": request.registration_number,
        "requester": request.requester,
        "subject": request.subject,
        "created_at": _iso(request.created_at),
        "arrived_at": _iso(arrived or request.created_at),  # what a person means by "opened"
        "messages": messages,
        "first_response_due": _iso(request.first_response_due),
        "resolution_due": _iso(request.resolution_due),
        "breached": is_breached(request, now),
        "queue": request.queue,
        "mailbox": request.mailbox,
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
