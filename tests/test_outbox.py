"""The outbox against a real SMTP server (aiosmtpd): sent, retried on 4xx, failed on 5xx."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from support.smtp import SmtpSink

from mailroute.config import RepliesConfig, SmtpConfig
from mailroute.outbox import backoff, deliver_due
from mailroute.store import Store
from mailroute.store.models import OutboxItem

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture
def store(database_url: str) -> Store:
    store = Store(database_url)
    store.upgrade()
    yield store
    store.dispose()


def queue(store: Store, number: int = 1, not_before: datetime = NOW) -> int:
    raw = (
        f"From: ServiceDesk <servicedesk@example.com>\r\nTo: c@customer.example\r\n"
        f"Subject: [SD-{number:06d}] test\r\nMessage-ID: <r{number}@example.com>\r\n\r\nhi\r\n"
    ).encode()
    with store.transaction() as session:
        item = OutboxItem(
            kind="acknowledgement", sender="servicedesk@example.com",
            recipient="c@customer.example", message_id=f"<r{number}@example.com>",
            subject="s", raw=raw, state="pending", attempts=0, not_before=not_before,
            created_at=NOW,
        )
        session.add(item)
        session.flush()
        return item.id


def item(store: Store, item_id: int) -> OutboxItem:
    with store.transaction() as session:
        found = session.get(OutboxItem, item_id)
        assert found is not None
        return found


def smtp_for(sink: SmtpSink) -> SmtpConfig:
    return SmtpConfig(host=sink.host, port=sink.port, security="none", timeout=5)


def test_due_reply_is_sent_with_date(store: Store, smtp_sink: SmtpSink) -> None:
    first = queue(store, 1)
    later = queue(store, 2, not_before=NOW + timedelta(hours=1))
    report = deliver_due(store, smtp_for(smtp_sink), RepliesConfig(), NOW)
    assert report.sent == [first]
    (mail,) = smtp_sink.wait_for(1)
    assert mail.rcpt_tos == ("c@customer.example",)
    assert mail.message["Date"] is not None
    assert item(store, first).state == "sent"
    assert item(store, later).state == "pending"


def test_4xx_is_retried_with_backoff_then_sent(store: Store, smtp_sink: SmtpSink) -> None:
    reply = queue(store)
    smtp_sink.reply_code = "451 4.3.0 try again later"
    report = deliver_due(store, smtp_for(smtp_sink), RepliesConfig(retry_initial=60), NOW)
    assert report.retried == [reply]
    waiting = item(store, reply)
    assert waiting.state == "pending" and waiting.attempts == 1
    assert waiting.not_before == NOW + timedelta(seconds=60)
    assert "451" in (waiting.last_error or "")
    smtp_sink.reply_code = None
    assert deliver_due(store, smtp_for(smtp_sink), RepliesConfig(), NOW).sent == []  # not due
    later = NOW + timedelta(seconds=61)
    assert deliver_due(store, smtp_for(smtp_sink), RepliesConfig(), later).sent == [reply]
    assert len(smtp_sink.wait_for(1)) == 1


def test_5xx_is_failed_not_retried(store: Store, smtp_sink: SmtpSink) -> None:
    reply = queue(store)
    smtp_sink.rcpt_reply_code = "550 5.1.1 no such user"
    report = deliver_due(store, smtp_for(smtp_sink), RepliesConfig(), NOW)
    assert report.failed == [reply]
    failed = item(store, reply)
    assert failed.state == "failed" and "550" in (failed.last_error or "")
    assert deliver_due(store, smtp_for(smtp_sink), RepliesConfig(), NOW + timedelta(days=1)
                       ).attempted == 0


def test_server_down_keeps_replies_queued(store: Store, smtp_sink: SmtpSink) -> None:
    reply = queue(store)
    smtp_sink.stop()
    report = deliver_due(store, smtp_for(smtp_sink), RepliesConfig(retry_initial=5), NOW)
    assert report.retried == [reply]
    assert "cannot connect" in (item(store, reply).last_error or "")
    smtp_sink.start()
    report = deliver_due(store, smtp_for(smtp_sink), RepliesConfig(), NOW + timedelta(seconds=6))
    assert report.sent == [reply]


def test_gives_up_after_deadline(store: Store, smtp_sink: SmtpSink) -> None:
    reply = queue(store)
    smtp_sink.stop()
    late = NOW + timedelta(hours=49)
    report = deliver_due(store, smtp_for(smtp_sink), RepliesConfig(retry_deadline_hours=48), late)
    assert report.failed == [reply]
    assert "gave up" in (item(store, reply).last_error or "")


def test_claimed_reply_is_not_sent_twice(store: Store, smtp_sink: SmtpSink) -> None:
    from mailroute.outbox import claim_due

    reply = queue(store)
    lease = timedelta(seconds=120)
    assert [c.id for c in claim_due(store, NOW, lease)] == [reply]
    assert claim_due(store, NOW, lease) == []  # leased to the first claimant
    assert claim_due(store, NOW + timedelta(seconds=119), lease) == []
    assert [c.id for c in claim_due(store, NOW + timedelta(seconds=121), lease)] == [reply]


def test_backoff_grows_and_caps() -> None:
    replies = RepliesConfig(retry_initial=60, retry_max=600)
    assert [backoff(n, replies).total_seconds() for n in (1, 2, 3, 5, 9)] == [
        60, 120, 240, 600, 600]
