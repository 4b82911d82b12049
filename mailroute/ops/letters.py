"""Operator actions on stored letters and replies: inspect, retry, replay.

A retried quarantined letter is processed again from its stored bytes; its
copy on the server stays in the quarantine folder (mailroute never moves mail
it did not just fetch). ``replay`` pushes a letter file through the real
pipeline, as if it had arrived, for reproducing a support case.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from mailroute import logs
from mailroute.config import Config
from mailroute.mail.sources import source_name
from mailroute.pipeline.decide import Outcome, Pipeline, process_letter
from mailroute.pipeline.intake import header_message_id
from mailroute.store import Store
from mailroute.store import repository as repo
from mailroute.store.models import Letter, OutboxItem

log = logs.get("mailroute.ops.letters")

REPLAY_MAILBOX = "replay"


def quarantined(store: Store) -> list[dict[str, Any]]:
    with store.reading() as session:
        rows = session.scalars(
            select(Letter).where(Letter.state == "quarantined").order_by(Letter.id))
        return [_letter_row(letter) for letter in rows]


def letter_detail(store: Store, letter_id: int) -> dict[str, Any] | None:
    with store.reading() as session:
        letter = session.get(Letter, letter_id)
        if letter is None:
            return None
        return _letter_row(letter) | {
            "stage": letter.stage, "error": letter.error, "attempts": letter.attempts,
            "mailbox": letter.mailbox, "uid": letter.uid, "sha256": letter.sha256,
            "filed_to": letter.filed_to, "size": letter.size,
            "request": letter.request.number if letter.request else None,
        }


def letter_bytes(store: Store, letter_id: int) -> bytes | None:
    """The letter as fetched; None if there is no such letter or retention purged it."""
    with store.reading() as session:
        letter = session.get(Letter, letter_id)
        if letter is None or letter.purged_at is not None:
            return None
        return letter.raw


def pipeline_for(config: Config, store: Store, source: str) -> Pipeline:
    """The pipeline of the mailbox a letter came from (by its source name): with several
    mailboxes, a retried letter is numbered and answered as its own mailbox does."""
    for box in config.all_mailboxes():
        if config.several_mailboxes and source_name(box) == source:
            return Pipeline.from_config(config, store, box)
    return Pipeline.from_config(config, store)


def retry_letter(
    store: Store, pipeline_of: Callable[[str], Pipeline], letter_id: int, now: datetime
) -> Outcome:
    """Process a quarantined letter again (after a fix or a rules change), with the
    pipeline ``pipeline_of`` gives for its mailbox (see :func:`pipeline_for`)."""
    with store.transaction() as session:
        letter = session.get(Letter, letter_id)
        if letter is None:
            raise LookupError(f"no letter {letter_id}")
        if letter.state != "quarantined":
            raise LookupError(f"letter {letter_id} is {letter.state}, not quarantined")
        letter.state, letter.stage, letter.error = "pending", None, None
        source = letter.mailbox
    outcome = process_letter(store, pipeline_of(source), letter_id, now)
    assert outcome is not None  # it was pending and nobody else takes replay work
    return outcome


def replay(
    store: Store, pipeline: Pipeline, raw: bytes, now: datetime
) -> tuple[Outcome | None, int]:
    """Save ``raw`` as a newly arrived letter and process it; returns (outcome, letter id).

    The outcome is None when the same bytes were stored before (nothing is redone).
    """
    with store.transaction() as session:
        letter, is_new = repo.save_letter(
            session, mailbox=REPLAY_MAILBOX, uidvalidity=0,
            uid=f"{hashlib.sha256(raw).hexdigest()[:32]}", raw=raw,
            message_id=header_message_id(raw), received_at=now, now=now,
        )
        letter.filed_to = letter.filed_to or REPLAY_MAILBOX
        letter_id = letter.id
    if not is_new:
        return None, letter_id
    return process_letter(store, pipeline, letter_id, now), letter_id


def outbox_rows(store: Store, state: str | None = None) -> list[dict[str, Any]]:
    with store.reading() as session:
        query = select(OutboxItem).order_by(OutboxItem.id)
        if state:
            query = query.where(OutboxItem.state == state)
        return [_outbox_row(item) for item in session.scalars(query)]


def retry_reply(store: Store, item_id: int, now: datetime) -> dict[str, Any]:
    """Send a failed (or waiting) reply at the next outbox run."""
    with store.transaction() as session:
        item = session.get(OutboxItem, item_id)
        if item is None:
            raise LookupError(f"no outbox item {item_id}")
        if item.state == "sent":
            raise LookupError(f"outbox item {item_id} was already sent at {item.sent_at}")
        item.state, item.not_before, item.claimed_until = "pending", now, None
        return _outbox_row(item)


def suppression_rows(store: Store, now: datetime, suppress_for: timedelta) -> list[dict[str, Any]]:
    """The suppressions not expired yet, newest first, with the moment each ends."""
    with store.reading() as session:
        return [
            {"address": row.address, "since": row.created_at.isoformat(),
             "until": (row.created_at + suppress_for).isoformat(), "reason": row.reason,
             "letter": row.letter_id}
            for row in repo.list_suppressions(session, now - suppress_for)
        ]


def lift_suppression(store: Store, address: str) -> bool:
    """Answer ``address`` again; False when it was not suppressed."""
    with store.transaction() as session:
        lifted = repo.lift_suppression(session, address)
    if lifted:
        log.info("suppression lifted", address=address.strip().lower())
    return lifted


def _letter_row(letter: Letter) -> dict[str, Any]:
    return {
        "id": letter.id, "state": letter.state, "received_at": letter.received_at.isoformat(),
        "from": letter.sender, "subject": letter.subject, "message_id": letter.message_id,
        "stage": letter.stage,
        "error": (letter.error or "").splitlines()[0] if letter.error else None,
    }


def _outbox_row(item: OutboxItem) -> dict[str, Any]:
    return {
        "id": item.id, "state": item.state, "kind": item.kind, "to": item.recipient,
        "subject": item.subject, "attempts": item.attempts,
        "due": item.not_before.isoformat(),
        "sent_at": item.sent_at.isoformat() if item.sent_at else None,
        "error": item.last_error,
    }
