"""The outbox process of ``run --once``: replies sent beside the drain, from another process.

Against a real SMTP server (aiosmtpd) and SQLite or PostgreSQL. What is checked is what
the daemon relies on: the replies the child sent come back to the parent as ids, each
reply goes out once, a child that dies is reported, and a child whose parent was killed
leaves by itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, text
from support.processes import running
from support.smtp import SmtpSink
from support.waiting import wait_until

from mailroute.config import Config
from mailroute.core.compose import Identity
from mailroute.service.sender import SenderFailed, SenderProcess, SentSummary
from mailroute.store import Store
from mailroute.store.alerts import AlertMail
from mailroute.store.models import OutboxItem

QUEUED_AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # due by any wall clock of these tests
ALERTS = AlertMail(Identity("servicedesk@example.com", "ServiceDesk"), None)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.upgrade()
    yield store
    store.dispose()


def config_for(database_url: str, sink: SmtpSink | None) -> Config:
    smtp = {"host": sink.host, "port": sink.port, "security": "none", "timeout": 5} if sink else {}
    return Config.model_validate({"database": {"url": database_url}, "smtp": smtp,
                                  "logging": {"level": "warning"}})


def queue(store: Store, number: int) -> int:
    raw = (f"From: ServiceDesk <servicedesk@example.com>\r\nTo: c{number}@customer.example\r\n"
           f"Subject: [SD-{number:06d}] test\r\nMessage-ID: <r{number}@example.com>\r\n\r\nhi\r\n"
           ).encode()
    with store.transaction() as session:
        item = OutboxItem(kind="acknowledgement", sender="servicedesk@example.com",
                          recipient=f"c{number}@customer.example",
                          message_id=f"<r{number}@example.com>", subject="s", raw=raw,
                          state="pending", attempts=0, not_before=QUEUED_AT,
                          created_at=QUEUED_AT)
        session.add(item)
        session.flush()
        return item.id


def test_replies_queued_during_a_drain_go_out_from_a_process_of_its_own(
    store: Store, smtp_sink: SmtpSink, database_url: str
) -> None:
    # idle=60: only ``wake`` can start a pass within this test's time
    with SenderProcess(config_for(database_url, smtp_sink), ALERTS, idle=60) as sender:
        first = [queue(store, n) for n in range(1, 4)]
        sender.wake()
        smtp_sink.wait_for(3, timeout=30)
        second = [queue(store, n) for n in range(4, 8)]  # a later batch, a later pass
        sender.wake()
        received = smtp_sink.wait_for(7, timeout=30)

    assert sender.pid is not None and sender.pid != os.getpid()
    assert sender.exitcode == 0
    assert sorted(sender.delivery.sent) == sorted(first + second)
    ids = [mail.message["Message-ID"] for mail in received]
    assert sorted(ids) == sorted(f"<r{n}@example.com>" for n in range(1, 8))  # once each
    with store.transaction() as session:
        states = set(session.scalars(select(OutboxItem.state)))
    assert states == {"sent"}


def test_nothing_is_sent_before_a_wake_or_the_idle_time(
    store: Store, smtp_sink: SmtpSink, database_url: str
) -> None:
    queue(store, 1)
    with SenderProcess(config_for(database_url, smtp_sink), ALERTS, idle=60) as sender:
        time.sleep(1.5)
        early = len(smtp_sink.received())
    # nor by a last pass: a child that never reached the server leaves that to the
    # daemon's own pass after the drain, whose process holds its credentials already
    assert early == 0 and sender.delivery.sent == []


def test_the_child_sends_what_the_last_batch_queued_before_it_leaves(
    store: Store, smtp_sink: SmtpSink, database_url: str
) -> None:
    """The drain's end asks the child for a last pass, on the sessions it has open: the
    replies of the batch filed last (queued after the child's last pass) go out from it,
    not from a pass the daemon makes afterwards over new connections."""
    with SenderProcess(config_for(database_url, smtp_sink), ALERTS, idle=60) as sender:
        earlier = [queue(store, n) for n in range(1, 3)]
        sender.wake()
        smtp_sink.wait_for(2, timeout=30)
        last_batch = [queue(store, n) for n in range(3, 6)]  # filed as the drain ends
    assert sorted(sender.delivery.sent) == sorted(earlier + last_batch)
    assert sender.exitcode == 0
    received = smtp_sink.received()
    assert sorted(mail.message["Message-ID"] for mail in received) == sorted(
        f"<r{n}@example.com>" for n in range(1, 6))
    assert len({mail.peer for mail in received}) == 1  # the session of the earlier pass


def test_a_drain_that_failed_gets_no_last_pass_from_the_child(
    store: Store, smtp_sink: SmtpSink, database_url: str
) -> None:
    """A drain that raised is not finished: the daemon makes no pass after it, and the
    child makes none either; what is queued waits for the next run."""
    queue(store, 1)
    sender = SenderProcess(config_for(database_url, smtp_sink), ALERTS, idle=60)
    with pytest.raises(RuntimeError, match="the drain broke"), sender:
        raise RuntimeError("the drain broke")
    assert sender.delivery.sent == []
    assert smtp_sink.received() == []


def test_a_child_that_dies_is_reported_when_the_drain_ends(
    database_url: str, smtp_sink: SmtpSink
) -> None:
    sender = SenderProcess(config_for(database_url, smtp_sink), ALERTS, idle=60)
    with pytest.raises(SenderFailed, match="ended without a word"), sender:
        assert sender.pid is not None
        os.kill(sender.pid, signal.SIGKILL)
        wait_until(lambda: not running(sender.pid or 0), timeout=10)


_PARENT = """
import sys, time
from mailroute.config import Config
from mailroute.core.compose import Identity
from mailroute.service.sender import SenderProcess
from mailroute.store.alerts import AlertMail
config = Config.model_validate({"database": {"url": sys.argv[1]}})
sender = SenderProcess(config, AlertMail(Identity("a@example.com", "A"), None), idle=600)
sender.__enter__()
print(sender.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_the_child_leaves_when_its_parent_is_killed(sqlite_url: str) -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, sqlite_url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert running(child)
        parent.send_signal(signal.SIGKILL)
        parent.communicate(timeout=20)  # a child holding on would keep stderr open
        wait_until(lambda: not running(child), timeout=10)
        assert not running(child)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_the_child_keeps_its_smtp_session_between_passes(
    store: Store, smtp_sink: SmtpSink, database_url: str
) -> None:
    """Each pass (one a filed batch) used to open its sessions and close them: a
    2,000-letter backlog on PostgreSQL made 148 connections for 1,821 replies."""
    with SenderProcess(config_for(database_url, smtp_sink), ALERTS, idle=60) as sender:
        for first, last in ((1, 3), (4, 7), (8, 9)):
            for number in range(first, last + 1):
                queue(store, number)
            sender.wake()
            smtp_sink.wait_for(last, timeout=30)
    received = smtp_sink.received()
    assert len(sender.delivery.sent) == 9
    assert len({mail.peer for mail in received}) == 1


class _BrokenWake:
    """A wake whose wait raises ``RuntimeError(message)``: the child's passes end at
    their first wait (``seen`` is called first)."""

    def __init__(self, message: str, seen: Callable[[], None] = lambda: None) -> None:
        self.message, self.seen = message, seen

    def wait(self, timeout: float | None = None) -> bool:
        self.seen()
        raise RuntimeError(self.message)

    def clear(self) -> None:
        pass

    def set(self) -> None:
        pass


def _serve_here(sqlite_url: str, wake: _BrokenWake) -> tuple[SentSummary, str | None]:
    """The outbox process's body run in this process until ``wake`` ends it: what it
    sends its parent (the summary and the error)."""
    import multiprocessing
    import threading

    from mailroute.service import sender as sender_module

    store = Store(sqlite_url)
    store.upgrade()
    store.dispose()
    parent_end, child_end = multiprocessing.Pipe(duplex=False)
    sender_module._serve(config_for(sqlite_url, None), ALERTS, 60, None, wake,
                         threading.Event(), threading.Event(), child_end)
    summary, error = parent_end.recv()
    return summary, error


def test_an_error_around_the_passes_is_said_to_the_parent(sqlite_url: str) -> None:
    """A failure outside a pass (here the wait for a wake) ends the child like one in a
    pass: the parent is told, and raises it after the drain."""
    summary, error = _serve_here(sqlite_url, _BrokenWake("the wake is broken"))
    assert error == "RuntimeError: the wake is broken"
    assert summary.sent == []


def test_the_child_freezes_what_it_started_with_before_its_passes(sqlite_url: str) -> None:
    """The child inherits the forkserver's imports and unpickles its config: frozen
    before its passes, its collections never walk them (mailroute.startup). Run here in
    this process, with a wake that ends it at its first wait."""
    import gc

    frozen: list[int] = []
    gc.unfreeze()
    try:
        _summary, error = _serve_here(
            sqlite_url, _BrokenWake("enough", lambda: frozen.append(gc.get_freeze_count())))
    finally:
        gc.unfreeze()
    assert error == "RuntimeError: enough"
    assert frozen and frozen[0] > 0


def test_the_outbox_process_names_its_postgresql_connection(
    postgres_url: str, smtp_sink: SmtpSink
) -> None:
    """An operator looking at pg_stat_activity sees which connection is the outbox's."""
    store = Store(postgres_url)
    store.upgrade()
    try:
        with SenderProcess(config_for(postgres_url, smtp_sink), ALERTS, idle=60) as sender:
            queue(store, 1)
            sender.wake()
            smtp_sink.wait_for(1, timeout=30)
            with store.engine.connect() as conn:
                names = set(conn.execute(text(
                    "SELECT application_name FROM pg_stat_activity"
                    " WHERE datname = current_database()")).scalars())
        assert "mailroute outbox" in names
    finally:
        store.dispose()
