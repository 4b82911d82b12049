"""The daemon end to end: letters in a real Dovecot → `mailroute run` → database + SMTP.

Runs the real command line in a subprocess against a real IMAP server, a real
SMTP server (aiosmtpd) and SQLite or PostgreSQL.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from support.configs import sample_letters, write_config
from support.dovecot import ImapAccount
from support.smtp import SmtpSink

from mailroute.store.models import Letter, LetterBytes, OutboxItem, Request

MAILROUTE = [sys.executable, "-m", "mailroute"]


def mailroute(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAILROUTE, "--config", str(config), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def upgraded(config: Path) -> Path:
    result = mailroute(config, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    return config


def rows(database_url: str, model: type) -> list:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(model)))
    finally:
        engine.dispose()


def test_run_once_registers_replies_and_files(
    tmp_path: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, database_url: str
) -> None:
    config = upgraded(write_config(
        tmp_path / "config.toml", account=imap_account, sink=smtp_sink,
        database_url=database_url,
    ))
    letters = sample_letters()
    for raw in letters:
        imap_account.append(raw)

    result = mailroute(config, "run", "--once")

    assert result.returncode == 0, result.stderr
    assert imap_account.uids("INBOX") == []
    assert len(imap_account.messages("Processed")) == len(letters)
    requests = {row.number: row for row in rows(database_url, Request)}
    assert sorted(requests) == ["SD-000001", "SD-000002", "SD-000003", "SD-000004"]
    assert requests["SD-000001"].priority == "critical"
    assert requests["SD-000002"].registration_number == "800771204"  # from the follow-up
    assert requests["SD-000002"].status == "new"
    states = sorted(row.state for row in rows(database_url, Letter))
    assert states == ["follow_up", "ignored", *["processed"] * 4]

    received = smtp_sink.wait_for(5)
    kinds = sorted(mail.message["X-Mailroute-Kind"] for mail in received)
    assert kinds == ["acknowledgement"] * 4 + ["clarification"]
    originals = {mail.message["X-Mailroute-Request"]: mail for mail in received}
    assert set(originals) == set(requests)
    for mail in received:
        number = mail.message["X-Mailroute-Request"]
        assert f"[{number}]" in mail.message["Subject"]
        assert mail.message["Auto-Submitted"] == "auto-replied"
        assert mail.message["X-Auto-Response-Suppress"] == "All"
        assert mail.message["In-Reply-To"].startswith("<demo-")
        assert mail.message["In-Reply-To"] in mail.message["References"]
        assert mail.message["Message-ID"] not in (None, mail.message["In-Reply-To"])
        assert mail.message["Date"]
    clarification = next(m for m in received if m.message["X-Mailroute-Kind"] == "clarification")
    assert clarification.rcpt_tos == ("orlov@severstroy.ru",)
    assert "регистрационный номер" in clarification.message.get_content()
    english = originals["SD-000003"].message
    assert "registered as SD-000003" in english.get_content()
    assert all(row.state == "sent" for row in rows(database_url, OutboxItem))


def test_second_run_changes_nothing(
    tmp_path: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, sqlite_url: str
) -> None:
    config = upgraded(write_config(
        tmp_path / "config.toml", account=imap_account, sink=smtp_sink, database_url=sqlite_url,
    ))
    imap_account.append(sample_letters()[0])
    assert mailroute(config, "run", "--once").returncode == 0
    assert mailroute(config, "run", "--once").returncode == 0
    assert len(rows(sqlite_url, Request)) == 1
    assert len(smtp_sink.received()) == 1


def test_run_refuses_database_not_upgraded(
    tmp_path: Path, imap_account: ImapAccount, sqlite_url: str
) -> None:
    config = write_config(
        tmp_path / "config.toml", account=imap_account, sink=None, database_url=sqlite_url,
    )
    result = mailroute(config, "run", "--once")
    assert result.returncode == 3
    assert "mailroute db upgrade" in result.stderr


def test_business_hours_window_holds_replies(
    tmp_path: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, sqlite_url: str
) -> None:
    """With a calendar that is never open, a reply is queued but not sent."""
    config = upgraded(write_config(
        tmp_path / "config.toml", account=imap_account, sink=smtp_sink, database_url=sqlite_url,
        window="business_hours",
        extra={"business_hours": {"workdays": ["sat"], "calendar": ""}},
    ))
    imap_account.append(sample_letters()[0])
    assert mailroute(config, "run", "--once").returncode == 0
    (item,) = rows(sqlite_url, OutboxItem)
    if item.not_before.replace(tzinfo=None) > item.created_at.replace(tzinfo=None):
        assert item.state == "pending"
        assert smtp_sink.received() == []
    else:  # the test happens to run on a Saturday in opening hours
        assert item.state == "sent"


def test_unparseable_letter_is_quarantined_and_the_queue_moves_on(
    tmp_path: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, sqlite_url: str
) -> None:
    config = upgraded(write_config(
        tmp_path / "config.toml", account=imap_account, sink=smtp_sink, database_url=sqlite_url,
    ))
    bomb = _nested_letter(depth=200)
    imap_account.append(bomb)
    imap_account.append(sample_letters()[0])

    result = mailroute(config, "run", "--once")

    assert result.returncode == 0, result.stderr
    quarantined = imap_account.messages("Quarantine")
    assert quarantined == [bomb]
    assert len(imap_account.messages("Processed")) == 1
    letters = {row.state: row for row in rows(sqlite_url, Letter)}
    stored = {row.letter_id: row.raw for row in rows(sqlite_url, LetterBytes)}
    assert stored[letters["quarantined"].id] == bomb
    assert letters["quarantined"].stage == "parse"
    assert "letter quarantined" in result.stderr
    assert len(smtp_sink.wait_for(1)) == 1


def _nested_letter(depth: int) -> bytes:
    head = "From: a@b.example\r\nTo: servicedesk@example.com\r\nSubject: deep\r\n"
    head += f"Message-ID: {make_msgid(domain='b.example')}\r\nMIME-Version: 1.0\r\n"
    parts = [head]
    for level in range(depth):
        parts.append(f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n--b{level}\r\n')
    parts.append("Content-Type: text/plain\r\n\r\nhello\r\n")
    for level in reversed(range(depth)):
        parts.append(f"--b{level}--\r\n")
    return "".join(parts).encode()


# ------------------------------------------------------------------ crash safety


def backlog_letter(number: int) -> bytes:
    message = EmailMessage()
    message["From"] = f"Customer {number} <user{number}@customer{number % 7}.example>"
    message["To"] = "servicedesk@example.com"
    message["Subject"] = f"Ошибка при проведении документа №{number}"
    message["Message-ID"] = f"<backlog-{number}@customer.example>"
    message.set_content(
        f"Добрый день!\n\nПри проведении документа {number} появляется ошибка.\n\n"
        f"--\nООО «Клиент {number}»\nрег. номер 800{number:06d}\n"
    )
    return bytes(message)


@pytest.mark.slow
def test_sigkill_during_backlog_yields_one_request_per_letter(
    tmp_path: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, database_url: str
) -> None:
    count = 120
    config = upgraded(write_config(
        tmp_path / "config.toml", account=imap_account, sink=smtp_sink,
        database_url=database_url,
        extra={"mailbox": {"batch_size": 10}, "replies": {"claim_timeout": 3},
               "smtp": {"timeout": 2}},
    ))
    for number in range(count):
        imap_account.append(backlog_letter(number))
    chance = random.Random(20261122)
    kills = 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for _ in range(6):
        daemon = subprocess.Popen(
            [*MAILROUTE, "--config", str(config), "run"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
        )
        _wait_for_progress(daemon, timeout=30)
        time.sleep(chance.uniform(0.0, 0.4))
        daemon.send_signal(signal.SIGKILL)
        daemon.communicate(timeout=10)
        kills += 1
    # Replies a killed instance had claimed are free again when its lease ends: never
    # before three [smtp] timeouts (a send may take two), so 6 s here.
    time.sleep(6)
    final = mailroute(config, "run", "--once")
    assert final.returncode == 0, final.stderr

    assert kills == 6
    folders = {folder: len(imap_account.uids(folder)) for folder in imap_account.folders()}
    assert folders == {"INBOX": 0, "Processed": count}, (folders, final.stderr[-2000:])
    requests = rows(database_url, Request)
    letters = rows(database_url, Letter)
    assert len(letters) == count
    assert len(requests) == count
    assert len({letter.message_id for letter in letters}) == count
    assert {letter.state for letter in letters} == {"processed"}
    engine = create_engine(database_url)
    with engine.connect() as conn:
        per_letter = conn.execute(
            select(OutboxItem.letter_id, func.count()).group_by(OutboxItem.letter_id)
        ).all()
    engine.dispose()
    assert len(per_letter) == count and all(n == 1 for _, n in per_letter)
    delivered = [mail.message["In-Reply-To"] for mail in smtp_sink.wait_for(count, timeout=60)]
    assert set(delivered) == {f"<backlog-{n}@customer.example>" for n in range(count)}
    duplicates = len(delivered) - len(set(delivered))
    print(f"SIGKILLs: {kills}; letters: {count}; duplicate replies: {duplicates}")


def _wait_for_progress(daemon: subprocess.Popen[bytes], timeout: float) -> None:
    """Return once the daemon logs its first fetched or filed letter (or exits)."""
    assert daemon.stderr is not None
    deadline = time.monotonic() + timeout
    os.set_blocking(daemon.stderr.fileno(), False)
    seen = b""
    while time.monotonic() < deadline and daemon.poll() is None:
        chunk = daemon.stderr.read() or b""
        seen += chunk
        if b"letter fetched" in seen or b"letters filed" in seen or b"daemon started" in seen:
            return
        time.sleep(0.02)
