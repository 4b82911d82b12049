"""Webhook events queued in the same transaction as the change they announce.

A request's history (``repository.add_event``) and an SLA breach call :func:`enqueue`;
it adds one ``webhook_deliveries`` row per configured webhook that subscribes to the
event, so the event is committed exactly when the change is, and a rolled-back
change announces nothing. The subscriptions travel with the session
(``session.info``), put there by ``Store.transaction`` from ``Store.webhooks``: every
path that changes a request through the store is covered without passing the
config down to it. Sending is ``mailroute.mail.webhooks``'s job.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailroute.config import WebhookConfig
from mailroute.store.models import Request, WebhookDelivery

SESSION_KEY = "mailroute.webhooks"
# request history kinds announced, and the event each becomes
HISTORY_EVENTS = {"created": "request.created", "status": "request.status"}
# details of a status change that are passed on (an operator's note is internal)
STATUS_DETAILS = ("old", "new", "by", "reason")


@dataclass(frozen=True)
class Subscription:
    """Where an event goes: a webhook's URL and the events it asked for."""

    url: str
    events: frozenset[str]

    @classmethod
    def of(cls, hooks: Iterable[WebhookConfig]) -> tuple[Subscription, ...]:
        return tuple(cls(hook.url, frozenset(hook.events)) for hook in hooks)


def on_history(session: Session, request: Request, kind: str, at: datetime,
               detail: dict[str, Any]) -> None:
    """Announce a history entry that is a webhook event (created, status)."""
    event = HISTORY_EVENTS.get(kind)
    if event is None:
        return
    extra = {key: detail[key] for key in STATUS_DETAILS if detail.get(key) is not None}
    enqueue(session, event, request, at, **(extra if kind == "status" else {}))


def enqueue(session: Session, event: str, request: Request, at: datetime,
            **extra: Any) -> int:
    """Queue ``event`` about ``request`` for every subscribed webhook; how many rows."""
    subscriptions: tuple[Subscription, ...] = session.info.get(SESSION_KEY, ())
    urls = [item.url for item in subscriptions if event in item.events]
    for url in urls:
        delivery_id = str(uuid.uuid4())
        body = payload(event, delivery_id, request, at, extra)
        session.add(WebhookDelivery(
            url=url, event=event, request_number=request.number, payload=body,
            state="pending", attempts=0, not_before=at, created_at=at,
        ))
    return len(urls)


def payload(event: str, delivery_id: str, request: Request, at: datetime,
            extra: dict[str, Any]) -> str:
    """The exact JSON body sent (and signed): the event and the request as it is now."""
    document = {
        "event": event,
        "id": delivery_id,
        "occurred_at": _iso(at),
        "request": request_fields(request),
        **extra,
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), default=_iso)


def request_fields(request: Request) -> dict[str, Any]:
    return {
        "number": request.number,
        "status": request.status,
        "type": request.request_type,
        "priority": request.priority,
        "organization": request.organization,
        "registration_number": request.registration_number,
        "queue": request.queue,
        "subject": request.subject,
        "requester": request.requester,
        "requester_name": request.requester_name,
        "language": request.language,
        "created_at": _iso(request.created_at),
        "first_response_due": _iso(request.first_response_due),
        "resolution_due": _iso(request.resolution_due),
        "sla_paused": request.sla_paused_at is not None,
    }


def counts(session: Session) -> dict[str, int]:
    """Deliveries by state (pending, sent, failed), for `status` and the metrics."""
    query = select(WebhookDelivery.state, func.count()).group_by(WebhookDelivery.state)
    return {state: int(count) for state, count in session.execute(query)}


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    raise TypeError(f"{type(value).__name__} is not JSON")
