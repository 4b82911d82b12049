"""Engine, transactions and schema version: the one place that talks to the database driver."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mailroute.errors import DatabaseNotReady, TransientError

SQLITE_TURN_SECONDS = 30.0  # as long as SQLite's own busy_timeout below


class Store:
    """A database: sessions in explicit transactions, and its schema version."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._turns = _Turns(SQLITE_TURN_SECONDS) if self.is_sqlite else None

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: committed when the block ends, rolled back if it raises.

        A lost connection or a locked database surfaces as TransientError, so the
        caller retries later instead of treating the letter as broken.
        """
        with self.turn():
            session = self._sessions()
            try:
                with session.begin():
                    yield session
            except OperationalError as exc:
                raise TransientError(f"database unavailable: {exc.orig or exc}") from exc
            finally:
                session.close()

    def turn(self) -> AbstractContextManager[None]:
        """This process's turn for one transaction: on SQLite the write lock is handed
        over in order (see :class:`_Turns`); elsewhere nothing to wait for."""
        return self._turns.take() if self._turns else nullcontext()

    def dispose(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ schema

    def upgrade(self) -> str | None:
        """Bring the schema to the newest migration; returns the revision reached."""
        command.upgrade(_alembic_config(self.url), "head")
        return self.current_revision()

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(_alembic_config(self.url)).get_current_head()

    def require_current(self) -> None:
        """Refuse to work on a database that is not at the newest migration."""
        try:
            current = self.current_revision()
        except OperationalError as exc:
            raise TransientError(f"database unavailable: {exc.orig or exc}") from exc
        head = self.head_revision()
        if current != head:
            state = "has no mailroute schema" if current is None else f"is at revision {current}"
            raise DatabaseNotReady(
                f"the database {self.engine.url.render_as_string(hide_password=True)} {state}, "
                f"this mailroute needs {head}: run `mailroute db upgrade`"
            )


class _Turns:
    """First come, first served among this process's SQLite transactions.

    Every SQLite transaction here takes the write lock (BEGIN IMMEDIATE), and a
    thread that finds it taken polls with sleeps of up to 100 ms, so a thread
    committing back to back (intake in a backlog) kept the outbox waiting for
    seconds, and a reply the SMTP server had accepted stayed unmarked that long:
    a SIGKILL then sent it twice. Queueing in the process hands the lock over in
    order instead. Other processes still meet SQLite's own busy timeout.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._mutex = threading.Lock()
        self._waiting: deque[threading.Event] = deque()
        self._held = False

    @contextmanager
    def take(self) -> Iterator[None]:
        self._acquire()
        try:
            yield
        finally:
            self._release()

    def _acquire(self) -> None:
        with self._mutex:
            if not self._held:
                self._held = True
                return
            turn = threading.Event()
            self._waiting.append(turn)
        if turn.wait(self.timeout):
            return
        with self._mutex:
            if turn.is_set():  # handed over just as the time ran out
                return
            self._waiting.remove(turn)
        raise TransientError(f"database busy: no turn within {self.timeout:.0f} s")

    def _release(self) -> None:
        with self._mutex:
            if self._waiting:
                self._waiting.popleft().set()  # handed straight over: still held
            else:
                self._held = False


def make_engine(url: str) -> Engine:
    """An engine with the settings each backend needs for a long-running daemon."""
    if url.startswith("sqlite"):
        _make_parent_dir(url)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_recycle=1800)


def _make_parent_dir(url: str) -> None:
    path = url.split(":///", 1)[-1]
    if path and path != ":memory:" and not path.startswith("file:"):
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE instead of pysqlite's
    # deferred BEGIN: two threads upgrading read locks to write locks deadlock.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("mailroute.migrations")))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg
