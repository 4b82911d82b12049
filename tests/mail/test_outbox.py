"""The outbox against a real SMTP server (aiosmtpd): sent, retried on 4xx, failed on 5xx."""

from __future__ import annotations

import threading
import time
from collections import Counter
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from structlog.testing import capture_logs
from support.databases import statements_sent
from support.smtp import DrippingSmtpServer, ReceivedMail, SmtpSink

from mailroute.config import RepliesConfig, SmtpConfig
from mailroute.core.compose import Identity
from mailroute.mail import outbox
from mailroute.mail.outbox import DeliveryReport, backoff, deliver_due
from mailroute.store import Store, alerts
from mailroute.store import repository as repo
from mailroute.store.alerts import AlertMail
from mailroute.store.db import sqlite_file
from mailroute.store.models import Alert, OutboxItem, Request

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
    with store.transaction() as session:  # 5.1.1 at RCPT names the recipient
        assert repo.is_suppressed(session, "c@customer.example")


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
    from mailroute.mail.outbox import claim_due

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


def states(store: Store) -> dict[str, str]:
    """Message-ID -> state of every outbox row."""
    with store.transaction() as session:
        return {row.message_id: row.state for row in session.query(OutboxItem)}


def journaled(store: Store) -> set[int]:
    """Outbox ids in the journals of accepted replies beside a SQLite database."""
    database = sqlite_file(store.url)
    if database is None:
        return set()
    found = set()
    for path in database.parent.glob(database.name + "-accepted.*"):
        with suppress(FileNotFoundError):
            found |= {int(line.split()[0]) for line in path.read_text().splitlines() if line}
    return found


