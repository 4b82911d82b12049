"""One instance fetches a mailbox at a time; the others stand by and take over.

PostgreSQL: a session advisory lock held on a connection of its own. If the
holder dies, PostgreSQL drops its connection and the lock with it, so a
standby instance acquires it on its next try. SQLite (one host by nature): an
open-file-description lock on one byte of the database file itself, far beyond
the bytes SQLite locks, released by the kernel on death. No lock file is left
beside the database.

The descriptors opened for those locks are never closed, only unlocked and kept
for the next lock (``_Descriptors``): closing any descriptor of a file cancels every
POSIX lock the process holds on that file, SQLite's own among them
(sqlite.org/howtocorrupt.html, 2.2). Each connection in WAL mode holds a shared lock
on the database file; with it silently gone, another process closing its last
connection (the outbox process of ``run --once``, a command, the console) found
itself alone, checkpointed and deleted the WAL and its index under this process's
open connections: a commit went missing, and a later read said "database disk image
is malformed".
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import struct
import threading
from contextlib import suppress
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from mailroute.errors import TransientError
from mailroute.store.db import Store

# SQLite locks bytes from 1 GiB on (its pending, reserved and shared bytes); the mailbox
# locks sit far beyond them, one byte per mailbox, so the two never meet.
LOCK_REGION = 1 << 40


def _byte_lock(offset: int, kind: int = fcntl.F_WRLCK) -> bytes:
    """A lock (or with F_UNLCK an unlock) of one byte, as ``struct flock`` (l_pid must
    be 0 for OFD locks)."""
    return struct.pack("hhqqixxxx", kind, os.SEEK_SET, offset, 1, 0)


class _Descriptors:
    """Descriptors of database files opened for mailbox locks: reused, never closed
    (see the module's docstring). One is in use by one lock at a time, so two locks of
    this process still exclude each other (each on a description of its own); the
    spare ones are kept by the file's identity, so a replaced file gets new ones."""

    def __init__(self) -> None:
        self._spare: dict[tuple[int, int], list[int]] = {}
        self._lock = threading.Lock()

    def take(self, path: Path) -> int:
        status = os.stat(path)
        with self._lock:
            spare = self._spare.get((status.st_dev, status.st_ino))
            if spare:
                return spare.pop()
        return os.open(path, os.O_RDWR)

    def give_back(self, descriptor: int) -> None:
        """``descriptor`` holds no lock any more: kept for the next one."""
        status = os.fstat(descriptor)
        with self._lock:
            self._spare.setdefault((status.st_dev, status.st_ino), []).append(descriptor)


_DESCRIPTORS = _Descriptors()


class MailboxLock:
    """Exclusive right to drain one mailbox, held until released or the process ends."""

    def __init__(self, store: Store, mailbox: str) -> None:
        self.store = store
        self.mailbox = mailbox
        digest = hashlib.sha256(mailbox.encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)
        self._connection: Any = None
        self._file: int | None = None

    @property
    def held(self) -> bool:
        """Whether we still hold it (a lost database connection loses the lock)."""
        if self._file is not None:
            return True
        if self._connection is None:
            return False
        try:
            self._connection.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            self._drop_connection()
            return False

    def acquire(self) -> bool:
        """Take the lock if free; True while we hold it. Never blocks.

        An unreachable database raises TransientError: it is an outage to wait
        out, not another instance holding the mailbox.
        """
        if self.held:
            return True
        if self.store.is_sqlite:
            return self._acquire_file()
        return self._acquire_advisory()

    def release(self) -> None:
        if self._file is not None:
            descriptor, self._file = self._file, None
            fcntl.fcntl(descriptor, fcntl.F_OFD_SETLK,
                        _byte_lock(self._lock_byte(), fcntl.F_UNLCK))
            _DESCRIPTORS.give_back(descriptor)  # never closed: see the module's docstring
        if self._connection is not None:
            with suppress(SQLAlchemyError):  # a lost connection took the lock with it
                self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            self._drop_connection()

    def _acquire_advisory(self) -> bool:
        connection = None
        try:
            connection = self.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            got = connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}
            ).scalar()
        except SQLAlchemyError as exc:
            if connection is not None:
                connection.close()
            cause = getattr(exc, "orig", None) or exc
            raise TransientError(f"database unavailable: {cause}") from exc
        if got:
            self._connection = connection
            return True
        connection.close()
        return False

    def _acquire_file(self) -> bool:
        path = self._database_path()
        if path is None:
            return True  # an in-memory database: nothing else can reach it
        try:
            descriptor = _DESCRIPTORS.take(path)
        except OSError as exc:
            raise TransientError(f"database file {path}: {exc.strerror}") from exc
        try:
            fcntl.fcntl(descriptor, fcntl.F_OFD_SETLK, _byte_lock(self._lock_byte()))
        except OSError as exc:
            _DESCRIPTORS.give_back(descriptor)  # not closed: see the module's docstring
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise TransientError(f"cannot lock {path}: {exc.strerror}") from exc
        self._file = descriptor
        return True

    def _database_path(self) -> Path | None:
        database = self.store.engine.url.database or ""
        return Path(database) if database and database != ":memory:" else None

    def _lock_byte(self) -> int:
        return LOCK_REGION + (self.key & 0xFFFFFFFF)

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        with contextlib.suppress(SQLAlchemyError):
            connection.close()


# The instances alive on one PostgreSQL database: each holds this advisory lock shared,
# so pg_locks counts them, and a dead one's entry goes with its connection.
INSTANCE_KEY = (0x6D726F75, 0x74650001)  # "mrou", "te" 1: a key of two int4s


class InstanceCount:
    """This instance's presence on PostgreSQL, and how many instances are present."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._connection: Any = None
        self._lock = threading.Lock()  # one connection, asked from every intake thread

    def join(self) -> None:
        """Be counted (again, after a lost connection); TransientError while unreachable."""
        with self._lock:
            self._join()

    def _join(self) -> None:
        if self._connection is not None:
            return
        try:
            connection = self.store.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT")
            connection.execute(text("SELECT pg_advisory_lock_shared(:a, :b)"),
                               {"a": INSTANCE_KEY[0], "b": INSTANCE_KEY[1]})
        except SQLAlchemyError as exc:
            cause = getattr(exc, "orig", None) or exc
            raise TransientError(f"database unavailable: {cause}") from exc
        self._connection = connection

    def alive(self) -> int:
        """Instances counted now (at least this one); 1 when the database cannot say."""
        with self._lock:
            return self._alive()

    def _alive(self) -> int:
        try:
            self._join()
            found = self._connection.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND classid = :a AND objid = :b AND objsubid = 2"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ), {"a": INSTANCE_KEY[0], "b": INSTANCE_KEY[1]}).scalar()
        except (SQLAlchemyError, TransientError):
            self._leave()
            return 1
        return max(1, int(found or 0))

    def leave(self) -> None:
        with self._lock:
            self._leave()

    def _leave(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:  # a pooled connection keeps its session, and the session its lock
            connection.execute(text("SELECT pg_advisory_unlock_shared(:a, :b)"),
                               {"a": INSTANCE_KEY[0], "b": INSTANCE_KEY[1]})
            connection.close()
        except SQLAlchemyError:
            with contextlib.suppress(SQLAlchemyError):
                connection.invalidate()
