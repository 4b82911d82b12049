"""Adopting a mailbox with history: old letters registered without a reply, no promise of
a time already past, `run --once --no-replies` importing a history.

The mailbox is a real Dovecot with letters APPENDed under old INTERNALDATEs, replies go
to a real aiosmtpd sink, storage is SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from support.configs import write_config
from support.dovecot import ImapAccount
from support.smtp import SmtpSink
from test_end_to_end import mailroute, rows, upgraded

from mailroute.config import Config
from mailroute.ops.tickets import list_rows, show_request
from mailroute.pipeline.decide import Pipeline, process_pending
from mailroute.pipeline.reports import load_facts
from mailroute.pipeline.status import is_breached
from mailroute.store import Store
from mailroute.store import repository as repo
from mailroute.store.models import Letter, OutboxItem, Request, RequestEvent

HISTORY = 240  # letters over two years, none of them recent
RECENT_AGES = (timedelta(minutes=5), timedelta(hours=20), timedelta(days=2, hours=12))
BODY = ("Отчёт по продажам не формируется, выдаёт ошибку.\n\n"
        "ООО «Ромашка»\nрег. номер 800100{n:03d}\n")


def a_letter(n: int, written: datetime) -> bytes:
    """A complete request (organization and number given) from its own sender and domain,
    so no per-sender or per-domain cap hides a reply."""
    message = EmailMessage()
    message["From"] = f"user{n}@client{n}.example"
    message["To"] = "servicedesk@example.com"
    message["Subject"] = f"Ошибка в отчёте {n}"
    message["Message-ID"] = f"<history{n}@client{n}.example>"
    message["Date"] = format_datetime(written)
    message.set_content(BODY.format(n=n))
    return bytes(message)


def fill_history(account: ImapAccount, now: datetime) -> dict[str, datetime]:
    """APPEND the history (two years up to four days ago) and a few recent letters, each
    with its INTERNALDATE; returns each sender's arrival."""
    oldest, newest = now - timedelta(days=730), now - timedelta(days=4)
    step = (newest - oldest) / (HISTORY - 1)
    arrivals = [oldest + step * i for i in range(HISTORY)]
    arrivals += [now - age for age in RECENT_AGES]
    senders = {}
    with account.client() as imap:
        for n, arrived in enumerate(arrivals):
            imap.append("INBOX", a_letter(n, arrived), msg_time=arrived)
            senders[f"user{n}@client{n}.example"] = arrived
    return senders


def test_a_mailbox_with_history_gets_replies_only_for_recent_letters(
    tmp_path: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, database_url: str
) -> None:
    now = datetime.now(UTC)
    arrivals = fill_history(imap_account, now)
    config = upgraded(write_config(tmp_path / "config.toml", account=imap_account,
                                   sink=smtp_sink, database_url=database_url))

    result = mailroute(config, "run", "--once", timeout=300)

    assert result.returncode == 0, result.stderr
    recent = {sender for sender, arrived in arrivals.items() if now - arrived < timedelta(days=3)}
    assert len(recent) == len(RECENT_AGES)
    received = smtp_sink.wait_for(len(recent))
    time.sleep(1)  # a reply to an old letter, if one were sent, would be here by now
    assert {mail.message["To"].addresses[0].addr_spec for mail in received} == recent
    requests = rows(database_url, Request)
    assert len(requests) == len(arrivals)  # every letter registered
    outbox = rows(database_url, OutboxItem)
    assert {item.recipient for item in outbox} == recent  # nothing queued for the old ones
    withheld = [e for e in rows(database_url, RequestEvent) if e.kind == "reply_withheld"]
    assert len(withheld) == HISTORY
    assert {e.detail["reason"] for e in withheld} == {"older than 3d"}
    lines = [line for line in result.stderr.splitlines()
             if "registered without reply (older than 3d)" in line]
    assert len(lines) == 1, result.stderr[-3000:]  # one line per drain, not one per letter
    assert re.search(rf"count={HISTORY}\b", lines[0]), lines[0]
    letters = {letter.sender: letter for letter in rows(database_url, Letter)}
    by_number = {letter.request_id: letter for letter in letters.values()}
    for request in requests:
        arrived = arrivals[by_number[request.id].sender]
        assert abs(by_number[request.id].received_at.replace(tzinfo=UTC) - arrived) < timedelta(
            seconds=2)  # the SLA clock starts at arrival ...
        due = request.first_response_due.replace(tzinfo=UTC)
        if now - arrived > timedelta(days=4):  # ... so an old request is long overdue
            assert due < now - timedelta(days=3)


