"""The SQLite mailbox lock must leave SQLite's own locks alone.

Closing any descriptor of a file cancels every POSIX lock the process holds on it.
A mailbox lock's descriptor, once closed, took the shared lock each WAL connection of
the daemon holds on the database file: another process closing its last connection
then deleted the WAL under the daemon, and a commit went missing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from mailroute.store import Store
from mailroute.store.locks import MailboxLock

_ANOTHER_PROCESS = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1])
connection.execute("PRAGMA journal_mode=WAL")
connection.execute("INSERT INTO probe VALUES (1)")
connection.commit()
connection.close()  # its last connection: it checkpoints and deletes the WAL if alone
"""


def _write_from_another_process(path: Path) -> None:
    subprocess.run([sys.executable, "-c", _ANOTHER_PROCESS, str(path)], check=True,
                   timeout=60)


def _count(store: Store) -> int:
    with store.reading() as session:
        return int(session.execute(text("SELECT count(*) FROM probe")).scalar_one())


def test_a_released_mailbox_lock_keeps_sqlites_locks_for_the_open_connections(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mailroute.db"
    store = Store(f"sqlite:///{path}")
    store.upgrade()
    try:
        with store.transaction() as session:
            session.execute(text("CREATE TABLE probe (x INTEGER)"))
        assert _count(store) == 0  # the pool keeps a connection open, in WAL mode
        first, second = MailboxLock(store, "INBOX"), MailboxLock(store, "INBOX")
        assert first.acquire()
        assert not second.acquire()  # refused: its descriptor is given back, not closed
        first.release()

        _write_from_another_process(path)
        assert path.with_name(path.name + "-wal").exists()  # it knew it was not alone
        with store.transaction() as session:
            session.execute(text("INSERT INTO probe VALUES (2)"))
        _write_from_another_process(path)
        assert _count(store) == 3  # no commit lost on either side
        with store.reading() as session:
            assert session.execute(text("PRAGMA integrity_check")).scalar_one() == "ok"
    finally:
        store.dispose()


def test_two_locks_of_one_process_still_exclude_each_other_with_reused_descriptors(
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'mailroute.db'}")
    store.upgrade()
    try:
        first, second, other = (MailboxLock(store, name) for name in ("INBOX", "INBOX", "mail"))
        for _round in range(3):
            assert first.acquire()
            assert not second.acquire()
            assert other.acquire()  # another mailbox: another byte
            first.release()
            assert second.acquire()
            assert not first.acquire()
            second.release()
            other.release()
    finally:
        store.dispose()
