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
