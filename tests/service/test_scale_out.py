"""Several instances on one mailbox: one drains, the others stand by and take over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from support.configs import write_config
from support.dovecot import ImapAccount
from support.smtp import SmtpSink
from support.waiting import wait_until

from mailroute.store import Store
from mailroute.store.locks import MailboxLock

MAILROUTE = [sys.executable, "-m", "mailroute"]


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.upgrade()
    yield store
    store.dispose()


def test_only_one_holder_and_release(store: Store) -> None:
    first, second = MailboxLock(store, "imap://a@b/INBOX"), MailboxLock(store, "imap://a@b/INBOX")
    other = MailboxLock(store, "imap://c@d/INBOX")
    assert first.acquire() and first.held
    assert not second.acquire()
    assert other.acquire()  # another mailbox is independent
    first.release()
    assert second.acquire()
    second.release()
    other.release()


HOLD_SQLITE_LOCK = """
import sys, time
from mailroute.store import Store
from mailroute.store.locks import MailboxLock
lock = MailboxLock(Store(sys.argv[1]), "imap://a@b/INBOX")
assert lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_the_sqlite_lock_is_in_the_database_file_and_dies_with_its_holder(
    tmp_path: Path, sqlite_url: str
) -> None:
    """No lock file beside the database; another process holding the mailbox keeps us out
    until it dies; SQLite itself goes on reading and writing meanwhile."""
    store = Store(sqlite_url)
    store.upgrade()
    folder = Path(store.engine.url.database or "").parent
    before = set(folder.iterdir())
    holder = subprocess.Popen([sys.executable, "-c", HOLD_SQLITE_LOCK, sqlite_url],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        lock = MailboxLock(store, "imap://a@b/INBOX")
        assert not lock.acquire()  # held by the other process
        with store.transaction() as session:  # the database is not blocked by it
            session.execute(text("create table touched (x integer)"))
        holder.kill()
        holder.wait(10)
        assert lock.acquire()
        lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.communicate(timeout=10)  # closes its pipe
        store.dispose()
    left = {path.name for path in set(folder.iterdir()) - before}
    assert not [name for name in left if name.endswith(".lock")], left


def test_a_dead_holders_lock_is_taken_over(postgres_url: str) -> None:
    store = Store(postgres_url)
    store.upgrade()
    try:
        holder, standby = MailboxLock(store, "m"), MailboxLock(store, "m")
        assert holder.acquire()
        holder._connection.invalidate()  # the holder's connection dies with its process
        assert standby.acquire()
        assert not holder.held
        standby.release()
    finally:
        store.dispose()


def letter(number: int) -> bytes:
    message = EmailMessage()
    message["From"] = f"user{number}@client{number % 5}.example"
    message["To"] = "servicedesk@example.com"
    message["Subject"] = f"Ошибка при печати накладной {number}"
    message["Message-ID"] = f"<two-{number}@client.example>"
    message.set_content(f"Не печатается накладная {number}.\n\nООО «Клиент»\nрег. номер 800777111")
    return bytes(message)


def count(url: str, query: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(query)).scalar() or 0)
    finally:
        engine.dispose()


@pytest.mark.slow
def test_two_daemons_share_the_work_without_duplicates(
    tmp_path: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, postgres_url: str
) -> None:
    config = write_config(tmp_path / "config.toml", account=imap_account, sink=smtp_sink,
                          database_url=postgres_url,
                          extra={"replies": {"claim_timeout": 5}})
    subprocess.run([*MAILROUTE, "--config", str(config), "db", "upgrade"], check=True,
                   capture_output=True)
    for number in range(60):
        imap_account.append(letter(number))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    daemons = []
    for log in logs:
        with log.open("wb") as sink:
            daemons.append(subprocess.Popen([*MAILROUTE, "--config", str(config), "run"],
                                            env=env, stdout=subprocess.DEVNULL, stderr=sink))
    try:
        assert wait_until(lambda: count(postgres_url, "select count(*) from requests") == 60, 60)
        assert wait_until(lambda: len(smtp_sink.received()) >= 60, 60)
        texts = [log.read_text() for log in logs]
        assert sum("standby" in t for t in texts) == 1, texts  # exactly one stood by
        holder = 0 if "standby" not in texts[0] else 1
        daemons[holder].send_signal(signal.SIGKILL)
        daemons[holder].wait(10)
        for number in range(60, 80):
            imap_account.append(letter(number))
        assert wait_until(lambda: count(postgres_url, "select count(*) from requests") == 80, 60)
        assert wait_until(lambda: len(smtp_sink.received()) >= 80, 60)
        assert "taking over the mailbox" in logs[1 - holder].read_text()
    finally:
        for daemon in daemons:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(15)
    time.sleep(6)  # replies a killed instance had claimed become free again
    subprocess.run([*MAILROUTE, "--config", str(config), "run", "--once"], check=True,
                   capture_output=True)
    received = [mail.message["In-Reply-To"] for mail in smtp_sink.received()]
    assert count(postgres_url, "select count(distinct message_id) from letters") == 80
    assert count(postgres_url, "select count(*) from letters") == 80
    assert set(received) == {f"<two-{n}@client.example>" for n in range(80)}
    duplicates = len(received) - len(set(received))
    print(f"two daemons: 80 letters, 80 requests, duplicate replies {duplicates}")
    assert duplicates <= 1  # only a reply in flight at the SIGKILL may go twice
    assert imap_account.uids("INBOX") == []
