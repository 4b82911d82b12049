"""`mailroute run` as a daemon: IDLE latency, systemd notifications, SIGHUP, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.configs import sample_letters, write_config
from support.dovecot import ImapAccount
from support.smtp import SmtpSink

MAILROUTE = [sys.executable, "-m", "mailroute.cli"]


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
        (reply,) = smtp_sink.wait_for(1, timeout=15)
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
        (reply,) = smtp_sink.wait_for(1, timeout=15)
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


def test_calendar_warning_names_the_unknown_year() -> None:
    from datetime import UTC, datetime

    from mailroute.daemon import calendar_warning
    from mailroute.hours import BusinessCalendar

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
    assert 'mailroute_letters_total{outcome="processed"} 3.0' in metrics
    assert 'mailroute_letters_total{outcome="ignored"} 1.0' in metrics
    assert 'mailroute_requests_created_total{request_type="incident"} 1.0' in metrics
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
