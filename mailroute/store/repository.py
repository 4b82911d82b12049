"""Queries and state changes, each taking the session of the caller's transaction.

Nothing here commits: the caller's ``Store.transaction()`` block decides what one
unit of work is (one letter, one reply).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailroute.store.models import (
    AttachmentRecord,
    Blob,
    Counter,
    Letter,
    MailboxState,
    OutboxItem,
    Request,
    RequestEvent,
    Suppression,
)

REQUEST_COUNTER = "request"
FINAL_LETTER_STATES = ("processed", "follow_up", "ignored", "duplicate", "quarantined")


# ----------------------------------------------------------------------------- letters


def known_uids(session: Session, mailbox: str, uidvalidity: int, uids: Sequence[str]) -> set[str]:
    """Which of these UIDs of this mailbox generation are saved already."""
    found: set[str] = set()
    for start in range(0, len(uids), 500):
        chunk = list(uids[start : start + 500])
        found.update(
            session.scalars(
                select(Letter.uid).where(
                    Letter.mailbox == mailbox,
                    Letter.uidvalidity == uidvalidity,
                    Letter.uid.in_(chunk),
                )
            )
        )
    return found


def save_letter(
    session: Session,
    *,
    mailbox: str,
    uidvalidity: int,
    uid: str,
    raw: bytes,
    message_id: str | None,
    received_at: datetime,
    now: datetime,
) -> tuple[Letter, bool]:
    """Store raw bytes under (mailbox, UIDVALIDITY, UID); returns (letter, is_new).

    The same bytes seen again under another key (a UIDVALIDITY change, a second
    copy in the folder) return the letter already stored instead of a new one.
    """
    sha = fingerprint(raw)
    same = session.scalars(select(Letter).where(Letter.sha256 == sha).limit(1)).first()
    if same is not None:
        return same, False
    letter = Letter(
        mailbox=mailbox,
        uidvalidity=uidvalidity,
        uid=uid,
        message_id=message_id,
        sha256=sha,
        raw=raw,
        size=len(raw),
        received_at=received_at,
        fetched_at=now,
        state="pending",
        attempts=0,
    )
    session.add(letter)
    session.flush()
    return letter, True


def fingerprint(raw: bytes) -> str:
    """SHA-256 of the letter with line endings normalised.

    Servers disagree on CRLF vs LF (an LF letter appended to Dovecot is served
    with CRLF), so the same letter must hash the same however it was stored.
    """
    return hashlib.sha256(raw.replace(b"\r\n", b"\n")).hexdigest()


def pending_letter_ids(session: Session, limit: int = 1000) -> list[int]:
    """Saved letters not yet processed, oldest first."""
    rows = session.scalars(
        select(Letter.id).where(Letter.state == "pending").order_by(Letter.id).limit(limit)
    )
    return list(rows)


def pending_count(session: Session) -> int:
    return session.scalar(select(func.count()).where(Letter.state == "pending")) or 0


def lock_letter(session: Session, letter_id: int) -> Letter | None:
    """The letter row, locked against a second worker for this transaction."""
    query = select(Letter).where(Letter.id == letter_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return session.scalars(query).first()


def processed_with_message_id(
    session: Session, message_id: str, exclude_id: int
) -> tuple[int, int | None] | None:
    """(id, request id) of an earlier letter with this Message-ID that was decided."""
    row = session.execute(
        select(Letter.id, Letter.request_id)
        .where(
            Letter.message_id == message_id,
            Letter.id != exclude_id,
            Letter.state.in_(("processed", "follow_up", "ignored")),
        )
        .limit(1)
    ).first()
    return (row[0], row[1]) if row else None


def letters_to_file(session: Session, mailbox: str, uidvalidity: int) -> dict[int, tuple[str, str]]:
    """id -> (uid, state) of decided letters not moved out of the folder yet."""
    return {
        row[0]: (row[1], row[2])
        for row in session.execute(
            select(Letter.id, Letter.uid, Letter.state)
            .where(
                Letter.mailbox == mailbox,
                Letter.uidvalidity == uidvalidity,
                Letter.state.in_(FINAL_LETTER_STATES),
                Letter.filed_to.is_(None),
            )
            .order_by(Letter.id)
        )
    }


def letter_states(session: Session, letter_ids: Sequence[int]) -> dict[int, str]:
    if not letter_ids:
        return {}
    rows = session.execute(select(Letter.id, Letter.state).where(Letter.id.in_(letter_ids)))
    return {letter_id: state for letter_id, state in rows}


def mark_filed(session: Session, letter_ids: Iterable[int], folder: str) -> None:
    ids = list(letter_ids)
    if ids:
        session.execute(update(Letter).where(Letter.id.in_(ids)).values(filed_to=folder))


def add_attachment(
    session: Session,
    letter: Letter,
    *,
    filename: str,
    content_type: str,
    content: bytes,
    sha256: str,
    inline: bool,
) -> None:
    """Attachment metadata, and its content once per SHA-256."""
    session.add(
        AttachmentRecord(
            letter_id=letter.id,
            filename=filename,
            content_type=content_type,
            size=len(content),
            sha256=sha256,
            inline=inline,
        )
    )
    if session.get(Blob, sha256) is None:
        session.add(Blob(sha256=sha256, content=content))
        session.flush()  # so the next attachment with the same content finds it


def quarantined_count(session: Session) -> int:
    return session.scalar(select(func.count()).where(Letter.state == "quarantined")) or 0


# ---------------------------------------------------------------------------- requests


def next_request_number(session: Session, prefix: str = "SD-") -> str:
    """The next number in the sequence, gapless: the counter row is locked until commit."""
    bumped = _bump(session, REQUEST_COUNTER)
    if bumped is None:  # a database from before the row was seeded: create it once
        try:
            with session.begin_nested():
                session.add(Counter(name=REQUEST_COUNTER, value=0))
        except IntegrityError:
            pass  # another writer created it first
        bumped = _bump(session, REQUEST_COUNTER)
    return f"{prefix}{bumped:06d}"


def _bump(session: Session, name: str) -> int | None:
    return session.execute(
        update(Counter)
        .where(Counter.name == name)
        .values(value=Counter.value + 1)
        .returning(Counter.value)
    ).scalar()


def add_event(
    session: Session, request: Request, kind: str, at: datetime, /, **detail: Any
) -> RequestEvent:
    """Append to the request's history; any keyword (even ``request``) is detail."""
    event = RequestEvent(request_id=request.id, at=at, kind=kind, detail=detail)
    session.add(event)
    return event