def test_run_once_no_replies_imports_a_history_and_sends_nothing(
    tmp_path: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, database_url: str
) -> None:
    now = datetime.now(UTC)
    with imap_account.client() as imap:
        for n in range(6):
            arrived = now - timedelta(hours=n)
            imap.append("INBOX", a_letter(n, arrived), msg_time=arrived)
    config = upgraded(write_config(tmp_path / "config.toml", account=imap_account,
                                   sink=smtp_sink, database_url=database_url))

    result = mailroute(config, "run", "--once", "--no-replies")

    assert result.returncode == 0, result.stderr
    assert len(rows(database_url, Request)) == 6
    assert rows(database_url, OutboxItem) == []  # nothing queued ...
    assert smtp_sink.received() == []  # ... nothing sent
    assert imap_account.uids("INBOX") == []


def test_no_replies_needs_once(
    tmp_path: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, sqlite_url: str
) -> None:
    config = upgraded(write_config(tmp_path / "config.toml", account=imap_account,
                                   sink=smtp_sink, database_url=sqlite_url))
    result = mailroute(config, "run", "--no-replies", timeout=30)
    assert result.returncode != 0
    assert "--no-replies: only with --once" in result.stderr


# ------------------------------------------------------------- no promise already broken

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # a Monday, 11:00 in Moscow


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.upgrade()
    yield store
    store.dispose()


def decide_arrivals(store: Store, arrivals: list[datetime], max_age: str = "7d") -> None:
    config = Config.model_validate({"replies": {"window": "always", "max_age": max_age}})
    letters = [repo.Arrival(str(n), a_letter(n, arrived), None, arrived)
               for n, arrived in enumerate(arrivals)]
    with store.transaction() as session:
        repo.save_letters(session, "m", 1, letters, NOW)
    process_pending(store, Pipeline.from_config(config), lambda: NOW)


def test_an_acknowledgement_never_promises_a_time_already_past(store: Store) -> None:
    waited = NOW - timedelta(days=4)  # Thursday 11:00 in Moscow: due the same day
    decide_arrivals(store, [waited, NOW])

    with store.transaction() as session:
        requests = session.scalars(select(Request).order_by(Request.id)).all()
        replies = {item.request_id: item.raw for item in session.scalars(select(OutboxItem))}
        late, fresh = requests
        assert late.first_response_due is not None and late.first_response_due < NOW
        late_text = _body(replies[late.id])
        assert "обрабатывается в первую очередь" in late_text
        assert "Первый ответ специалиста" not in late_text
        assert is_breached(late, NOW)  # counted as breached
        fresh_text = _body(replies[fresh.id])
        assert "Первый ответ специалиста: до" in fresh_text
        assert "в первую очередь" not in fresh_text
        assert not is_breached(fresh, NOW)


def _body(raw: bytes) -> str:
    from email import message_from_bytes, policy

    message = message_from_bytes(raw, policy=policy.default)
    return str(message.get_body().get_content())  # type: ignore[union-attr]


# ------------------------------------------------------- reports and lists: arrival time


def test_reports_and_ticket_lists_count_a_request_from_its_arrival(store: Store) -> None:
    year_ago, last_week = NOW - timedelta(days=400), NOW - timedelta(days=5)
    decide_arrivals(store, [year_ago, last_week], max_age="3d")  # registered at NOW

    listed = {row["number"]: row for row in list_rows(store, now=NOW)}
    assert listed["SD-000001"]["arrived_at"] == year_ago.isoformat()
    assert listed["SD-000002"]["arrived_at"] == last_week.isoformat()
    assert show_request(store, "SD-000001", NOW)["arrived_at"] == year_ago.isoformat()

    this_week = load_facts(store, NOW - timedelta(days=2), NOW + timedelta(hours=1), NOW)
    created = [f.number for f in this_week if f.created_at >= NOW - timedelta(days=2)]
    assert created == []  # the adopted backlog was not created today
    that_week = load_facts(store, NOW - timedelta(days=6), NOW - timedelta(days=4), NOW)
    assert {f.number: f.created_at for f in that_week}["SD-000002"] == last_week


# -------------------------------------------------------------------------------- demo


def test_the_demo_shows_real_due_times_names_ignored_letters_and_how_to_list(
    tmp_path: Path,
) -> None:
    import io

    from mailroute.service.demo import run_demo

    out = io.StringIO()
    assert run_demo(out, keep=str(tmp_path / "kept")) == 0
    text = out.getvalue()
    assert 'ignored: <petrov@polyot-tech.ru> "Автоответ: отпуск": auto_reply' in text
    config = tmp_path / "kept" / "mailroute.toml"
    assert f"mailroute --config {config} tickets list" in text
    listed = mailroute(config, "tickets", "list", timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "SD-000001" in listed.stdout
    store = Store(f"sqlite:///{tmp_path / 'kept' / 'mailroute.db'}")
    try:
        with store.transaction() as session:
            raws = [item.raw for item in session.scalars(select(OutboxItem))
                    if item.kind == "acknowledgement"]
    finally:
        store.dispose()
    year = datetime.now(UTC).year
    for raw in raws:
        body = _body(raw)
        assert "обрабатывается в первую очередь" not in body and "handled first" not in body
        assert re.search(rf"\b({year}|{year + 1})\b", body), body  # a due time of this year
