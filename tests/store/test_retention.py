"""Retention on SQLite and PostgreSQL: old bytes and personal details go, requests and
their figures stay, and nothing young, pending or quarantined is touched."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from sqlalchemy import func, select, update

from mailroute.config import Config
from mailroute.core.letter import ParseLimits
from mailroute.pipeline.decide import Pipeline, process_pending
from mailroute.store import Store
from mailroute.store import repository as repo
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
from mailroute.store.retention import ANONYMOUS, CHUNK, apply

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=400)
LOGO = b"\x89PNG the company logo in every signature"
UIDS = itertools.count(1)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.upgrade()
    yield store
    store.dispose()


def letter(n: int, attachment: bytes | None = None) -> bytes:
    message = EmailMessage()
    message["From"] = f"Иван Петров <ivan{n}@romashka.example>"
    message["To"] = "support@vendor.example"
    message["Subject"] = f"Ошибка в отчёте {n}"
    message["Message-ID"] = f"<retention{n}@romashka.example>"
    message.set_content(f"Отчёт не формируется.\n\nООО «Ромашка»\nрег. номер {800100200 + n}\n")
    if attachment is not None:
        message.add_attachment(attachment, maintype="image", subtype="png", filename="logo.png")
    return bytes(message)


def desk(store: Store, letters: list[bytes], received_at: datetime) -> list[int]:
    """Letters arrived at ``received_at`` and decided by the real pipeline."""
    arrivals = [repo.Arrival(str(next(UIDS)), raw, None, received_at) for raw in letters]
    with store.transaction() as session:
        ids = [saved.id for saved, _new in repo.save_letters(session, "m", 1, arrivals, NOW)]
    process_pending(store, Pipeline.from_config(Config()), lambda: received_at)
    return ids


def stored_as_earlier_versions_did(store: Store) -> None:
    """Every attachment's content in ``blobs`` too, once per SHA-256, as mailroute once stored
    them: a database of that time, whose blobs retention still purges."""
    with store.transaction() as session:
        for record in session.scalars(select(AttachmentRecord)):
            if session.get(Blob, record.sha256) is None:
                content = repo.attachment_content(session, record, ParseLimits())
                assert content is not None
                session.add(Blob(sha256=record.sha256, content=content))
                session.flush()


def counts(store: Store) -> dict[str, int]:
    with store.transaction() as session:
        return {name: int(session.scalar(select(func.count()).select_from(table)) or 0)
                for name, table in (("requests", Request), ("letters", Letter),
                                    ("bytes", LetterBytes), ("blobs", Blob),
                                    ("events", RequestEvent))}


def test_old_bytes_go_young_ones_and_every_request_stay(store: Store) -> None:
    old = desk(store, [letter(1, LOGO), letter(2, b"\x89PNG only in an old letter")], OLD)
    young = desk(store, [letter(3, LOGO)], NOW - timedelta(days=2))
    stored_as_earlier_versions_did(store)
    with store.transaction() as session:
        session.execute(update(OutboxItem).values(state="sent", sent_at=OLD))
        for state, created in (("sent", OLD), ("pending", OLD), ("sent", NOW)):
            session.add(WebhookDelivery(
                url="http://x/", event="request.created", payload="{}", state=state,
                attempts=1, not_before=created, created_at=created))
    before = counts(store)

    dry = apply(store, raw_days=365, anonymize_days=0, now=NOW, dry_run=True)
    assert counts(store) == before  # a dry run changes nothing
    purged = apply(store, raw_days=365, anonymize_days=0, now=NOW)

    assert (dry.letters, dry.blobs) == (purged.letters, purged.blobs) == (2, 1)
    assert dry.webhooks == purged.webhooks == 1  # an old one still pending stays
    after = counts(store)
    assert after["requests"] == before["requests"] == 3  # the registry keeps every request
    assert after["letters"] == before["letters"] and after["events"] == before["events"]
    assert after["bytes"] == before["bytes"] - 2
    assert after["blobs"] == before["blobs"] - 1  # the logo stays: a young letter has it
    with store.transaction() as session:
        purged_at = dict(session.execute(select(Letter.id, Letter.purged_at)).all())
        assert all(purged_at[i] is not None for i in old) and purged_at[young[0]] is None
        raws = [len(raw) for raw in session.scalars(select(OutboxItem.raw))]
        assert sorted(raws)[:2] == [0, 0] and sorted(raws)[2] > 0  # the young reply's is kept
    assert apply(store, raw_days=365, anonymize_days=0, now=NOW).anything is False  # idempotent


def test_pending_and_quarantined_letters_keep_their_bytes(store: Store) -> None:
    desk(store, [letter(1)], OLD)
    with store.transaction() as session:
        session.execute(update(Letter).values(state="quarantined"))
    assert apply(store, raw_days=1, anonymize_days=0, now=NOW).letters == 0
    assert counts(store)["bytes"] == 1


def test_a_closed_request_loses_its_personal_details_and_keeps_its_figures(
    store: Store,
) -> None:
    desk(store, [letter(1, b"\x89PNG a scan of a passport")], OLD)
    desk(store, [letter(2)], OLD)
    stored_as_earlier_versions_did(store)
    with store.transaction() as session:
        first, second = session.scalars(select(Request).order_by(Request.id)).all()
        first.status, first.closed_at = "closed", OLD + timedelta(days=1)
        session.add(WebhookDelivery(
            url="http://x/", event="request.created", request_number=first.number,
            payload='{"requester": "ivan1@romashka.example"}', state="sent", attempts=1,
            not_before=OLD, created_at=OLD))

    purged = apply(store, raw_days=0, anonymize_days=180, now=NOW)

    assert purged.requests == 1 and purged.letters == 0  # raw_days 0: nothing else purged
    with store.transaction() as session:
        first, second = session.scalars(select(Request).order_by(Request.id)).all()
        assert first.requester == ANONYMOUS and first.requester_name is None
        assert first.subject is None and first.anonymized_at == NOW
        assert (first.request_type, first.organization, first.registration_number) == (
            "incident", "ООО «Ромашка»", "800100201")  # the figures stay
        assert second.requester == "ivan2@romashka.example"  # not closed: untouched
        letter_row = session.scalars(select(Letter).where(Letter.request_id == first.id)).one()
        assert letter_row.sender is None and letter_row.analysis is None
        assert session.get(LetterBytes, letter_row.id) is None
        assert session.scalar(select(func.count()).select_from(Blob)) == 0
        everything = repr([e.detail for e in first.events]) + repr(
            [(r.recipient, r.subject, r.raw) for r in first.replies])
        assert "romashka.example" not in everything and "Ошибка" not in everything
        assert session.scalars(select(WebhookDelivery.payload)).one() == "{}"


def test_a_large_first_purge_goes_in_chunks(store: Store) -> None:
    """Thousands of letters due at once: every one purged, a chunk per transaction."""
    desk(store, [letter(n) for n in range(CHUNK + 7)], OLD)
    assert apply(store, raw_days=30, anonymize_days=0, now=NOW).letters == CHUNK + 7
    assert counts(store)["bytes"] == 0
