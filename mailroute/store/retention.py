"""Years of mail: raw bytes purged and personal details removed after their time.

What a request is, and every figure a report draws from it (type, priority,
organization, registration number, status, its history's kinds and times, SLA
clocks), is kept for ever. What retention removes:

- after ``[retention] raw_days``: the raw bytes of letters already decided (never
  a pending or quarantined one: those still need them), the content of
  attachments no younger letter shares, the raw MIME of sent or failed
  replies, and webhook deliveries done (their bodies name the requester);
- ``anonymize_days`` after a request was closed: its requester's address and
  name, its subject, its letters' sender, subject, extracted text and bytes,
  the addresses and notes in its history, its replies' recipients, and the
  bodies of its webhook deliveries (personal data under 152-FZ).

Work is done in chunks, each in its own transaction, so a large first purge
never holds the database for long; a pass is idempotent and can stop anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.orm import Session

from mailroute.store.db import Store
from mailroute.store.models import (
    AttachmentRecord,
    Blob,
    Letter,
    LetterBytes,
    OutboxItem,
    Request,
    RequestEvent,
    WebhookDelivery,
)

CHUNK = 500  # rows per transaction
DECIDED = ("processed", "follow_up", "note", "ignored", "duplicate")
ANONYMOUS = "anonymized@anonymized.invalid"
# History details that hold no personal data: kept when a request is anonymized.
SAFE_DETAIL_KEYS = frozenset({"status", "reply", "letter", "parent", "request", "kind", "queue"})


@dataclass
class Purged:
    """What one retention pass removed (or, dry, would remove)."""

    letters: int = 0  # letters whose raw bytes were deleted
    blobs: int = 0  # attachment contents deleted
    replies: int = 0  # outbox rows whose raw MIME was deleted
    webhooks: int = 0  # webhook deliveries done (sent or failed) and deleted
    requests: int = 0  # requests anonymized

    def as_dict(self) -> dict[str, int]:
        return {item.name: getattr(self, item.name) for item in fields(self)}

    @property
    def anything(self) -> bool:
        return any(self.as_dict().values())


def apply(
    store: Store, raw_days: int, anonymize_days: int, now: datetime, dry_run: bool = False
) -> Purged:
    """One retention pass; 0 days switches that part off."""
    purged = Purged()
    if anonymize_days:
        cutoff = now - timedelta(days=anonymize_days)
        purged.requests = _in_chunks(store, dry_run, lambda s, d: _anonymize(s, cutoff, now, d))
    if raw_days:
        cutoff = now - timedelta(days=raw_days)
        blobs: list[int] = []  # attachment contents freed along with each chunk of letters

        def letters(session: Session, dry: bool) -> int:
            done, freed = _purge_letters(session, cutoff, now, dry)
            blobs.append(freed)
            return done

        purged.letters = _in_chunks(store, dry_run, letters)
        purged.blobs = sum(blobs)
        purged.replies = _in_chunks(store, dry_run, lambda s, d: _purge_replies(s, cutoff, d))
        purged.webhooks = _in_chunks(store, dry_run, lambda s, d: _purge_webhooks(s, cutoff, d))
    return purged


def _in_chunks(store: Store, dry_run: bool, step: Callable[[Session, bool], int]) -> int:
    """Run ``step(session, dry_run)`` (returning rows done, at most CHUNK) until it does
    fewer than a chunk; a dry run counts everything in one step."""
    total = 0
    while True:
        with store.transaction() as session:
            done = step(session, dry_run)
        total += done
        if dry_run or done < CHUNK:
            return total


def _purgeable_letters(cutoff: datetime) -> Any:
    return select(Letter.id).where(
        Letter.received_at < cutoff, Letter.purged_at.is_(None), Letter.state.in_(DECIDED)
    )


def _purge_letters(session: Session, cutoff: datetime, now: datetime,
                   dry_run: bool) -> tuple[int, int]:
    """Delete a chunk of old letters' bytes and the attachment contents only they held."""
    purgeable = _purgeable_letters(cutoff)
    if dry_run:
        count = session.scalar(select(func.count()).select_from(purgeable.subquery()))
        return int(count or 0), len(_held_only_by(session, purgeable))
    ids = list(session.scalars(purgeable.order_by(Letter.id).limit(CHUNK)))
    if not ids:
        return 0, 0
    doomed = _held_only_by(session, select(Letter.id).where(Letter.id.in_(ids)))
    session.execute(delete(LetterBytes).where(LetterBytes.letter_id.in_(ids)))
    session.execute(update(Letter).where(Letter.id.in_(ids)).values(purged_at=now))
    if doomed:
        session.execute(delete(Blob).where(Blob.sha256.in_(doomed)))
    return len(ids), len(doomed)