def request_by_number(session: Session, number: str) -> Request | None:
    return session.scalars(select(Request).where(Request.number == number.upper())).first()


def request_by_message_ids(session: Session, message_ids: Iterable[str]) -> Request | None:
    """The request one of these Message-IDs belongs to: our replies or its letters."""
    ids = [m for m in message_ids if m]
    if not ids:
        return None
    via_reply = session.scalars(
        select(Request)
        .join(OutboxItem, OutboxItem.request_id == Request.id)
        .where(OutboxItem.message_id.in_(ids))
        .limit(1)
    ).first()
    if via_reply is not None:
        return via_reply
    return session.scalars(
        select(Request)
        .join(Letter, Letter.request_id == Request.id)
        .where(Letter.message_id.in_(ids))
        .limit(1)
    ).first()


def list_requests(session: Session, limit: int | None = None) -> list[tuple[Request, int]]:
    """Requests newest first, each with its message count (letters in + replies out)."""
    letters = select(func.count(Letter.id)).where(Letter.request_id == Request.id).scalar_subquery()
    replies = (
        select(func.count(OutboxItem.id))
        .where(OutboxItem.request_id == Request.id)
        .scalar_subquery()
    )
    query = select(Request, letters + replies).order_by(Request.id.desc())
    if limit:
        query = query.limit(limit)
    return [(row[0], int(row[1])) for row in session.execute(query)]


# ------------------------------------------------------------------------------ outbox


def outbox_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(OutboxItem.state, func.count()).group_by(OutboxItem.state))
    return {state: int(count) for state, count in rows}


def replies_to_since(session: Session, address: str, since: datetime) -> tuple[int, bool]:
    """(automatic replies to ``address`` since then, whether one was the final notice)."""
    rows = session.execute(
        select(OutboxItem.kind, func.count())
        .where(
            OutboxItem.recipient == address,
            OutboxItem.created_at >= since,
            OutboxItem.kind.in_(("acknowledgement", "clarification", "limit")),
        )
        .group_by(OutboxItem.kind)
    )
    counts = dict(rows.all())
    return sum(counts.values()), bool(counts.get("limit"))


def recipients_we_wrote(session: Session, addresses: Iterable[str]) -> list[str]:
    """Which of these addresses received replies from us."""
    wanted = sorted({a.lower() for a in addresses})[:500]
    if not wanted:
        return []
    rows = session.scalars(
        select(OutboxItem.recipient).where(OutboxItem.recipient.in_(wanted)).distinct()
    )
    return list(rows)


def is_suppressed(session: Session, address: str) -> bool:
    return session.get(Suppression, address.lower()) is not None


def suppress(
    session: Session, address: str, reason: str, now: datetime, letter_id: int | None = None
) -> bool:
    """Stop answering ``address``; False when it already was suppressed."""
    address = address.lower()
    if session.get(Suppression, address) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(
                Suppression(address=address, reason=reason, created_at=now, letter_id=letter_id)
            )
    except IntegrityError:
        return False  # another instance recorded it first
    return True


# ----------------------------------------------------------------------------- mailbox


def record_poll(
    session: Session,
    name: str,
    uidvalidity: int | None,
    at: datetime,
    error: str | None = None,
    backlog: int | None = None,
) -> None:
    """Remember a successful poll (and the folder's size then), or the last error."""
    state = session.get(MailboxState, name)
    if state is None:
        state = MailboxState(name=name)
        session.add(state)
    if error is None:
        state.uidvalidity = uidvalidity
        state.last_poll_at = at
        state.backlog = backlog
    else:
        state.last_error = error
        state.last_error_at = at
