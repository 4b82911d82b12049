"""Deciding letters in batches: the same decisions as one letter at a time, faults contained.

A batch is one transaction whose lookups are asked once for all its letters; these
tests feed letters that depend on each other inside one batch (a re-delivery, a
follow-up to a letter of the same batch, one attachment in two letters, one sender
over the reply limit) and compare with deciding them one per transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import select
from support.databases import statements_sent

from mailroute.config import Config
from mailroute.core.letter import ParseLimits
from mailroute.pipeline import decide
from mailroute.pipeline.decide import Outcome, Pipeline, process_letter, process_pending
from mailroute.store import Store
from mailroute.store import repository as repo
from mailroute.store.lookups import BatchLookups
from mailroute.store.models import (
    AttachmentRecord,
    Blob,
    Counter,
    Letter,
    OutboxItem,
    Request,
    RequestEvent,
)

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # a Monday, 11:00 in Moscow
BODY = "Отчёт по продажам не формируется, выдаёт ошибку.\n\nООО «Ромашка»\nрег. номер {n}\n"


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.upgrade()
    yield store
    store.dispose()


def letter(
    n: int,
    *,
    sender: str | None = None,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    attachment: bytes | None = None,
    body: str | None = None,
) -> bytes:
    message = EmailMessage()
    message["From"] = sender or f"user{n}@romashka.example"
    message["To"] = "support@vendor.example"
    message["Subject"] = f"Ошибка в отчёте {n}"
    message["Message-ID"] = message_id or f"<letter{n}@romashka.example>"
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = in_reply_to
    message.set_content(body if body is not None else BODY.format(n=800100200 + n))
    if attachment is not None:
        message.add_attachment(attachment, maintype="image", subtype="png", filename="s.png")
    return bytes(message)


def save(store: Store, letters: list[bytes]) -> list[int]:
    arrivals = [repo.Arrival(str(i), raw, None, NOW) for i, raw in enumerate(letters, 1)]
    with store.transaction() as session:
        return [saved.id for saved, _new in repo.save_letters(session, "m", 1, arrivals, NOW)]


def a_backlog() -> list[bytes]:
    """Letters that lean on each other within one batch."""
    png = b"\x89PNG shared screenshot"
    return [
        letter(1, attachment=png),
        letter(2, attachment=png),  # same content: read from either letter
        letter(1, attachment=png),  # a re-delivery of letter 1: a duplicate
        letter(3, sender="user1@romashka.example", in_reply_to="<letter1@romashka.example>",
               body="Дополняю: ошибка и в отчёте по закупкам."),  # follows letter 1's request
        letter(4, body="Не работает."),  # missing organization and number: a clarification
        letter(5, sender="mailer-daemon@romashka.example"),
    ]


def picture(store: Store, outcomes: list[Outcome]) -> dict[str, Any]:
    """What the database holds, by request number, free of ids and Message-IDs."""
    with store.transaction() as session:
        numbers = dict(session.execute(select(Request.id, Request.number)).all())
        letters = [
            (row.uid, row.state, numbers.get(row.request_id))
            for row in session.scalars(select(Letter).order_by(Letter.uid))
        ]
        replies = sorted(
            (numbers.get(item.request_id), item.kind, item.recipient)
            for item in session.scalars(select(OutboxItem))
        )
        events = sorted(
            (numbers[event.request_id], event.kind, sorted(event.detail))
            for event in session.scalars(select(RequestEvent))
        )
        counter = session.scalar(select(Counter.value).where(Counter.name == "request"))
        uids = dict(session.execute(select(Letter.id, Letter.uid)).all())
        records = list(session.scalars(select(AttachmentRecord)))
        attachments = sorted((uids[record.letter_id], record.filename, record.size)
                             for record in records)
        served = {repo.attachment_content(session, record, ParseLimits()) for record in records}
        blobs = session.query(Blob).count()
    states = [(o.state, o.request, o.reply) for o in outcomes]
    return {"letters": letters, "replies": replies, "events": events, "counter": counter,
            "attachments": attachments, "served": served, "blobs": blobs, "outcomes": states}


def test_a_batch_decides_as_letter_by_letter_would(
    database_url: str, sqlite_url: str, tmp_path: Any
) -> None:
    pipeline = Pipeline.from_config(Config())
    batched = Store(database_url)
    one_by_one = Store(f"sqlite:///{tmp_path / 'one-by-one.db'}")
    try:
        for store in (batched, one_by_one):
            store.upgrade()
        ids = save(batched, a_backlog())
        outcomes = process_pending(batched, pipeline, lambda: NOW)
        assert len(outcomes) == len(ids)

        singles = [process_letter(one_by_one, pipeline, i, NOW)
                   for i in save(one_by_one, a_backlog())]
        expected = picture(one_by_one, [o for o in singles if o is not None])
        got = picture(batched, outcomes)
    finally:
        batched.dispose()
        one_by_one.dispose()

    assert got == expected
    assert [state for _uid, state, _n in got["letters"]] == [
        "processed", "processed", "duplicate", "follow_up", "processed", "ignored"]
    assert got["letters"][2][2] == got["letters"][0][2] == got["letters"][3][2] == "SD-000001"
    assert got["counter"] == 3
    # each letter's file is read from its raw bytes, none is stored a second time
    assert [uid for uid, _name, _size in got["attachments"]][:2] == ["1", "2"]
    assert got["served"] == {b"\x89PNG shared screenshot"} and got["blobs"] == 0
    assert ("SD-000003", "clarification", "user4@romashka.example") in got["replies"]
    assert all("outbox" in keys for _n, kind, keys in got["events"] if kind == "reply_queued")


def test_a_fault_midway_quarantines_that_letter_alone(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_draft = decide._draft

    def draft(pipeline: Pipeline, request: Request, *args: Any, **kwargs: Any) -> Any:
        if request.subject == "Ошибка в отчёте 3":
            raise RuntimeError("a bug meets an odd letter")
        return real_draft(pipeline, request, *args, **kwargs)

    monkeypatch.setattr(decide, "_draft", draft)
    save(store, [letter(n) for n in range(1, 6)])
    outcomes = process_pending(store, Pipeline.from_config(Config()), lambda: NOW)

    assert [(o.state, o.request) for o in outcomes] == [
        ("processed", "SD-000001"), ("processed", "SD-000002"), ("quarantined", None),
        ("processed", "SD-000003"), ("processed", "SD-000004")]
    with store.transaction() as session:
        broken = session.scalars(select(Letter).where(Letter.uid == "3")).one()
        assert broken.state == "quarantined" and broken.stage == "compose"
        assert "a bug meets an odd letter" in (broken.error or "")
        assert broken.request_id is None and broken.attempts == 1
        assert session.query(Request).count() == 4 and session.query(OutboxItem).count() == 4
        assert session.scalar(select(Counter.value).where(Counter.name == "request")) == 4


def test_the_reply_limit_counts_replies_queued_earlier_in_the_batch(store: Store) -> None:
    config = Config.model_validate({"replies": {"per_sender_limit": 3}})
    save(store, [letter(n, sender="robot@partner.example") for n in range(1, 7)])
    outcomes = process_pending(store, Pipeline.from_config(config), lambda: NOW)

    assert [o.reply for o in outcomes] == [
        "acknowledgement", "acknowledgement", "acknowledgement", "limit", None, None]
    with store.transaction() as session:
        suppressed = session.scalars(
            select(RequestEvent).where(RequestEvent.kind == "reply_suppressed")).all()
        assert len(suppressed) == 2 and "notice sent" in suppressed[0].detail["reason"]


def test_a_value_the_database_refuses_quarantines_that_letter_alone(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL refuses a tier longer than its column (SQLite would store it)."""
    store = Store(postgres_url)
    store.upgrade()
    monkeypatch.setattr(Pipeline, "tier_of",
                        lambda self, number: "x" * 100 if number == "800100202" else None)
    try:
        save(store, [letter(n) for n in range(1, 5)])
        outcomes = process_pending(store, Pipeline.from_config(Config()), lambda: NOW)
        with store.transaction() as session:
            broken = session.scalars(select(Letter).where(Letter.uid == "2")).one()
            assert broken.stage == "store" and "refused" in (broken.error or "")
    finally:
        store.dispose()
    assert [(o.state, o.request) for o in outcomes] == [
        ("processed", "SD-000001"), ("quarantined", None),
        ("processed", "SD-000002"), ("processed", "SD-000003")]


