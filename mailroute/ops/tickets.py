"""Read models for `mailroute tickets`: requests as plain, JSON-ready dicts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mailroute.core.business_calendar import BusinessCalendar
from mailroute.pipeline.status import is_breached, set_status
from mailroute.store import Store
from mailroute.store import repository as repo
from mailroute.store.models import Request


def list_rows(
    store: Store, limit: int | None = None, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Requests newest first, with the fields of `tickets list --json`."""
    now = now or datetime.now(UTC)
    with store.transaction() as session:
        return [
            _summary(request, count, now) for request, count in repo.list_requests(session, limit)
        ]


def change_status(
    store: Store,
    number: str,
    status: str,
    calendar: BusinessCalendar,
    now: datetime,
    note: str | None = None,
) -> tuple[str, str] | None:
    """Set a request's status (an operator's action); returns (old, new) or None if unknown."""
    with store.transaction() as session:
        request = repo.request_by_number(session, number)
        if request is None:
            return None
        old = request.status
        set_status(session, request, status, now, calendar, by="operator", note=note)
        return old, request.status


def show_request(store: Store, number: str, now: datetime | None = None) -> dict[str, Any] | None:
    """One request with its letters, replies and history."""
    now = now or datetime.now(UTC)
    with store.transaction() as session:
        request = repo.request_by_number(session, number)
        if request is None:
            return None
        detail = _summary(request, len(request.letters) + len(request.replies), now)
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
            "letters": [
                {
                    "id": x.id,
                    "state": x.state,
                    "from": x.sender,
                    "message_id": x.message_id,
                    "received_at": _iso(x.received_at),
                }
                for x in request.letters
            ],
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


def _number(session: Any, request_id: int | None) -> str | None:
    parent = session.get(Request, request_id) if request_id else None
    return parent.number if parent else None


def _summary(request: Request, messages: int, now: datetime) -> dict[str, Any]:
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
        "messages": messages,
        "first_response_due": _iso(request.first_response_due),
        "resolution_due": _iso(request.resolution_due),
        "breached": is_breached(request, now),
        "queue": request.queue,
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
