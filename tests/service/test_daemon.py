"""`mailroute run` as a daemon: IDLE latency, systemd notifications, SIGHUP, SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.configs import sample_letters, write_config
from support.dovecot import ImapAccount
from support.smtp import ReceivedMail, SmtpSink
from support.waiting import wait_until

MAILROUTE = [sys.executable, "-m", "mailroute"]


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    yield sock
    sock.close()


def wait_notification(sock: socket.socket, wanted: str, timeout: float = 20) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
        if any(wanted in message for message in seen):
            return seen
    raise AssertionError(f"no {wanted!r} from the daemon within {timeout} s; got {seen}")


def start(config: Path, notify: socket.socket) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NOTIFY_SOCKET": notify.getsockname(), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([*MAILROUTE, "--config", str(config), "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def replies(daemon: subprocess.Popen[bytes], sink: SmtpSink, count: int) -> list[ReceivedMail]:
    """The sink's messages once ``count`` arrived; else the daemon is stopped and its log
    is the failure's message (what it did meanwhile)."""
    try:
        return sink.wait_for(count, timeout=15)
    except AssertionError as exc:
        daemon.send_signal(signal.SIGTERM)
        log = daemon.communicate(timeout=15)[1].decode()
        raise AssertionError(f"{exc}\n--- daemon log (last 8000 characters):\n"
                             f"{log[-8000:]}") from None


@pytest.fixture
def daemon_config(tmp_path: Path, imap_account: ImapAccount, smtp_sink: SmtpSink,
                  sqlite_url: str) -> Path:
    config = write_config(tmp_path / "config.toml", account=imap_account, sink=smtp_sink,
                          database_url=sqlite_url)
    result = subprocess.run([*MAILROUTE, "--config", str(config), "db", "upgrade"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return config


def test_daemon_answers_new_mail_via_idle_and_stops_on_sigterm(
    daemon_config: Path, imap_account: ImapAccount, smtp_sink: SmtpSink,
    notify_socket: socket.socket,
) -> None:
    daemon = start(daemon_config, notify_socket)
    try:
        wait_notification(notify_socket, "READY=1")
        appended = time.monotonic()
        imap_account.append(sample_letters()[0])
        (reply,) = replies(daemon, smtp_sink, 1)
        latency = time.monotonic() - appended
        assert reply.message["X-Mailroute-Request"] == "SD-000001"
        assert latency < 10  # woken by IDLE; the poll fallback would be slower
        stopping = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=15)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    assert daemon.returncode == 0
    assert time.monotonic() - stopping < 10
    log = stderr.decode()
    assert "request created" in log and "daemon stopped" in log
    assert imap_account.uids("INBOX") == []


def test_sighup_rejects_a_bad_config_and_applies_a_good_one(
    daemon_config: Path, imap_account: ImapAccount, smtp_sink: SmtpSink,
    notify_socket: socket.socket,
) -> None:
    good = daemon_config.read_text(encoding="utf-8")
    daemon = start(daemon_config, notify_socket)
    try:
        wait_notification(notify_socket, "READY=1")
        assert 'window = "always"' in good
        daemon_config.write_text(good.replace('window = "always"', 'window = "sometimes"'),
                                 encoding="utf-8")
        daemon.send_signal(signal.SIGHUP)
        wait_notification(notify_socket, "READY=1")
        assert daemon.poll() is None  # still running on the old config
        daemon_config.write_text(
            good.replace('from_name = "ServiceDesk"', 'from_name = "Support Line"'),
            encoding="utf-8",
        )
        daemon.send_signal(signal.SIGHUP)
        wait_notification(notify_socket, "READY=1")
        imap_account.append(sample_letters()[0])
        (reply,) = replies(daemon, smtp_sink, 1)
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=15)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    log = stderr.decode()
    assert "config reload rejected" in log and "replies.window" in log
    assert "config reloaded" in log
    assert reply.message["From"].addresses[0].display_name == "Support Line"


def test_signals_landing_at_any_moment_never_hang_the_daemon(
    daemon_config: Path, notify_socket: socket.socket,
) -> None:
    """A burst of SIGHUPs while the main thread pings the watchdog 1,000 times a second.

    A reload run inside the signal handler could interrupt a ping holding the
    notifier's lock and wait for that lock forever: the daemon then neither reloaded,
    pinged nor stopped. Every signal must be acted on, and SIGTERM must still stop it.
    """
    notices: list[str] = []
    listening = threading.Event()
    listening.set()

    def listen() -> None:  # a full notification queue must not be what blocks the daemon
        while listening.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                notices.append(notify_socket.recv(4096).decode())

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket.getsockname(),
           "WATCHDOG_USEC": "2000", "PYTHONUNBUFFERED": "1"}
    daemon = subprocess.Popen([*MAILROUTE, "--config", str(daemon_config), "run"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not any("READY=1" in n for n in notices) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any("READY=1" in n for n in notices), notices[-5:]
        for _ in range(60):
            daemon.send_signal(signal.SIGHUP)
            time.sleep(0.015)
        time.sleep(1)
        reloads_done = sum("configuration reloaded" in n for n in notices)
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=20)
    finally:
        listening.clear()
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    assert daemon.returncode == 0, stderr.decode()[-2000:]
    assert reloads_done >= 1
    last_reloading = max(i for i, n in enumerate(notices) if "RELOADING=1" in n)
    assert any("READY=1" in n for n in notices[last_reloading:])  # not left "reloading"
    assert any("STOPPING=1" in n for n in notices)


def test_calendar_warning_names_the_unknown_year() -> None:
    from datetime import UTC, datetime

    from mailroute.core.business_calendar import BusinessCalendar
    from mailroute.service.config_check import calendar_warning

    calendar = BusinessCalendar()
    known = calendar.known_until().year
    assert calendar_warning(calendar, datetime(known - 1, 6, 1, tzinfo=UTC)) is None
    warning = calendar_warning(calendar, datetime(known, 6, 1, tzinfo=UTC))
    assert warning is not None and str(known + 1) in warning and "extra_holidays" in warning
    assert calendar_warning(BusinessCalendar(calendar=""), datetime(2100, 1, 1, tzinfo=UTC)) is None


def test_metrics_and_log_lines_after_a_run(
    tmp_path: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, sqlite_url: str,
    notify_socket: socket.socket,
) -> None:
    import re
    import urllib.request

    from support.services import free_port

    port = free_port()
    config = write_config(tmp_path / "config.toml", account=imap_account, sink=smtp_sink,
                          database_url=sqlite_url,
                          extra={"metrics": {"listen": f"127.0.0.1:{port}"}})
    subprocess.run([*MAILROUTE, "--config", str(config), "db", "upgrade"], check=True,
                   capture_output=True)
    for raw in sample_letters()[:4]:
        imap_account.append(raw)
    daemon = start(config, notify_socket)
    try:
        wait_notification(notify_socket, "READY=1")
        smtp_sink.wait_for(3, timeout=15)
        time.sleep(0.5)  # let the outbox job record what it sent
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            metrics = page.read().decode()
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=15)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    box = 'mailbox="servicedesk@example.com"'  # the one mailbox's label: its address
    assert f'mailroute_letters_total{{{box},outcome="processed"}} 3.0' in metrics
    assert f'mailroute_letters_total{{{box},outcome="ignored"}} 1.0' in metrics
    assert f'mailroute_requests_created_total{{{box},request_type="incident"}} 1.0' in metrics
    assert 'mailroute_replies_total{result="sent"} 3.0' in metrics
    assert 'mailroute_outbox{state="sent"} 3.0' in metrics
    assert "mailroute_poll_seconds_count" in metrics

    pair = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')
    lines = stderr.decode().strip().splitlines()
    assert lines
    for line in lines:
        fields = dict(pair.findall(line))
        assert pair.sub("", line).strip() == "", line  # nothing but key=value pairs
        assert "event" in fields and "level" in fields, line
    assert imap_account.password not in stderr.decode()
    (started,) = [line for line in lines if 'event="daemon started"' in line]
    from mailroute import __version__
    assert f"version={__version__} " in started
    assert f'mailbox="imap {imap_account.host}:{imap_account.port}/INBOX"' in started
    assert f"smtp={smtp_sink.host}:{smtp_sink.port} " in started
    assert "db=sqlite:///" in started and "reply_window=always max_age=3d" in started
    created = [line for line in lines if 'event="request created"' in line]
    assert len(created) == 3 and all(line.startswith("ts=") for line in created)
    assert all(" msgid=" in line and " uid=" in line and " request=SD-" in line
               for line in created)


def test_sigterm_during_a_backlog_exits_in_time_and_loses_nothing(
    tmp_path: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, sqlite_url: str,
    notify_socket: socket.socket,
) -> None:
    from email.message import EmailMessage

    # stderr is read only at the end and a pipe holds 64 KB: info lines for 150 letters
    # and their replies would block the daemon's logging before READY.
    config = write_config(tmp_path / "config.toml", account=imap_account, sink=smtp_sink,
                          database_url=sqlite_url, extra={"mailbox": {"batch_size": 5},
                                                          "logging": {"level": "warning"}})
    subprocess.run([*MAILROUTE, "--config", str(config), "db", "upgrade"], check=True,
                   capture_output=True)
    count = 150
    for number in range(count):
        message = EmailMessage()
        message["From"] = f"user{number}@client.example"
        message["Subject"] = f"Ошибка {number}"
        message["Message-ID"] = f"<term-{number}@client.example>"
        message.set_content(f"Не работает отчёт {number}.\n\nООО «Клиент»\nрег. номер 800123456")
        imap_account.append(bytes(message))
    daemon = start(config, notify_socket)
    try:
        wait_notification(notify_socket, "READY=1", timeout=60)
    finally:
        stopping = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=15)
    assert daemon.returncode == 0
    assert time.monotonic() - stopping < 10
    finish = subprocess.run([*MAILROUTE, "--config", str(config), "run", "--once"],
                            capture_output=True, text=True, check=False)
    assert finish.returncode == 0, finish.stderr
    assert imap_account.uids("INBOX") == []
    assert len(imap_account.uids("Processed")) == count
    from sqlalchemy import create_engine, text

    engine = create_engine(sqlite_url)
    with engine.connect() as conn:
        requests = conn.execute(text("select count(*) from requests")).scalar()
        letters = conn.execute(text("select count(distinct message_id) from letters")).scalar()
    engine.dispose()
    assert requests == letters == count


# ------------------------------------------------- run --once: replies during the drain


def letter(number: int) -> bytes:
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"] = f"user{number}@client.example"
    message["To"] = "servicedesk@example.com"
    message["Subject"] = f"Ошибка {number}"
    message["Message-ID"] = f"<once-{number}@client.example>"
    message.set_content(f"Не работает отчёт {number}.\n\nООО «Клиент»\nрег. номер 800123456")
    return bytes(message)


def maildir_daemon(tmp_path: Path, sink: SmtpSink, database_url: str, count: int,
                   batch_size: int, clock: Callable[[], Any] | None = None,
                   outbox_database_url: str | None = None,
                   smtp: dict[str, Any] | None = None,
                   replies: dict[str, Any] | None = None) -> Any:
    """A Daemon on a Maildir of ``count`` letters that each get an acknowledgement.

    ``clock``: the daemon's own (not the wall's: its replies go from a thread).
    ``outbox_database_url``: what the config says, while the daemon's store uses
    ``database_url`` (the outbox process opens the config's). ``smtp``, ``replies``:
    more keys of those sections.
    """
    from mailroute.config import Config
    from mailroute.service.daemon import Daemon
    from mailroute.store import Store

    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    arrived = int(time.time()) - count  # recent: older letters get no reply (max_age)
    for number in range(count):
        path = maildir / "new" / f"{arrived + number}.{number}.test"
        path.write_bytes(letter(number))
        os.utime(path, (arrived + number, arrived + number))
    config = Config.model_validate({
        "mailbox": {"maildir": str(maildir), "address": "servicedesk@example.com",
                    "batch_size": batch_size},
        "smtp": {"host": sink.host, "port": sink.port, "security": "none", **(smtp or {})},
        "database": {"url": outbox_database_url or database_url},
        "replies": {"window": "always", **(replies or {})},
    })
    store = Store(database_url)
    store.upgrade()
    if clock is None:
        return Daemon(config, store)
    return Daemon(config, store, clock=clock)


class Watched:
    """A mail source that, at its ``wait_at``-th fetch, gives the outbox thread up to 10 s
    to make ``ready()`` true, and notes at each fetch how many replies the sink has."""

    def __init__(self, inner: Any, sink: SmtpSink, wait_at: int,
                 ready: Callable[[], bool]) -> None:
        self.inner, self.sink, self.wait_at, self.ready = inner, sink, wait_at, ready
        self.name = inner.name
        self.fetches = 0
        self.replies_at_fetch: list[int] = []

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.inner, attribute)

    def fetch(self, uids: Any) -> Any:
        self.fetches += 1
        if self.fetches == self.wait_at:
            deadline = time.monotonic() + 10
            while not self.ready() and time.monotonic() < deadline:
                time.sleep(0.02)
        self.replies_at_fetch.append(len(self.sink.received()))
        return self.inner.fetch(uids)


def watching(daemon: Any, sink: SmtpSink, wait_at: int, ready: Callable[[], bool]
             ) -> list[Watched]:
    """Make the daemon open Watched sources; returns the list they are put in."""
    from mailroute.mail.sources import open_source

    sources: list[Watched] = []

    def factory(config: Any) -> Watched:
        sources.append(Watched(open_source(config), sink, wait_at, ready))
        return sources[-1]

    daemon.source_factory = factory
    return sources


def test_run_once_sends_replies_while_the_drain_goes_on(
    tmp_path: Path, smtp_sink: SmtpSink, database_url: str
) -> None:
    """Replies queued by the first batches go out while later batches are still
    fetched and decided (from the outbox process, on SQLite too: its accepted replies
    are written down before their marks wait for intake's lock, ``mail/accepted``).
    The report counts every pass's replies."""
    count = 12
    daemon = maildir_daemon(tmp_path, smtp_sink, database_url, count, batch_size=3)
    made = sender_of(daemon)
    sources = watching(daemon, smtp_sink, 3, lambda: bool(smtp_sink.received()))
    try:
        report = daemon.run_once()
    finally:
        daemon.store.dispose()
    (source,) = sources
    assert source.fetches == 4
    assert source.replies_at_fetch[2] >= 1, source.replies_at_fetch  # sent mid-drain
    assert source.replies_at_fetch[3] < count
    assert [type(sender).__name__ for sender in made] == ["SenderProcess"]
    assert report.drain.count("processed") == count
    assert len(report.delivery.sent) == count
    assert len(set(report.delivery.sent)) == count
    received = smtp_sink.wait_for(count)
    assert len(received) == count
    assert sorted(m.message["In-Reply-To"] for m in received) == sorted(
        f"<once-{n}@client.example>" for n in range(count))


@pytest.fixture
def flaky_outbox(monkeypatch: pytest.MonkeyPatch) -> tuple[list[BaseException], list[str]]:
    """The daemon's deliver_due raises the queued errors in the sender thread; returns
    (errors to raise, names of the threads that called it)."""
    import threading

    from mailroute.service import daemon as daemon_module

    real = daemon_module.deliver_due
    failures: list[BaseException] = []
    calls: list[str] = []

    def flaky(*args: Any) -> Any:
        calls.append(threading.current_thread().name)
        if threading.current_thread().name == "outbox" and failures:
            raise failures.pop()
        return real(*args)

    monkeypatch.setattr(daemon_module, "deliver_due", flaky)
    return failures, calls


def wall_clock() -> Any:
    """The wall's time, but not ``daemon.utc_now``: such a daemon sends from a thread."""
    from datetime import UTC, datetime

    return datetime.now(UTC)


def sender_of(daemon: Any) -> list[Any]:
    """Collect what ``run_once`` sends replies with while it drains."""
    made: list[Any] = []
    real = daemon._sender

    def keep(*args: Any) -> Any:
        made.append(real(*args))
        return made[-1]

    daemon._sender = keep
    return made


def test_an_outbox_process_killed_mid_batch_on_sqlite_sends_no_reply_twice(
    tmp_path: Path, smtp_sink: SmtpSink, sqlite_url: str
) -> None:
    """SQLite: the outbox process sends beside the drain and marks a batch at its end.
    Killed (SIGKILL) once two replies of its batch were accepted, and not yet marked,
    it leaves them in its journal: the next pass, with every claim lapsed, marks them
    sent and sends the others. Each journaled reply arrives once (without the journal
    they went out a second time). (A reply whose 250 the killed process never read may
    arrive twice: that is the at-least-once window, not asserted here.)"""
    from collections import Counter
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import text
    from structlog.testing import capture_logs

    from mailroute import logs
    from mailroute.mail import outbox
    from mailroute.mail.sources import open_source
    from mailroute.service.sender import SenderFailed
    from mailroute.store.db import sqlite_file

    count = 12
    smtp_sink.data_delay = 0.3  # each reply takes 0.3 s: the kill lands inside a batch
    daemon = maildir_daemon(tmp_path, smtp_sink, sqlite_url, count, batch_size=3,
                            smtp={"timeout": 1}, replies={"claim_timeout": 30})
    made = sender_of(daemon)
    database = sqlite_file(sqlite_url)
    assert database is not None
    journaled: list[int] = []

    def journal_ids() -> list[int]:
        return [int(line.split()[0])
                for path in database.parent.glob(database.name + "-accepted.*")
                for line in path.read_text().splitlines() if line.strip()]

    def kill_mid_batch() -> bool:
        if len(journal_ids()) < 2 or not made or made[0].pid is None:
            return False
        os.kill(made[0].pid, signal.SIGKILL)
        wait_until(lambda: not made[0]._process.is_alive(), timeout=10)
        journaled.extend(journal_ids())
        return True

    # at the third fetch the first batch is filed and its replies are being sent
    daemon.source_factory = lambda config: Watched(open_source(config), smtp_sink, 3,
                                                   kill_mid_batch)
    try:
        with pytest.raises(SenderFailed, match="ended without a word"):
            daemon.run_once()
        assert len(journaled) >= 2, journaled
        logs.configure("info")  # an earlier test may have left the level at warning
        with capture_logs() as logged:
            later = outbox.deliver_due(daemon.store, daemon.config.smtp, daemon.config.replies,
                                       datetime.now(UTC) + timedelta(seconds=31))
        with daemon.store.engine.connect() as conn:
            rows = dict(conn.execute(text("select id, message_id from outbox")).all())
    finally:
        daemon.store.dispose()
    received = Counter(mail.message["Message-ID"] for mail in smtp_sink.received())
    assert set(received) == set(rows.values()) and len(rows) == count  # every reply went
    assert [received[rows[i]] for i in journaled] == [1] * len(journaled)  # journaled: once
    assert not set(later.sent) & set(journaled)
    (replayed,) = [e for e in logged if e["event"] == "replies recorded as sent from a journal"]
    assert replayed["recorded"] == len(journaled)


def test_run_once_outbox_process_pauses_on_a_database_error(
    tmp_path: Path, smtp_sink: SmtpSink, postgres_url: str
) -> None:
    """The outbox process cannot reach the database (its config names a closed port):
    it stops quietly until the drain ends, and the final pass sends everything."""
    from mailroute.service.sender import SenderProcess

    daemon = maildir_daemon(tmp_path, smtp_sink, postgres_url, 6, batch_size=2,
                            outbox_database_url="postgresql+psycopg://root@127.0.0.1:9/none")
    made = sender_of(daemon)
    watching(daemon, smtp_sink, 3, lambda: bool(made) and not made[0]._process.is_alive())
    try:
        report = daemon.run_once()
    finally:
        daemon.store.dispose()
    (sender,) = made
    assert isinstance(sender, SenderProcess) and sender.exitcode == 0
    assert sender.paused is not None and "database unavailable" in sender.paused
    assert sender.delivery.sent == []
    assert report.drain.count("processed") == 6
    assert len(report.delivery.sent) == 6
    assert len(smtp_sink.wait_for(6)) == 6


def test_run_once_raises_a_bug_in_the_outbox_process_after_the_drain(
    tmp_path: Path, smtp_sink: SmtpSink, postgres_url: str
) -> None:
    """The outbox process meets a database without the outbox table (not an outage):
    the drain is finished first, then run_once raises what the process said."""
    from sqlalchemy import text
    from support.databases import fresh_postgres_database

    from mailroute.service.sender import SenderFailed

    with fresh_postgres_database() as empty:
        daemon = maildir_daemon(tmp_path, smtp_sink, postgres_url, 6, batch_size=2,
                                outbox_database_url=empty)
        made = sender_of(daemon)
        watching(daemon, smtp_sink, 3, lambda: bool(made) and not made[0]._process.is_alive())
        try:
            with pytest.raises(SenderFailed, match='relation "outbox" does not exist'):
                daemon.run_once()
            with daemon.store.transaction() as session:
                pending = session.execute(text("select count(*) from letters"
                                               " where state = 'pending'")).scalar()
        finally:
            daemon.store.dispose()
    assert pending == 0
    assert len(list((tmp_path / "Maildir" / ".Processed" / "cur").iterdir())) == 6