def test_each_reply_is_marked_sent_before_the_next_one_goes(
    store: Store, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At-least-once stays one reply wide: when the server is handed a reply, every reply
    it accepted before is already 'sent' in the database (PostgreSQL: one commit per
    reply, not per batch), or written down in the journal of accepted replies (SQLite,
    whose marks come once a batch: ``mail/accepted``), across claim batches."""

    count = outbox.BATCH + 3
    replies = [queue(store, number) for number in range(1, count + 1)]
    ids = {f"<r{number}@example.com>": replies[number - 1] for number in range(1, count + 1)}
    unmarked: list[tuple[int, list[str]]] = []
    record = smtp_sink._record

    def checking(mail: ReceivedMail) -> None:  # runs in the sink's thread, before its 250
        earlier = [m.message["Message-ID"] for m in smtp_sink.received()]
        known = states(store)
        written = journaled(store)
        late = [message_id for message_id in earlier
                if known[message_id] != "sent" and ids[message_id] not in written]
        if late:
            unmarked.append((len(earlier), late))
        record(mail)

    monkeypatch.setattr(smtp_sink, "_record", checking)
    report = deliver_due(store, smtp_for(smtp_sink), RepliesConfig(), NOW)
    assert report.sent == replies
    assert len(smtp_sink.received()) == count
    assert unmarked == []
    assert set(states(store).values()) == {"sent"}


def test_a_claim_takes_a_bounded_batch_so_a_crash_strands_few(
    store: Store, smtp_sink: SmtpSink
) -> None:
    """A process that claimed and died strands at most BATCH replies, for one lease."""
    from mailroute.mail.outbox import BATCH, claim_due

    replies = [queue(store, number) for number in range(1, BATCH + 4)]
    lease = timedelta(seconds=120)
    stranded = claim_due(store, NOW, lease)  # then the claimant is SIGKILLed
    assert [c.id for c in stranded] == replies[:BATCH]
    report = deliver_due(store, smtp_for(smtp_sink), RepliesConfig(claim_timeout=120), NOW)
    assert report.sent == replies[BATCH:]
    later = NOW + lease + timedelta(seconds=1)
    report = deliver_due(store, smtp_for(smtp_sink), RepliesConfig(), later)
    assert report.sent == replies[:BATCH]
    assert len(smtp_sink.received()) == len(replies)


def test_one_smtp_session_serves_every_batch(store: Store, smtp_sink: SmtpSink) -> None:
    """Replies of several claim batches go over one connection (one EHLO, one QUIT)."""

    for number in range(1, 2 * outbox.BATCH + 2):
        queue(store, number)
    with pytest.MonkeyPatch.context() as patch:
        connects = counting_connects(patch)
        report = deliver_due(store, smtp_for(smtp_sink), RepliesConfig(), NOW)
    assert len(report.sent) == 2 * outbox.BATCH + 1
    assert len(connects) == 1


def counting_connects(patch: pytest.MonkeyPatch) -> list[str]:
    """Record every SMTP connection the outbox opens."""

    connects: list[str] = []
    real_connect = outbox._connect

    async def counting(smtp: SmtpConfig) -> object:
        connects.append(smtp.host)
        return await real_connect(smtp)

    patch.setattr(outbox, "_connect", counting)
    return connects


def test_a_backlog_goes_over_several_sessions_each_marking_at_once(
    store: Store, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``sessions`` a backlog opens up to that many connections; a reply is marked
    sent (SQLite: written down in the journal) before its session sends the next, so
    when the server is handed one, fewer than ``sessions`` replies it accepted earlier
    are neither."""
    from mailroute.mail.outbox import BATCH, SESSIONS

    count = SESSIONS * BATCH + 5
    replies = [queue(store, number) for number in range(1, count + 1)]
    ids = {f"<r{number}@example.com>": replies[number - 1] for number in range(1, count + 1)}
    most_unmarked = [0]
    record = smtp_sink._record

    def checking(mail: ReceivedMail) -> None:
        known = states(store)
        written = journaled(store)
        earlier = [m.message["Message-ID"] for m in smtp_sink.received()]
        late = sum(1 for message_id in earlier
                   if known[message_id] != "sent" and ids[message_id] not in written)
        most_unmarked[0] = max(most_unmarked[0], late)
        record(mail)

    monkeypatch.setattr(smtp_sink, "_record", checking)
    connects = counting_connects(monkeypatch)
    report = deliver_due(store, smtp_for(smtp_sink), RepliesConfig(), NOW, sessions=SESSIONS)
    assert sorted(report.sent) == replies
    assert len(connects) == SESSIONS
    assert len(smtp_sink.received()) == count
    assert most_unmarked[0] < SESSIONS
    assert set(states(store).values()) == {"sent"}


def test_a_few_replies_use_one_session(
    store: Store, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailroute.mail.outbox import BATCH, SESSIONS

    replies = [queue(store, number) for number in range(1, BATCH)]
    connects = counting_connects(monkeypatch)
    report = deliver_due(store, smtp_for(smtp_sink), RepliesConfig(), NOW, sessions=SESSIONS)
    assert report.sent == replies
    assert len(connects) == 1


def test_an_error_stops_every_session_after_the_reply_in_hand(
    store: Store, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database fails marking one reply: the run raises once every session stopped;
    that reply is remembered, none is cut off mid-send, the rest wait for their lease."""
    from mailroute.errors import TransientError

    count = 2 * outbox.SESSIONS * outbox.BATCH  # more than the sessions claim at once
    for number in range(1, count + 1):
        queue(store, number)
    # SQLite marks a batch's accepted replies together (each written down in the journal
    # first): there the second batch mark fails, with up to a batch of replies in it.
    name = "_mark_all_sent" if store.is_sqlite else "_mark_sent"
    failing_at = 2 if store.is_sqlite else 5
    real_mark = getattr(outbox, name)
    marks = {"count": 0}

    def failing(*args: Any, **kwargs: Any) -> bool | None:
        marks["count"] += 1
        if marks["count"] == failing_at:
            raise TransientError("database unavailable: test")
        return real_mark(*args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(outbox, name, failing)
    with pytest.raises(TransientError):
        deliver_due(store, smtp_for(smtp_sink), RepliesConfig(), NOW, sessions=outbox.SESSIONS)
    received = {m.message["Message-ID"] for m in smtp_sink.received()}
    known = states(store)
    sent = {message_id for message_id, state in known.items() if state == "sent"}
    if store.is_sqlite:  # the failed batch's replies, remembered (and in the journal)
        assert 1 <= len(received) - len(sent) <= outbox.BATCH
    else:
        assert len(received) - len(sent) == 1  # the one remembered in _ACCEPTED
    assert len(received) < count
    monkeypatch.setattr(outbox, name, real_mark)
    later = NOW + timedelta(seconds=RepliesConfig().claim_timeout + 1)
    report = deliver_due(store, smtp_for(smtp_sink), RepliesConfig(), later,
                         sessions=outbox.SESSIONS)
    assert len(report.sent) == count - len(received)
    assert set(states(store).values()) == {"sent"}
    assert len(smtp_sink.received()) == count  # none twice


def test_a_dropped_database_connection_is_replaced_between_replies(
    postgres_url: str, smtp_sink: SmtpSink
) -> None:
    """The run keeps one database connection; if the server drops it while SMTP talks
    (PostgreSQL restarted), the next write reconnects, as the pool's pre-ping would.
    PostgreSQL only: a SQLite file has no server to drop the connection."""
    from sqlalchemy import text


    store = Store(postgres_url)
    store.upgrade()
    try:
        first, second = queue(store, 1), queue(store, 2)
        real_sendmail = outbox._sendmail
        dropped: list[bool] = []

        async def drop_then_send(client: object, smtp: SmtpConfig, sender: str,
                                 recipient: str, raw: bytes) -> None:
            if b"<r2@example.com>" in raw and not dropped:  # kill the run's connection
                with store.engine.connect() as admin:
                    dropped.extend(admin.execute(text(
                        "select pg_terminate_backend(pid) from pg_stat_activity "
                        "where datname = current_database() and pid <> pg_backend_pid()"
                    )).scalars().all())
            await real_sendmail(client, smtp, sender, recipient, raw)  # type: ignore[arg-type]

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(outbox, "_sendmail", drop_then_send)
            report = deliver_due(store, smtp_for(smtp_sink), RepliesConfig(), NOW)
        assert dropped and all(dropped)
        assert report.sent == [first, second]
        assert item(store, second).state == "sent"
    finally:
        store.dispose()


def test_an_unreachable_database_is_transient(smtp_sink: SmtpSink) -> None:
    from support.services import free_port

    from mailroute.errors import TransientError

    store = Store(f"postgresql+psycopg://mailroute@127.0.0.1:{free_port()}/nowhere")
    try:
        with pytest.raises(TransientError, match="database unavailable"):
            deliver_due(store, smtp_for(smtp_sink), RepliesConfig(), NOW)
    finally:
        store.dispose()
    assert smtp_sink.received() == []


# ------------------------------------------------------------ two instances, a slow server


def queue_many(store: Store, count: int, due: datetime) -> list[int]:
    """``count`` replies, each to its own customer, due at ``due``."""
    ids = []
    with store.transaction() as session:
        for number in range(1, count + 1):
            recipient = f"c{number}@customer.example"
            raw = (f"From: servicedesk@example.com\r\nTo: {recipient}\r\nSubject: [SD-{number:06d}]"
                   f"\r\nMessage-ID: <m{number}@example.com>\r\n\r\nhi\r\n").encode()
            row = OutboxItem(
                kind="acknowledgement", sender="servicedesk@example.com", recipient=recipient,
                message_id=f"<m{number}@example.com>", subject="s", raw=raw, state="pending",
                attempts=0, not_before=due, created_at=due,
            )
            session.add(row)
            session.flush()
            ids.append(row.id)
    return ids


def pending_left(store: Store) -> int:
    with store.transaction() as session:
        return len(session.scalars(select(OutboxItem.id).where(OutboxItem.state == "pending"))
                   .all())


def test_two_instances_behind_a_slow_server_send_each_reply_once(
    database_url: str, smtp_sink: SmtpSink
) -> None:
    """Each instance claims a batch of 10 whose sending (0.6 s a reply) outlasts the lease
    (3 s): the idle instance claims the lapsed rest of the other's third batch, so the
    holder must check its claim before each send. 30 replies, two instances with stores
    of their own: 30 delivered, each once."""
    count = 30
    first, second = Store(database_url), Store(database_url)
    first.upgrade()
    queue_many(first, count, datetime.now(UTC) - timedelta(minutes=1))
    smtp_sink.data_delay = 0.6
    smtp = SmtpConfig(host=smtp_sink.host, port=smtp_sink.port, security="none", timeout=1)
    replies = RepliesConfig(claim_timeout=0.5, retry_initial=0.2)
    errors: list[BaseException] = []

    def instance(store: Store) -> None:
        try:
            deadline = time.monotonic() + 120
            while pending_left(store) and time.monotonic() < deadline:
                deliver_due(store, smtp, replies, datetime.now(UTC))
                time.sleep(0.05)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=instance, args=(store,)) for store in (first, second)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(150)
    finally:
        first.dispose()
        second.dispose()
    assert not errors, errors
    copies = Counter(mail.message["Message-ID"] for mail in smtp_sink.received())
    assert len(copies) == count
    assert sum(copies.values()) == count, f"{sum(copies.values())} copies of {count} replies"


# ------------------------------------------------------------- a server that drips


def test_a_dripping_server_cannot_hold_the_outbox_past_the_timeout(sqlite_url: str) -> None:
    """Every answer takes 0.7 s, a byte at a time: within the client's per-answer timeout
    (1 s), so greeting, EHLO and login took 2.1 s and more. Connect, greeting and login
    now share one deadline (``timeout``): the client gives up before it logs in, the
    reply waits for its retry, and the error names the server and what to check."""
    store = Store(sqlite_url)
    store.upgrade()
    reply = queue(store)
    outcome: list[DeliveryReport] = []
    with DrippingSmtpServer(answer_seconds=0.7) as server:
        smtp = SmtpConfig(host=server.host, port=server.port, security="none", timeout=1,
                          username="desk", password="secret")
        runner = threading.Thread(
            target=lambda: outcome.append(deliver_due(store, smtp, RepliesConfig(), NOW)),
            daemon=True,
        )
        runner.start()
        runner.join(60)
        assert not runner.is_alive(), "the outbox was still connecting after 60 s"
        commands = list(server.commands)
    try:
        assert "AUTH" not in commands, commands
        (report,) = outcome
        assert report.retried == [reply] and report.sent == []
        error = item(store, reply).last_error or ""
        assert f"127.0.0.1:{server.port}" in error and "within 1 s" in error, error
    finally:
        store.dispose()


def test_a_server_that_drips_a_messages_answers_cannot_hold_a_reply_past_its_deadline(
    sqlite_url: str,
) -> None:
    """Greeting and EHLO come at once; each answer from MAIL on takes 0.7 s, within the
    timeout (1 s) of any one answer. The four answers of one message would take 2.8 s,
    past the deadline the whole message has (two timeouts): the send is given up at 2 s,
    the session dropped, and the reply waits for its retry. The client keeps no timeout
    of its own per answer, so this deadline is the only guard a message has."""
    store = Store(sqlite_url)
    store.upgrade()
    reply = queue(store)
    with DrippingSmtpServer(answer_seconds=0.7, slow_from=b"MAIL") as server:
        smtp = SmtpConfig(host=server.host, port=server.port, security="none", timeout=1)
        started = time.monotonic()
        report = deliver_due(store, smtp, RepliesConfig(), NOW)
        took = time.monotonic() - started
        commands = list(server.commands)
    try:
        assert commands[:3] == ["EHLO", "MAIL", "RCPT"], commands
        assert report.retried == [reply] and report.sent == [], report
        assert item(store, reply).last_error == "SMTP send timed out"
        assert took < 30, f"the outbox was held {took:.0f} s"
    finally:
        store.dispose()


# ------------------------------------------------------- whose fault a 5xx is


DESK = AlertMail(Identity("servicedesk@example.com", "ServiceDesk"), "duty@example.com")


def suppressed(store: Store) -> list[str]:
    with store.transaction() as session:
        return [row.address for row in repo.list_suppressions(session)]


def relay_alert(store: Store) -> Alert | None:
    with store.transaction() as session:
        return session.get(Alert, alerts.SMTP_RELAY)


def alert_mails(store: Store) -> list[OutboxItem]:
    with store.transaction() as session:
        return list(session.scalars(select(OutboxItem).where(OutboxItem.kind == "alert")))


@pytest.mark.parametrize(
    ("stage", "answer"),
    [("rcpt", "554 5.7.1 relay access denied"), ("data", "554 5.6.0 content rejected"),
     ("rcpt", "550 relay not permitted")],
    ids=["policy-at-rcpt", "content-at-data", "no-enhanced-code"],
)
def test_a_refusal_for_the_desks_reasons_suppresses_nobody_and_alerts_once(
    store: Store, smtp_sink: SmtpSink, stage: str, answer: str
) -> None:
    """A relay refusing for policy or content, or without saying the recipient is bad,
    says nothing about the customer: 5 replies fail (retryable), no address is
    suppressed, one alert opens with one mail to the escalation address, however many
    runs the window lasts; the first accepted reply afterwards clears it."""
    ids = queue_many(store, 5, NOW)
    setattr(smtp_sink, "rcpt_reply_code" if stage == "rcpt" else "reply_code", answer)
    for minute in range(3):  # the refusals go on: the alert mail is refused too
        deliver_due(store, smtp_for(smtp_sink), RepliesConfig(), NOW + timedelta(minutes=minute),
                    alert_mail=DESK)
    assert {item(store, reply).state for reply in ids} == {"failed"}
    assert suppressed(store) == []
    alert = relay_alert(store)
    assert alert is not None and alert.cleared_at is None and answer in alert.detail
    assert len(alert_mails(store)) == 1
    smtp_sink.rcpt_reply_code = smtp_sink.reply_code = None
    queue(store, 99)
    report = deliver_due(store, smtp_for(smtp_sink), RepliesConfig(), NOW + timedelta(hours=1),
                         alert_mail=DESK)
    assert len(report.sent) == 1
    cleared = relay_alert(store)
    assert cleared is not None and cleared.cleared_at is not None


def test_one_unknown_user_is_suppressed_but_a_code_refusing_many_is_the_servers(
    store: Store, smtp_sink: SmtpSink
) -> None:
    """5.1.1 at RCPT for one recipient suppresses that one; the same code for every
    recipient of a run (a broken recipient check) suppresses nobody and alerts."""
    queue_many(store, 1, NOW)
    smtp_sink.rcpt_reply_code = "550 5.1.1 no such user"
    deliver_due(store, smtp_for(smtp_sink), RepliesConfig(), NOW, alert_mail=DESK)
    assert suppressed(store) == ["c1@customer.example"]
    assert relay_alert(store) is None
    with store.transaction() as session:
        session.execute(update(OutboxItem).values(state="sent"))
    for number in range(2, 7):
        queue(store, number)
        with store.transaction() as session:
            session.execute(update(OutboxItem).where(OutboxItem.message_id ==
                                                     f"<r{number}@example.com>")
                            .values(recipient=f"d{number}@customer.example"))
    deliver_due(store, smtp_for(smtp_sink), RepliesConfig(), NOW, alert_mail=DESK)
    assert suppressed(store) == ["c1@customer.example"]
    alert = relay_alert(store)
    assert alert is not None and "5 recipients refused" in alert.detail


# ------------------------------------------------- the daemon's outbox job and status


def daemon_for(database_url: str, sink: SmtpSink) -> Any:
    from mailroute.config import Config
    from mailroute.service.daemon import Daemon

    config = Config.model_validate({
        "mailbox": {"maildir": "/nonexistent"},
        "smtp": {"host": sink.host, "port": sink.port, "security": "none", "timeout": 5},
        "database": {"url": database_url}, "replies": {"window": "always"},
    })
    store = Store(database_url)
    store.upgrade()
    return Daemon(config, store, clock=lambda: NOW)


def test_status_clears_the_smtp_error_after_the_first_accepted_reply(
    database_url: str, smtp_sink: SmtpSink
) -> None:
    """SMTP was down at start-up (recorded for `status`); once a reply is accepted the
    error is over, even if no mailbox poll comes after it (IDLE waits a long time)."""
    from mailroute.ops.health import check_health

    daemon = daemon_for(database_url, smtp_sink)
    try:
        with daemon.store.transaction() as session:
            repo.record_poll(session, "INBOX", 1, NOW - timedelta(seconds=5))
        smtp_sink.stop()
        daemon.announce_ready()  # SMTP unreachable: recorded, status unhealthy
        assert any("smtp" in p for p in check_health(daemon.store, daemon.config.health,
                                                    NOW).problems)
        smtp_sink.start()
        queue(daemon.store)
        assert daemon.send_due().sent
        health = check_health(daemon.store, daemon.config.health, NOW)
        assert health.problems == [] and health.last_error is None, health.problems
    finally:
        daemon.store.dispose()


def test_a_broken_database_is_logged_once_per_outage_by_the_outbox_job(
    sqlite_url: str, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    """Three outbox runs against a database file that is not a database: one error line,
    no traceback; then one 'recovered' line when it is readable again."""
    daemon = daemon_for(sqlite_url, smtp_sink)
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    good = path.read_bytes()
    try:
        with capture_logs() as logged:
            daemon.store.engine.dispose()
            path.write_bytes(b"this is not a database" * 100)
            for _ in range(3):
                daemon._outbox_job()
            daemon.store.engine.dispose()
            path.write_bytes(good)
            daemon._outbox_job()
            daemon._outbox_job()
    finally:
        daemon.store.dispose()
    events = [(e["event"], e.get("exc_info")) for e in logged if e["log_level"] != "debug"
              and e["event"] in ("outbox failing", "outbox recovered", "outbox error")]
    assert events == [("outbox failing", None), ("outbox recovered", None)], logged


@pytest.mark.parametrize("trouble", ["stopped", "451"])
def test_a_run_that_meets_only_smtp_trouble_opens_the_smtp_down_alert(
    store: Store, smtp_sink: SmtpSink, trouble: str
) -> None:
    """No connection, or only 4xx: `status` must say so now, not when the replies' retries
    run out; the first reply accepted clears it."""
    from mailroute.config import HealthConfig
    from mailroute.ops.health import check_health

    queue(store, 1)
    smtp = smtp_for(smtp_sink)
    if trouble == "stopped":
        smtp_sink.stop()
    else:
        smtp_sink.reply_code = "451 4.3.0 try again later"
    report = deliver_due(store, smtp, RepliesConfig(retry_initial=1), NOW)
    assert report.sent == [] and report.smtp_errors
    health = check_health(store, HealthConfig(), NOW)
    (problem,) = [p for p in health.problems if "SMTP" in p]
    assert f"SMTP {smtp_sink.host}:{smtp_sink.port} is failing" in problem
    assert ("cannot connect" if trouble == "stopped" else "451") in problem
    if trouble == "stopped":
        smtp_sink.start()
    else:
        smtp_sink.reply_code = None
    later = deliver_due(store, smtp, RepliesConfig(retry_initial=1), NOW + timedelta(minutes=1))
    assert len(later.sent) == 1
    health = check_health(store, HealthConfig(), NOW + timedelta(minutes=1))
    assert not [p for p in health.problems if "SMTP" in p]


def _durability(conn: Any) -> tuple[object, str]:
    """(the driver connection, its commit durability setting)."""
    driver = conn.connection.driver_connection
    if conn.dialect.name == "sqlite":
        return driver, {1: "NORMAL", 2: "FULL"}.get(
            conn.exec_driver_sql("PRAGMA synchronous").scalar(), "?")
    return driver, str(conn.exec_driver_sql("SHOW synchronous_commit").scalar())


def test_bookkeeping_commits_do_not_wait_for_the_disk_and_the_pool_gets_them_back(
    store: Store,
) -> None:
    """Marks and claims commit without waiting for the disk (a lost one only resends a
    reply); the connection goes back to the pool with the store's usual durability."""
    books = outbox._Books(store)
    driver, during = books.run(_durability)
    books.close()
    with store.engine.connect() as conn:
        again, after = _durability(conn)
        conn.rollback()

    assert again is driver  # the same connection, back from the pool
    assert during == ("NORMAL" if store.is_sqlite else "off")
    assert after == ("FULL" if store.is_sqlite else "on")


def passes_with_kept_sessions(store: Store, sink: SmtpSink, batches: list[int],
                              between: Any = None) -> list[DeliveryReport]:
    """One outbox pass per batch size, in one event loop sharing ``KeptSessions``
    (as the outbox process of ``run --once`` does); ``between`` runs after each pass."""
    import asyncio

    from mailroute.mail.outbox import SESSIONS, KeptSessions, deliver_due_async

    numbers = iter(range(1, 1000))

    async def passes() -> list[DeliveryReport]:
        kept = KeptSessions(smtp_for(sink))
        reports = []
        try:
            for size in batches:
                for _ in range(size):
                    queue(store, next(numbers))
                reports.append(await deliver_due_async(
                    store, smtp_for(sink), RepliesConfig(), NOW, SESSIONS, kept=kept))
                if between is not None:
                    between()
                    await asyncio.sleep(0.2)  # the loop sees a dropped connection's EOF
        finally:
            await kept.close()
        return reports

    return asyncio.run(passes())


def test_kept_sessions_carry_replies_of_several_passes_over_one_connection(
    store: Store, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    connects = counting_connects(monkeypatch)
    reports = passes_with_kept_sessions(store, smtp_sink, [3, 4, 2])
    assert [len(report.sent) for report in reports] == [3, 4, 2]
    assert len(connects) == 1
    assert len({mail.peer for mail in smtp_sink.wait_for(9)}) == 1


def test_a_kept_session_idle_too_long_is_closed_not_used(
    store: Store, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "KEPT_IDLE_SECONDS", 0.0)
    connects = counting_connects(monkeypatch)
    reports = passes_with_kept_sessions(store, smtp_sink, [2, 2])
    assert [len(report.sent) for report in reports] == [2, 2]
    assert len(connects) == 2


def test_a_kept_session_the_server_dropped_is_opened_again_without_a_retry(
    store: Store, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server restarted between passes drops the kept connection: the next pass opens
    a new one and sends at once (a reply sent into the dead one would wait for a retry)."""

    def restart() -> None:
        smtp_sink.stop()
        smtp_sink.start()

    connects = counting_connects(monkeypatch)
    reports = passes_with_kept_sessions(store, smtp_sink, [2, 2], between=restart)
    assert [len(report.sent) for report in reports] == [2, 2]
    assert not any(report.retried or report.smtp_errors for report in reports)
    assert len(connects) == 2
    assert set(states(store).values()) == {"sent"}


def test_on_postgresql_a_mark_and_the_next_claims_renewal_are_one_round_trip(
    store: Store,
) -> None:
    """One statement in autocommit (a data-modifying WITH) instead of BEGIN, two UPDATEs
    and COMMIT: the outbox's CPU a reply on PostgreSQL was mostly its round trips."""
    first, second = queue(store, 1), queue(store, 2)
    books = outbox._Books(store)
    try:
        lease = outbox._Lease.start(NOW, RepliesConfig(claim_timeout=120), SmtpConfig())
        claimed = outbox._claim(books, NOW, lease.length, 2, lease.owner, lease.clock())
        with statements_sent(store.engine) as statements:
            ours = outbox._record_sent(books, claimed[0], NOW, DeliveryReport(), claimed[1],
                                       lease)
    finally:
        books.close()

    assert ours == {second: True}
    assert item(store, first).state == "sent"
    if store.is_sqlite:  # no data-modifying WITH: two UPDATEs in one transaction
        assert [s.split()[0] for s in statements] == ["BEGIN", "UPDATE", "UPDATE"]
    else:
        assert len(statements) == 1 and statements[0].lstrip().startswith("WITH")


def test_a_claim_is_one_round_trip_on_postgresql_and_in_order(store: Store) -> None:
    """On PostgreSQL the claim is one statement in autocommit (pick, lease and read in a
    WITH) instead of BEGIN, SELECT, UPDATE and COMMIT; on both engines the claimed
    replies come back in the order they are due, with their request's number."""
    later = queue(store, 1, NOW - timedelta(minutes=1))
    earlier = queue(store, 2, NOW - timedelta(minutes=5))
    with store.transaction() as session:
        request = Request(number="SD-000002", status="new", request_type="incident",
                          priority="normal", requester="c@customer.example", language="ru",
                          created_at=NOW, updated_at=NOW, clarifications=0)
        session.add(request)
        session.flush()
        session.execute(update(OutboxItem).where(OutboxItem.id == earlier)
                        .values(request_id=request.id))
    books = outbox._Books(store)
    try:
        with statements_sent(store.engine) as sent:
            claimed = outbox._claim(books, NOW, timedelta(seconds=120), 10, "this run", NOW)
    finally:
        books.close()

    assert [c.id for c in claimed] == [earlier, later]
    assert [c.request for c in claimed] == ["SD-000002", None]
    assert {item(store, reply).claimed_by for reply in (earlier, later)} == {"this run"}
    # the books' first use of their connection sets its commits lazy (_LAZY), once
    statements = [s for s in sent if not s.startswith("SET ")]
    if store.is_sqlite:
        assert [s.split()[0] for s in statements] == ["BEGIN", "SELECT", "UPDATE"]
    else:
        assert len(statements) == 1 and statements[0].lstrip().startswith("WITH")


def test_on_postgresql_a_claim_passes_over_a_row_another_claim_holds(
    postgres_url: str,
) -> None:
    """Another run's claim still in flight (its row locked) is skipped, not waited for
    and not taken: SKIP LOCKED inside the one-statement claim."""
    store = Store(postgres_url)
    store.upgrade()
    try:
        held, free = queue(store, 1), queue(store, 2)
        with store.engine.connect() as other:
            other.execute(select(OutboxItem.id).where(OutboxItem.id == held)
                          .with_for_update())
            books = outbox._Books(store)
            try:
                started = time.monotonic()
                claimed = outbox._claim(books, NOW, timedelta(seconds=120), 10, "this run",
                                        NOW)
                waited = time.monotonic() - started
            finally:
                books.close()
            other.rollback()
        assert [c.id for c in claimed] == [free]
        assert waited < 5
        assert item(store, held).claimed_by is None
    finally:
        store.dispose()


def test_a_mark_renews_the_next_claim_only_while_it_is_still_this_runs(store: Store) -> None:
    """The statement that marks a reply sent also renews the claim on the next one: it
    says whether that claim is still ours, and never touches one another run took."""
    first, second, third = (queue(store, number) for number in (1, 2, 3))
    books = outbox._Books(store)
    try:
        lease = outbox._Lease.start(NOW, RepliesConfig(claim_timeout=120), SmtpConfig())
        claimed = outbox._claim(books, NOW, lease.length, 3, lease.owner, lease.clock())
        assert [c.id for c in claimed] == [first, second, third]
        other_until = NOW + timedelta(hours=5)
        with store.transaction() as session:  # the third's claim lapsed and another took it
            session.execute(update(OutboxItem).where(OutboxItem.id == third)
                            .values(claimed_by="another run", claimed_until=other_until))

        ours = outbox._record_sent(books, claimed[0], NOW, DeliveryReport(), claimed[1], lease)
        theirs = outbox._record_sent(books, claimed[1], NOW, DeliveryReport(), claimed[2], lease)
    finally:
        books.close()

    assert ours == {second: True}
    assert theirs == {third: False}
    sent, renewed_then_sent, taken = item(store, first), item(store, second), item(store, third)
    assert (sent.state, sent.attempts, sent.claimed_until) == ("sent", 1, None)
    assert renewed_then_sent.state == "sent" and renewed_then_sent.last_error is None
    assert (taken.state, taken.claimed_by) == ("pending", "another run")
    assert taken.claimed_until is not None
    assert taken.claimed_until.replace(tzinfo=UTC) == other_until