def test_batches_hold_a_bounded_number_of_bytes() -> None:
    pending = [(1, 10), (2, decide.BATCH_BYTES), (3, 10), (4, 10)]
    assert list(decide.batches(pending)) == [[1], [2], [3, 4]]
    many = [(i, 1) for i in range(decide.BATCH_LETTERS + 1)]
    assert [len(b) for b in decide.batches(many)] == [decide.BATCH_LETTERS, 1]


def test_an_organization_read_with_doubt_is_asked_to_be_confirmed(store: Store) -> None:
    """A name found only inside a sentence is a guess: the request goes on with it, the
    acknowledgement shows it for the customer to confirm; a name on its own line does not."""
    doubtful = letter(1, body="Здравствуйте! Работаю бухгалтером в ООО «Грин-Парк» (рег. номер "
                              "800 225 909). Не проводится отгрузка, выходит ошибка.\n")
    save(store, [doubtful, letter(2)])
    outcomes = process_pending(store, Pipeline.from_config(Config()), lambda: NOW)

    assert [o.reply for o in outcomes] == ["acknowledgement", "acknowledgement"]
    with store.transaction() as session:
        replies = {item.recipient: item.raw for item in session.scalars(select(OutboxItem))}

    def body(address: str) -> str:
        reply = message_from_bytes(replies[address], policy=policy.default)
        return reply.get_body(("plain",)).get_content()  # type: ignore[union-attr]

    assert "верно ли мы прочли" in body("user1@romashka.example")
    assert "организация: ООО «Грин-Парк»" in body("user1@romashka.example")
    assert "верно ли мы прочли" not in body("user2@romashka.example")