def test_run_once_outbox_thread_pauses_on_a_database_error(
    tmp_path: Path, smtp_sink: SmtpSink, postgres_url: str,
    flaky_outbox: tuple[list[BaseException], list[str]],
) -> None:
    """A database error in the sender thread pauses it until the drain ends; the final
    pass meets the database again and sends everything."""
    import threading

    from mailroute.errors import TransientError

    failures, calls = flaky_outbox
    failures.append(TransientError("database unavailable: test"))
    daemon = maildir_daemon(tmp_path, smtp_sink, postgres_url, 6, batch_size=2,
                            clock=wall_clock)
    watching(daemon, smtp_sink, 3, lambda: "outbox" in calls)
    try:
        report = daemon.run_once()
    finally:
        daemon.store.dispose()
    assert calls.count("outbox") == 1  # paused after its error, not retried in a loop
    assert calls[-1] == threading.current_thread().name  # the final pass
    assert report.drain.count("processed") == 6
    assert len(report.delivery.sent) == 6
    assert len(smtp_sink.wait_for(6)) == 6


def test_run_once_raises_a_bug_in_the_outbox_thread_after_the_drain(
    tmp_path: Path, smtp_sink: SmtpSink, postgres_url: str,
    flaky_outbox: tuple[list[BaseException], list[str]],
) -> None:
    from sqlalchemy import text

    failures, calls = flaky_outbox
    failures.append(RuntimeError("a bug in the outbox"))
    daemon = maildir_daemon(tmp_path, smtp_sink, postgres_url, 6, batch_size=2,
                            clock=wall_clock)
    watching(daemon, smtp_sink, 3, lambda: "outbox" in calls)
    try:
        with pytest.raises(RuntimeError, match="a bug in the outbox"):
            daemon.run_once()
        with daemon.store.transaction() as session:  # the drain was finished first
            pending = session.execute(text("select count(*) from letters"
                                           " where state = 'pending'")).scalar()
    finally:
        daemon.store.dispose()
    assert pending == 0
    assert len(list((tmp_path / "Maildir" / ".Processed" / "cur").iterdir())) == 6


@pytest.mark.parametrize("trouble", ["stopped", "451"])
def test_status_turns_unhealthy_within_a_minute_of_smtp_trouble(
    daemon_config: Path, imap_account: ImapAccount, smtp_sink: SmtpSink,
    notify_socket: socket.socket, trouble: str,
) -> None:
    """The daemon is serving; SMTP goes away (or answers 451 to every reply) and a letter
    comes in: `status` exits 1 naming SMTP well within 60 s."""
    daemon = start(daemon_config, notify_socket)
    try:
        wait_notification(notify_socket, "READY=1")
        if trouble == "stopped":
            smtp_sink.stop()
        else:
            smtp_sink.reply_code = "451 4.3.0 try again later"
        imap_account.append(sample_letters()[0])
        deadline = time.monotonic() + 90  # the letter filed: its reply is queued
        while imap_account.uids("INBOX") and time.monotonic() < deadline:
            time.sleep(0.5)
        began = time.monotonic()
        status = None
        while time.monotonic() - began < 60:
            status = subprocess.run([*MAILROUTE, "--config", str(daemon_config), "status"],
                                    capture_output=True, text=True, check=False)
            if status.returncode == 1:
                break
            time.sleep(3)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.communicate()
    assert status is not None and status.returncode == 1, status and status.stdout
    assert time.monotonic() - began < 60
    problem = next(line for line in status.stdout.splitlines() if "problem:" in line)
    assert f"SMTP {smtp_sink.host}:{smtp_sink.port} is failing" in problem


# ------------------------------------------------------------------ start-up and READY


class Gated:
    """A mail source whose fetches wait until ``gate`` is set (at most ``limit`` s)."""

    def __init__(self, inner: Any, gate: threading.Event, limit: float) -> None:
        self.inner, self.gate, self.limit = inner, gate, limit
        self.name = inner.name
        self.fetches_before_gate = 0

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.inner, attribute)

    def fetch(self, uids: Any) -> Any:
        if not self.gate.is_set():
            self.fetches_before_gate += 1
        self.gate.wait(self.limit)
        return self.inner.fetch(uids)


