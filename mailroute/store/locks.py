"""One instance fetches a mailbox at a time; the others stand by and take over.

PostgreSQL: a session advisory lock held on a connection of its own. If the
holder dies, PostgreSQL drops its connection and the lock with it, so a
standby instance acquires it on its next try. SQLite (one host by nature): an
``flock`` on a file beside the database, released by the kernel on death.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from contextlib import suppress
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from mailroute.errors import TransientError
from mailroute.store.db import Store


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
            fcntl.flock(self._file, fcntl.LOCK_UN)
            os.close(self._file)
            self._file = None
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
        path = self._lock_path()
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return False
        self._file = descriptor
        return True

    def _lock_path(self) -> Path:
        database = self.store.engine.url.database or ""
        base = Path(database) if database and database != ":memory:" else Path("/tmp/mailroute")
        return base.with_name(f"{base.name}.{self.key & 0xFFFFFFFF:08x}.lock")

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        with contextlib.suppress(SQLAlchemyError):
            connection.close()
