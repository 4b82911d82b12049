"""SLA breaches: found by a scheduler job, logged, mailed to the escalation address once.

"Once" is a unique row per (request, target, due time) in ``escalations``: a
second instance, or the next run, finds it there and stays quiet. A due time
moved by a pause or a reopening is a new breach when it passes again.

A request registered already past a target (a mailbox adopted with years of history, a
letter that waited out a long outage) is recorded as breached but not mailed one by one:
nobody could have met that target, and hundreds of escalation mails on the first start
would bury the ones that matter. One log line a run counts them.

Every new breach, mailed or not, is a ``request.breached`` webhook event (queued in the
same transaction as its ``escalations`` row; ``registered_after_due`` tells the two apart).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailroute import logs
from mailroute.config import WorkflowConfig
from mailroute.core import sla
from mailroute.core.compose import Identity, compose_notice, new_message_id
from mailroute.store import Store, webhooks
from mailroute.store import repository as repo
from mailroute.store.models import Escalation, Request

log = logs.get("mailroute.pipeline.escalations")
OPEN = ("new", "in_progress")


def escalate_breaches(
    store: Store, workflow: WorkflowConfig, identity: Identity, now: datetime
) -> list[tuple[str, str]]:
    """Record and report every breach not reported yet; returns (request, target) pairs."""
    reported = []
    born_late = 0
    with store.transaction() as session:
        for request in _overdue(session, now):
            for kind, due in _missed(request, now):
                if not _record(session, request, kind, due, now):
                    continue
                webhooks.enqueue(session, "request.breached", request, now, target=kind,
                                 due=due, registered_after_due=_registered_after(request, due))
                if _registered_after(request, due):
                    born_late += 1
                    continue
                reported.append((request.number, kind))
                _notify(session, workflow, identity, request, kind, due, now)
    if born_late:
        log.info("breached before they were registered; not escalated one by one",
                 count=born_late)
    return reported


def _registered_after(request: Request, due: datetime) -> bool:
    """The target had passed before the request existed (adopted history)."""
    created = request.created_at
    if created.tzinfo is None and due.tzinfo is not None:
        created = created.replace(tzinfo=due.tzinfo)
    elif due.tzinfo is None and created.tzinfo is not None:
        due = due.replace(tzinfo=created.tzinfo)
    return due <= created


def _overdue(session: Session, now: datetime) -> list[Request]:
    return list(
        session.scalars(
            select(Request)
            .where(
                Request.status.in_(OPEN),
                or_(
                    (Request.first_response_due < now) & Request.first_response_at.is_(None),
                    (Request.resolution_due < now) & Request.resolved_at.is_(None),
                ),
            )
            .order_by(Request.id)
        )
    )


def _missed(request: Request, now: datetime) -> list[tuple[str, datetime]]:
    due = sla.DueTimes(request.first_response_due, request.resolution_due)
    missed = sla.breaches(now, due, request.first_response_at, request.resolved_at)
    return [(kind, getattr(due, kind)) for kind in missed]


def _record(session: Session, request: Request, kind: str, due: datetime, now: datetime) -> bool:
    """True when this breach is new (this call inserted its row)."""
    exists = session.scalar(
        select(Escalation.id).where(
            Escalation.request_id == request.id, Escalation.kind == kind, Escalation.due == due
        )
    )
    if exists:
        return False
    try:
        with session.begin_nested():
            session.add(Escalation(request_id=request.id, kind=kind, due=due, noticed_at=now))
    except IntegrityError:
        return False  # another instance reported it first
    return True


def _notify(
    session: Session,
    workflow: WorkflowConfig,
    identity: Identity,
    request: Request,
    kind: str,
    due: datetime,
    now: datetime,
) -> None:
    late = now - due
    log.warning(
        "SLA breached",
        request=request.number,
        target=kind,
        due=due.isoformat(),
        late_minutes=int(late.total_seconds() // 60),
        queue=request.queue,
        priority=request.priority,
    )
    if not workflow.escalation_address:
        return
    what = "first response" if kind == "first_response" else "resolution"
    subject = f"[{request.number}] SLA breached: {what} was due {due:%Y-%m-%d %H:%M} UTC"
    body = (
        f"Request {request.number} ({request.request_type}, {request.priority}) has missed "
        f"its {what} target.\n\nDue: {due:%Y-%m-%d %H:%M} UTC\nStatus: {request.status}\n"
        f"Queue: {request.queue}\nOrganization: {request.organization or '-'}\n"
        f"Requester: {request.requester}\nSubject: {request.subject or '-'}\n\n"
        f"mailroute tickets show {request.number}\n"
    )
    domain = identity.address.rpartition("@")[2] or "mailroute.invalid"
    draft = compose_notice(
        "escalation",
        subject,
        body,
        identity,
        workflow.escalation_address,
        new_message_id(request.number, domain),
    )
    session.add(repo.pending_reply(
        kind=draft.kind, sender=draft.sender, recipient=draft.recipient,
        subject=draft.subject, message_id=draft.message_id, raw=draft.raw,
        not_before=now, now=now,
    ))