def test_ready_comes_before_a_large_first_backlog_is_drained(
    tmp_path: Path, smtp_sink: SmtpSink, database_url: str, notify_socket: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """READY=1 once the mailbox, the database and SMTP answered: the first fetch of the
    backlog is held until READY arrives, so a READY sent after the drain never comes in
    time."""
    from mailroute.mail.sources import open_source

    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.getsockname())
    count = 30
    daemon = maildir_daemon(tmp_path, smtp_sink, database_url, count, batch_size=5)
    gate = threading.Event()
    sources: list[Gated] = []

    def factory(config: Any) -> Gated:
        sources.append(Gated(open_source(config), gate, limit=30))
        return sources[-1]

    daemon.source_factory = factory
    intake = threading.Thread(target=daemon._intake_loop, name="intake", daemon=True)
    intake.start()
    try:
        seen = wait_notification(notify_socket, "READY=1", timeout=20)
        assert not any("READY=1" in message for message in seen[:-1])
        gate.set()
        processed = tmp_path / "Maildir" / ".Processed" / "cur"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
            not processed.exists() or len(list(processed.iterdir())) < count
        ):
            time.sleep(0.1)
    finally:
        gate.set()
        daemon.stop.set()
        intake.join(30)
        daemon.store.dispose()
    assert len(list(processed.iterdir())) == count


# ------------------------------------------------------------- progress and summary lines


def test_a_backlog_logs_progress_and_one_summary_line(
    tmp_path: Path, smtp_sink: SmtpSink, database_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A progress line (done/total, letters per second, time left) every PROGRESS_EVERY
    seconds while the backlog is fetched (0 here: one per batch, not a timing test), and
    one summary line at the end of the drain."""
    import re

    from mailroute import logs
    from mailroute.pipeline import intake

    logs.configure()
    monkeypatch.setattr(intake, "PROGRESS_EVERY", 0.0)
    daemon = maildir_daemon(tmp_path, smtp_sink, database_url, 12, batch_size=3)
    try:
        daemon.run_once(send=False)
    finally:
        daemon.store.dispose()
    lines = capsys.readouterr().err.splitlines()
    progress = [line for line in lines if 'event=draining' in line]
    assert [re.search(r"done=(\S+)", line).group(1) for line in progress] == [  # type: ignore[union-attr]
        "3/12", "6/12", "9/12"]
    assert all(re.search(r" per_second=[\d.]+ left=\d+(s|m\d\ds)\b", line) for line in progress)
    (summary,) = [line for line in lines if 'event="drain finished"' in line]
    assert re.search(r"letters=12 requests=12 follow_ups=0 ignored=0 quarantined=0 "
                     r"replies_queued=12 seconds=[\d.]+", summary), summary


def _run_once_on(config: Path, terminal: bool) -> str:
    """`run --once` with its stderr on a pseudo-terminal (or a pipe); what it wrote there."""
    import pty

    command = [*MAILROUTE, "--config", str(config), "run", "--once"]
    if not terminal:
        return subprocess.run(command, capture_output=True, text=True, check=True,
                              timeout=120).stderr
    main, secondary = pty.openpty()
    try:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=secondary)
        os.close(secondary)
        written = bytearray()
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the process closed its end
                break
            if not chunk:
                break
            written += chunk
        assert process.wait(120) == 0
    finally:
        os.close(main)
    return written.decode("utf-8", "replace")


@pytest.mark.parametrize("terminal", [True, False])
def test_run_once_shows_a_progress_bar_on_a_terminal_only(
    tmp_path: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, sqlite_url: str,
    terminal: bool,
) -> None:
    config = write_config(tmp_path / "config.toml", account=imap_account, sink=smtp_sink,
                          database_url=sqlite_url)
    subprocess.run([*MAILROUTE, "--config", str(config), "db", "upgrade"], check=True,
                   capture_output=True)
    for raw in sample_letters()[:4]:
        imap_account.append(raw)
    written = _run_once_on(config, terminal)
    assert "fetched 4 letter(s)" in written
    if terminal:
        assert "letters" in written and "4/4" in written and "━" in written, written
    else:
        assert "4/4" not in written and "━" not in written
