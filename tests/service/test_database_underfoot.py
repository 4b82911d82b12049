"""The database fails under a running daemon: a reload never kills it, a replaced or
unlinked SQLite file stops intake (letters stay in the INBOX) and `status` says why.

Each test has a database of its own: PostgreSQL ones are made unreachable by refusing
connections to that database only (``ALLOW_CONNECTIONS false`` and ending its sessions),
never by stopping the server other tests share.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from support.configs import write_config
from support.databases import postgres_server_url
from support.dovecot import ImapAccount
from support.smtp import SmtpSink

MAILROUTE = [sys.executable, "-m", "mailroute"]


def letter(tag: str) -> bytes:
    message = EmailMessage()
    message["From"] = f"{tag}@client.example"
    message["To"] = "servicedesk@example.com"
    message["Subject"] = f"Не работает отчёт {tag}"
    message["Message-ID"] = f"<{tag}@client.example>"
    message.set_content(f"Не работает отчёт {tag}.\n\nООО «Клиент»\nрег. номер 800123456")
    return bytes(message)


def mailroute(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MAILROUTE, "--config", str(config), *args], capture_output=True,
                          text=True, timeout=60, check=False)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


class RunningDaemon:
    """``mailroute run`` in a subprocess: its log in a file, its sd_notify messages kept."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self.notices: list[str] = []
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(log.with_suffix(".notify")))
        self._notify.settimeout(0.1)
        env = {**os.environ, "NOTIFY_SOCKET": self._notify.getsockname(),
               "PYTHONUNBUFFERED": "1"}
        with log.open("ab") as stderr:
            self.process = subprocess.Popen([*MAILROUTE, "--config", str(config), "run"],
                                            stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        self._listening = True
        self._listener = threading.Thread(target=self._listen, daemon=True)
        self._listener.start()

    def _listen(self) -> None:
        """Read every notification at once: a full datagram queue would block the daemon."""
        while self._listening:
            with contextlib.suppress(TimeoutError, OSError):
                self.notices.append(self._notify.recv(4096).decode())

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def events(self, name: str) -> int:
        return self.text().count(f'event="{name}"')

    def wait_notice(self, wanted: str, after: int = 0, timeout: float = 30) -> int:
        """Wait for an sd_notify message containing ``wanted`` at index ``after`` or later;
        returns its index."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = list(self.notices)
            for index in range(after, len(seen)):
                if wanted in seen[index]:
                    return index
            assert self.alive, f"daemon exited {self.process.returncode}: {self.text()[-3000:]}"
            time.sleep(0.05)
        raise AssertionError(f"no {wanted!r} within {timeout} s: {self.notices[after:][-5:]}")

    def reload(self) -> None:
        """SIGHUP, and wait until the daemon says it is ready again."""
        seen = len(self.notices)
        self.process.send_signal(signal.SIGHUP)
        reloading = self.wait_notice("RELOADING=1", after=seen)
        self.wait_notice("READY=1", after=reloading)

    def terminate(self) -> int:
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise

    def close(self) -> None:
        if self.alive:
            self.terminate()
        self._listening = False
        self._listener.join()
        self._notify.close()


@contextmanager
def running(config: Path, log: Path) -> Iterator[RunningDaemon]:
    daemon = RunningDaemon(config, log)
    try:
        daemon.wait_notice("READY=1")
        yield daemon
    finally:
        daemon.close()


def configured(tmp_path: Path, account: ImapAccount, sink: SmtpSink, url: str) -> Path:
    config = write_config(tmp_path / "config.toml", account=account, sink=sink,
                          database_url=url,
                          extra={"mailbox": {"timeout": 5}, "smtp": {"timeout": 5}})
    result = mailroute(config, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    return config


def renamed_sender(config: Path, name: str) -> None:
    """A valid config that differs: replies come from another display name."""
    current = config.read_text(encoding="utf-8")
    assert 'from_name = "ServiceDesk"' in current
    config.write_text(current.replace('from_name = "ServiceDesk"', f'from_name = "{name}"'),
                      encoding="utf-8")


def sender_name(sink: SmtpSink, count: int) -> str:
    reply = sink.wait_for(count, timeout=30)[count - 1]
    return str(reply.message["From"].addresses[0].display_name)


# ----------------------------------------------------------- PostgreSQL unreachable


@contextmanager
def connections_refused(url: str) -> Iterator[None]:
    """This test's database refuses new connections and its sessions are ended; the
    server and every other database go on serving."""
    name = make_url(url).database
    admin = create_engine(postgres_server_url(), isolation_level="AUTOCOMMIT",
                          poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                              " WHERE datname = :name AND pid <> pg_backend_pid()"),
                         {"name": name})
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()


def test_a_valid_reload_while_postgresql_is_unreachable_keeps_the_daemon(
    tmp_path: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, postgres_url: str,
) -> None:
    """The reload re-reads the imported registry from the database; with the database
    away that raised out of the main loop and the daemon exited 1."""
    config = configured(tmp_path, imap_account, smtp_sink, postgres_url)
    with running(config, tmp_path / "daemon.log") as daemon:
        with connections_refused(postgres_url):
            renamed_sender(config, "During Outage")
            daemon.reload()
            time.sleep(1)
            assert daemon.alive, daemon.text()[-3000:]
        imap_account.append(letter("after-outage"))
        assert sender_name(smtp_sink, 1) == "ServiceDesk"  # the old config was kept
        daemon.reload()  # the database is back: the same config now applies
        imap_account.append(letter("after-reload"))
        assert sender_name(smtp_sink, 2) == "During Outage"
        assert daemon.terminate() == 0
    log = daemon.text()
    assert daemon.events("config reload failed") == 1, log
    assert "database unavailable" in log and "config reloaded" in log
    assert "Traceback" not in log, log
    assert imap_account.uids("INBOX") == []


# ------------------------------------------------------ the SQLite file under our feet


def sqlite_path(url: str) -> Path:
    return Path(make_url(url).database or "")


def status(config: Path) -> tuple[int, dict[str, object]]:
    result = mailroute(config, "status", "--json")
    return result.returncode, json.loads(result.stdout)


def noticed_or_filed(daemon: RunningDaemon, account: ImapAccount) -> Callable[[], bool]:
    """The daemon logged the file problem, or (the fault) filed the letters anyway."""
    return lambda: (daemon.events("database file replaced") >= 1
                    or not account.uids("INBOX"))


def test_sqlite_file_moved_away_stops_intake_until_it_is_back(
    tmp_path: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, sqlite_url: str,
) -> None:
    """Letters were filed while their records went to the unlinked file, silently.
    Now intake stops (letters stay in the INBOX), `status` names the file, a reload
    meanwhile keeps the daemon, and all resumes when the file is back."""
    config = configured(tmp_path, imap_account, smtp_sink, sqlite_url)
    path = sqlite_path(sqlite_url)
    away = path.with_name("moved-away.db")
    with running(config, tmp_path / "daemon.log") as daemon:
        imap_account.append(letter("before"))
        sender_name(smtp_sink, 1)
        path.rename(away)
        for number in range(3):
            imap_account.append(letter(f"while-away-{number}"))
        wait_until(noticed_or_filed(daemon, imap_account), 30, "the daemon noticed")
        renamed_sender(config, "Meanwhile")
        daemon.reload()
        time.sleep(2)  # time to (wrongly) file the letters
        assert daemon.alive, daemon.text()[-3000:]
        assert len(imap_account.uids("INBOX")) == 3
        code, health = status(config)
        assert not path.exists(), "status created an empty database at the path"
        away.rename(path)
        wait_until(lambda: imap_account.uids("INBOX") == [], 60, "intake resumed")
        assert len(smtp_sink.wait_for(4, timeout=30)) == 4
        back_code, back_health = status(config)
        assert daemon.terminate() == 0
    log = daemon.text()
    assert code == 1 and str(path) in " ".join(health["problems"]), health  # type: ignore[arg-type]
    assert back_code == 0, back_health
    assert daemon.events("database file replaced") == 1, log
    assert daemon.events("database file back") == 1, log
    assert daemon.events("config reload failed") == 1, log
    assert "Traceback" not in log, log
    engine = create_engine(sqlite_url, poolclass=NullPool)
    with engine.connect() as conn:
        requests = conn.execute(text("select count(*) from requests")).scalar()
        filed = conn.execute(text("select count(*) from letters where filed_to is not null")
                             ).scalar()
    engine.dispose()
    assert requests == 4 and filed == 4


def test_sqlite_file_replaced_keeps_letters_in_the_inbox_and_status_says_why(
    tmp_path: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, sqlite_url: str,
) -> None:
    """A copy renamed over the file (a restored backup): the daemon must not go on
    writing to the file it has open, which nobody will read again."""
    config = configured(tmp_path, imap_account, smtp_sink, sqlite_url)
    path = sqlite_path(sqlite_url)
    with running(config, tmp_path / "daemon.log") as daemon:
        imap_account.append(letter("before"))
        sender_name(smtp_sink, 1)
        copy = path.with_name("restored.db")
        copy.write_bytes(path.read_bytes())
        copy.replace(path)
        for number in range(2):
            imap_account.append(letter(f"after-restore-{number}"))
        wait_until(noticed_or_filed(daemon, imap_account), 30, "the daemon noticed")
        time.sleep(2)  # time to (wrongly) file the letters
        code, health = status(config)
        text_status = mailroute(config, "status")
        inbox = imap_account.uids("INBOX")
        assert daemon.alive, daemon.text()[-3000:]
        assert daemon.terminate() == 0
    assert len(inbox) == 2
    assert code == 1, health
    (problem,) = health["problems"]  # type: ignore[misc]
    assert str(path) in problem and "replaced" in problem
    assert "UNHEALTHY" in text_status.stdout and str(path) in text_status.stdout
    assert daemon.events("database file replaced") == 1, daemon.text()
    after_stop, _ = status(config)
    assert after_stop == 0 or not path.with_name(path.name + ".alarm").exists()
    assert len(smtp_sink.received()) == 1


# ------------------------------------------------------- one error logged per outage


def daemon_on(tmp_path: Path, url: str) -> Any:
    """An in-process Daemon on a Maildir and ``url``, with a weekly report to send."""
    from mailroute.config import Config
    from mailroute.service.daemon import Daemon
    from mailroute.store import Store

    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    config = Config.model_validate({
        "mailbox": {"maildir": str(maildir), "address": "servicedesk@example.com"},
        "database": {"url": url},
        "reports": {"schedule": "weekly", "recipients": ["head@example.com"]},
    })
    store = Store(url)
    store.upgrade()
    return Daemon(config, store)


@contextmanager
def outage(url: str) -> Iterator[None]:
    """The database away: PostgreSQL refuses this database's connections; the SQLite
    file is moved aside (the store refuses to write to a file no longer in place)."""
    if not url.startswith("sqlite"):
        with connections_refused(url):
            yield
        return
    path = sqlite_path(url)
    aside = path.with_name("aside.db")
    path.rename(aside)
    try:
        yield
    finally:
        aside.rename(path)


def events(captured: list[dict[str, Any]], name: str) -> int:
    return sum(1 for entry in captured if entry["event"] == name)


def test_each_job_logs_one_error_and_one_recovery_per_outage(
    tmp_path: Path, database_url: str,
) -> None:
    """Escalation and report jobs: two outages, three runs of each job in each. The
    jobs never said "recovered", so the second outage went unlogged."""
    import structlog

    daemon = daemon_on(tmp_path, database_url)
    jobs = {"escalation": daemon._escalation_job, "report": daemon._report_job}
    try:
        with structlog.testing.capture_logs() as captured:
            for _ in range(2):
                for job in jobs.values():
                    job()  # works
                with outage(database_url):
                    for _ in range(3):
                        for job in jobs.values():
                            job()
            for job in jobs.values():
                job()
    finally:
        daemon.store.dispose()
    for part in jobs:
        assert events(captured, f"{part} failing") == 2, captured
        assert events(captured, f"{part} recovered") == 2, captured
        assert events(captured, f"{part} error") == 0, captured


def test_an_unmapped_database_error_is_one_line_per_outage(
    tmp_path: Path, postgres_url: str,
) -> None:
    """A table gone (ProgrammingError, not a connection fault): the escalation job and
    intake logged a traceback on every run; now one line each, then one recovery."""
    import structlog

    from mailroute.store.locks import MailboxLock

    daemon = daemon_on(tmp_path, postgres_url)
    (tmp_path / "Maildir" / "new" / "1700000000.1.test").write_bytes(letter("table-gone"))
    daemon.stop.set()  # intake's backoff waits return at once
    lock = MailboxLock(daemon.store, "maildir")
    engine = create_engine(postgres_url, poolclass=NullPool)
    try:
        with structlog.testing.capture_logs() as captured:
            with engine.begin() as conn:
                conn.execute(text("ALTER TABLE requests RENAME TO requests_away"))
                conn.execute(text("ALTER TABLE letters RENAME TO letters_away"))
            for _ in range(3):
                daemon._escalation_job()
                daemon._intake_round(lock)
            with engine.begin() as conn:
                conn.execute(text("ALTER TABLE requests_away RENAME TO requests"))
                conn.execute(text("ALTER TABLE letters_away RENAME TO letters"))
            daemon._escalation_job()
            daemon._intake_round(lock)
    finally:
        lock.release()
        engine.dispose()
        daemon.store.dispose()
    for failing, recovered in (("escalation failing", "escalation recovered"),
                               ("connection lost", "connection restored")):
        lines = [entry for entry in captured if entry["event"] == failing]
        assert len(lines) == 1, captured
        assert "ProgrammingError" in lines[0]["error"] and "exc_info" not in lines[0]
        assert events(captured, recovered) == 1, captured


def test_a_bug_in_a_job_is_one_traceback_per_outage(
    tmp_path: Path, sqlite_url: str, monkeypatch: Any,
) -> None:
    """A job that raises something unexpected on every run logs its traceback once."""
    import structlog

    from mailroute.service import daemon as daemon_module

    daemon = daemon_on(tmp_path, sqlite_url)
    real = daemon_module.escalate_breaches
    broken = {"runs": 3}

    def escalate(*args: Any) -> Any:
        if broken["runs"]:
            broken["runs"] -= 1
            raise RuntimeError("a bug in escalation")
        return real(*args)

    monkeypatch.setattr(daemon_module, "escalate_breaches", escalate)
    try:
        with structlog.testing.capture_logs() as captured:
            for _ in range(4):
                daemon._escalation_job()
    finally:
        daemon.store.dispose()
    (line,) = [entry for entry in captured if entry["event"] == "escalation failing"]
    assert "a bug in escalation" in line["error"] and line["exc_info"]
    assert events(captured, "escalation recovered") == 1, captured