def test_the_members_of_a_thread_the_batch_refers_to_are_read_with_its_lookups(
    store: Store,
) -> None:
    """A request named by the batch's references has its members read once, with the
    batch's other lookups, not by a query for each letter that may continue it."""
    save(store, [letter(1)])
    process_letter(store, Pipeline.from_config(Config()), 1, NOW)
    with store.transaction() as session:
        request = session.scalars(select(Request)).one()
        lookups = BatchLookups(session, message_ids=[], senders=[],
                               references=["<letter1@romashka.example>"], replies_since=NOW)
        unnamed = BatchLookups(session, message_ids=[], references=[], senders=[],
                               replies_since=NOW)
        with statements_sent(store.engine) as statements:
            thread = decide._thread(request, lookups)
            assert statements == []
            asked = decide._thread(request, unnamed)  # not named: the database is asked
            assert len(statements) == 1

    assert thread.members == asked.members == {"user1@romashka.example"}


def test_a_thread_view_counts_letters_the_batch_joined_but_has_not_written(
    store: Store,
) -> None:
    """A batch writes its letters once, at its end (``repo.write_decided``): until then
    the database does not know a letter joined a request, and the thread view learns it
    from the batch's lookups."""
    save(store, [letter(1), letter(2)])
    process_letter(store, Pipeline.from_config(Config()), 1, NOW)
    with store.transaction() as session:
        request = session.scalars(select(Request)).one()
        (joined,) = repo.lock_pending_letters(session, [2], with_raw=False)
        joined.sender, joined.state = "colleague@romashka.example", "follow_up"
        joined.request = request
        lookups = BatchLookups(session, message_ids=[], references=[], senders=[],
                               replies_since=NOW)
        assert "colleague@romashka.example" not in decide._thread(request, lookups).members
        lookups.decided(joined)

        thread = decide._thread(request, lookups)

        assert "colleague@romashka.example" in thread.members
        assert "user1@romashka.example" in thread.members
        stored = session.scalar(select(Letter.request_id).where(Letter.uid == "2"))
        assert stored is None  # nothing was written to build the view
        repo.write_decided(session, [joined])
        assert session.scalar(select(Letter.request_id).where(Letter.uid == "2")) == request.id


def test_a_batch_writes_its_letters_in_one_update_a_kind_and_keeps_sql_null(
    store: Store,
) -> None:
    """Deciding writes a batch's letters back with one executemany UPDATE for those with
    an analysis and one for the rest; a letter without an analysis keeps SQL NULL there
    (the JSON type would write the JSON ``null``, which ``IS NULL`` does not find)."""
    from sqlalchemy import event

    ids = save(store, [letter(1), letter(2), letter(3)])
    updates: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE LETTERS"):
            updates.append(statement)

    with store.transaction() as session:
        first, second, third = repo.lock_pending_letters(session, ids, with_raw=False)
        first.state, first.analysis = "processed", {"kind": "incident"}
        second.state, second.analysis = "processed", {"kind": "zno"}
        third.state, third.ignore_reason = "ignored", "auto-submitted"
        event.listen(store.engine, "before_cursor_execute", record)
        try:
            repo.write_decided(session, [first, second, third])
        finally:
            event.remove(store.engine, "before_cursor_execute", record)
    assert len(updates) == 2
    with store.transaction() as session:
        rows = {row.uid: row for row in session.scalars(select(Letter))}
        no_analysis = session.scalars(select(Letter.uid).where(Letter.analysis.is_(None))).all()
    assert [rows[uid].state for uid in ("1", "2", "3")] == ["processed", "processed", "ignored"]
    assert rows["2"].analysis == {"kind": "zno"} and rows["3"].ignore_reason == "auto-submitted"
    assert no_analysis == ["3"]