def _held_only_by(session: Session, letters: Any) -> list[str]:
    """Attachment contents of these letters that no other letter still holding its
    bytes shares (a logo in every signature stays while a young letter has it)."""
    letter_ids = letters.subquery()
    shared = exists().where(
        AttachmentRecord.sha256 == Blob.sha256,
        AttachmentRecord.letter_id == Letter.id,
        Letter.purged_at.is_(None),
        Letter.id.not_in(select(letter_ids.c.id)),
    )
    mine = select(AttachmentRecord.sha256).where(
        AttachmentRecord.letter_id.in_(select(letter_ids.c.id)))
    return list(session.scalars(select(Blob.sha256).where(Blob.sha256.in_(mine), ~shared)))


def _purge_replies(session: Session, cutoff: datetime, dry_run: bool) -> int:
    """Raw MIME of replies that went out (or gave up) before the cutoff."""
    old = select(OutboxItem.id).where(
        OutboxItem.created_at < cutoff,
        OutboxItem.state.in_(("sent", "failed")),
        func.length(OutboxItem.raw) > 0,
    )
    if dry_run:
        return int(session.scalar(select(func.count()).select_from(old.subquery())) or 0)
    ids = list(session.scalars(old.order_by(OutboxItem.id).limit(CHUNK)))
    if ids:
        session.execute(update(OutboxItem).where(OutboxItem.id.in_(ids)).values(raw=b""))
    return len(ids)


def _purge_webhooks(session: Session, cutoff: datetime, dry_run: bool) -> int:
    """Webhook deliveries done before the cutoff: their bodies name the requester."""
    done = select(WebhookDelivery.id).where(
        WebhookDelivery.created_at < cutoff, WebhookDelivery.state.in_(("sent", "failed")))
    if dry_run:
        return int(session.scalar(select(func.count()).select_from(done.subquery())) or 0)
    ids = list(session.scalars(done.order_by(WebhookDelivery.id).limit(CHUNK)))
    if ids:
        session.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids)))
    return len(ids)


def _anonymize(session: Session, cutoff: datetime, now: datetime, dry_run: bool) -> int:
    """Remove personal details from a chunk of requests closed before the cutoff."""
    due = select(Request.id).where(
        Request.closed_at.is_not(None), Request.closed_at < cutoff, Request.anonymized_at.is_(None)
    )
    if dry_run:
        return int(session.scalar(select(func.count()).select_from(due.subquery())) or 0)
    ids = list(session.scalars(due.order_by(Request.id).limit(CHUNK)))
    if not ids:
        return 0
    session.execute(update(Request).where(Request.id.in_(ids)).values(
        requester=ANONYMOUS, requester_name=None, subject=None, anonymized_at=now))
    letters = list(session.scalars(select(Letter.id).where(Letter.request_id.in_(ids))))
    if letters:
        doomed = _held_only_by(session, select(Letter.id).where(Letter.id.in_(letters)))
        if doomed:
            session.execute(delete(Blob).where(Blob.sha256.in_(doomed)))
        session.execute(delete(LetterBytes).where(LetterBytes.letter_id.in_(letters)))
        session.execute(update(Letter).where(Letter.id.in_(letters)).values(
            sender=None, subject=None, analysis=None, error=None, purged_at=now))
    for event in session.scalars(select(RequestEvent).where(RequestEvent.request_id.in_(ids))):
        event.detail = {k: v for k, v in (event.detail or {}).items() if k in SAFE_DETAIL_KEYS}
    session.execute(update(OutboxItem).where(OutboxItem.request_id.in_(ids)).values(
        recipient=ANONYMOUS, subject="", raw=b"", counted_as=None))
    numbers = list(session.scalars(select(Request.number).where(Request.id.in_(ids))))
    session.execute(update(WebhookDelivery).where(
        WebhookDelivery.request_number.in_(numbers), WebhookDelivery.state != "pending",
    ).values(payload="{}"))
    return len(ids)
