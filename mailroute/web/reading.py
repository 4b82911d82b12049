"""What the console's pages show, read from the database (sync: run in worker threads).

Letters are shown as the text the pipeline extracts (``core.letter.parse``); their
HTML is never passed on. Everything else comes from ``ops`` as the CLI shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from mailroute.core.business_calendar import BusinessCalendar, Calendars, calendar_of
from mailroute.core.letter import ParseLimits, parse
from mailroute.ops.tickets import list_page, show_request
from mailroute.store import Store
from mailroute.store import repository as repo
from mailroute.store.models import (
    AttachmentRecord,
    Letter,
    Organization,
    Request,
    WebhookDelivery,
)
from mailroute.store.repository import RequestFilter

PAGE_SIZE = 50
PAUSED = ("awaiting_customer",)
DONE = ("resolved", "closed")


@dataclass(frozen=True)
class SlaClock:
    """What the queue shows of a request's running SLA clock."""

    label: str  # "3h 20m", "paused", "" (no clock)
    overdue: bool


def queue_page(
    store: Store, calendar: BusinessCalendar | Calendars, where: RequestFilter, now: datetime
) -> dict[str, Any]:
    """One page of the queue (after ``where.after``, by keyset: as fast on the thousandth
    page as on the first) with each request's SLA clock in business time. ``total`` counts
    the matching requests from this page on."""
    rows, total = list_page(store, PAGE_SIZE, where, now)
    clocks = _clocks(store, [row["number"] for row in rows])
    for row in rows:
        row["sla"] = sla_clock(calendar_of(calendar, row.get("mailbox")), now,
                               *clocks.get(row["number"], (row["status"], None)))
    last = rows[-1]["number"] if rows and total > len(rows) else None
    return {"rows": rows, "total": total, "last": last}


def _clocks(store: Store, numbers: list[str]) -> dict[str, tuple[str, datetime | None]]:
    """The due time of the clock that runs for each request: first response, then resolution."""
    if not numbers:
        return {}
    with store.reading() as session:
        found = session.execute(
            select(Request.number, Request.status, Request.first_response_at,
                   Request.first_response_due, Request.resolved_at, Request.resolution_due)
            .where(Request.number.in_(numbers)))
        clocks = {}
        for number, status, responded, response_due, resolved, resolution_due in found:
            due = response_due if responded is None and response_due else (
                resolution_due if resolved is None else None)
            clocks[number] = (status, due)
        return clocks


def sla_clock(
    calendar: BusinessCalendar, now: datetime, status: str, due: datetime | None
) -> SlaClock:
    if due is None or status in DONE:
        return SlaClock("", False)
    if status in PAUSED:
        return SlaClock("paused", False)
    if due <= now:
        return SlaClock(_span(calendar.business_time_between(due, now)), True)
    return SlaClock(_span(calendar.business_time_between(now, due)), False)


def _span(duration: timedelta) -> str:
    minutes = int(duration.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m"


def request_page(
    store: Store, number: str, limits: ParseLimits, calendar: BusinessCalendar | Calendars,
    now: datetime,
) -> dict[str, Any] | None:
    """A request as ``tickets show`` has it, with its letters' text and attachments."""
    detail = show_request(store, number, now)
    if detail is None:
        return None
    with store.reading() as session:
        letters = session.scalars(
            select(Letter).join(Request, Request.id == Letter.request_id)
            .where(Request.number == number).order_by(Letter.received_at, Letter.id)).all()
        attachments = _attachments(session, [letter.id for letter in letters])
        detail["letters"] = [
            _letter_text(letter, limits) | {"attachments": attachments.get(letter.id, [])}
            for letter in letters
        ]
        request = repo.request_by_number(session, number)
        assert request is not None
        due = (request.first_response_due if request.first_response_at is None
               else request.resolution_due if request.resolved_at is None else None)
        detail["sla"] = sla_clock(calendar_of(calendar, request.mailbox), now, request.status, due)
    return detail


def _attachments(session: Any, letter_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    found: dict[int, list[dict[str, Any]]] = {}
    if not letter_ids:
        return found
    query = (select(AttachmentRecord).where(AttachmentRecord.letter_id.in_(letter_ids))
             .order_by(AttachmentRecord.id))
    for record in session.scalars(query):
        found.setdefault(record.letter_id, []).append({
            "id": record.id, "filename": record.filename, "size": record.size,
            "content_type": record.content_type, "inline": record.inline})
    return found


def _letter_text(letter: Letter, limits: ParseLimits) -> dict[str, Any]:
    """The letter as the pipeline reads it: sender, subject and extracted plain text."""
    shown: dict[str, Any] = {
        "id": letter.id, "state": letter.state, "received_at": letter.received_at.isoformat(),
        "from": letter.sender or "", "from_name": "", "subject": letter.subject or "", "text": "",
    }
    try:
        parsed = parse(letter.raw, limits)
    except Exception as exc:  # an unreadable letter is still listed, with why
        shown["text"] = f"[unreadable: {type(exc).__name__}]"
        return shown
    if parsed.sender is not None:
        shown["from_name"] = parsed.sender.name
    shown["subject"] = parsed.subject or shown["subject"]
    shown["text"] = parsed.text
    return shown


def attachment(
    store: Store, attachment_id: int, limits: ParseLimits
) -> tuple[str, bytes | None] | None:
    """An attachment's file name and content, for download: None if there is no such
    attachment, a content of None if retention purged every letter that carried it."""
    with store.reading() as session:
        record = session.get(AttachmentRecord, attachment_id)
        if record is None:
            return None
        return record.filename, repo.attachment_content(session, record, limits)


def add_note(store: Store, number: str, by: str, note: str, now: datetime) -> bool:
    """An operator's internal note in the request's history (never sent to the customer)."""
    with store.transaction() as session:
        request = repo.request_by_number(session, number)
        if request is None:
            return False
        repo.add_event(session, request, "note", now, by=by, note=note)
        return True


def organizations(store: Store) -> list[dict[str, Any]]:
    with store.reading() as session:
        return [
            {"name": o.name, "registration_numbers": list(o.registration_numbers),
             "domains": list(o.domains), "tier": o.tier}
            for o in session.scalars(select(Organization).order_by(Organization.name).limit(2000))
        ]


def webhook_deliveries(store: Store, limit: int = 200) -> dict[str, Any]:
    with store.reading() as session:
        counts = dict(session.execute(
            select(WebhookDelivery.state, func.count()).group_by(WebhookDelivery.state)).all())
        rows = [
            {"id": d.id, "event": d.event, "url": d.url, "request": d.request_number,
             "state": d.state, "attempts": d.attempts, "due": d.not_before.isoformat(),
             "sent_at": d.sent_at.isoformat() if d.sent_at else None, "error": d.last_error}
            for d in session.scalars(
                select(WebhookDelivery).order_by(WebhookDelivery.id.desc()).limit(limit))
        ]
        return {"counts": counts, "rows": rows}
