"""Engine, transactions and schema version: the one place that talks to the database driver."""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mailroute import logs
from mailroute.config import WebhookConfig
from mailroute.errors import DatabaseFileReplaced, DatabaseNotReady, TransientError
from mailroute.store.webhooks import SESSION_KEY as WEBHOOKS_KEY
from mailroute.store.webhooks import Subscription

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

log = logs.get("mailroute.store")
SQLITE_TURN_SECONDS = 30.0  # as long as SQLite's own busy_timeout below
ALARM_SUFFIX = ".alarm"  # beside the SQLite file while its daemon finds it replaced


# note_growth: the tables a backlog fills, analysed once the letters have doubled, and
# at least this many more
GROWING_TABLES = ("letters", "requests", "request_events", "outbox", "attachments", "blobs")
ANALYZE_AFTER_LETTERS = 1000

READ_ONLY = "mailroute_read_only"  # execution option of the engine behind Store.reading


class Store:
    """A database: sessions in explicit transactions, and its schema version."""

    def __init__(self, url: str, name: str = "mailroute") -> None:
        """``name``: what the store's connections are called on PostgreSQL
        (``application_name``, see :func:`make_engine`)."""
        self.url = url
        self.engine = make_engine(url, name)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Reads for people and programs (console, API, CLI views): on SQLite a deferred
        # BEGIN, a snapshot of the WAL that takes no write lock and waits for no turn.
        self._reads = sessionmaker(self.engine.execution_options(**{READ_ONLY: True}),
                                   expire_on_commit=False)
        # the webhooks each transaction queues events for (store.webhooks); set by
        # whoever read the config (``use_webhooks``), none until then
        self.webhooks: tuple[Subscription, ...] = ()
        self._turns = _Turns(SQLITE_TURN_SECONDS) if self.is_sqlite else None
        self._growth: _Growth | None = None  # PostgreSQL: see note_growth
        path = sqlite_file(url)
        self._file = _FileWatch(path) if path is not None else None
        if self._file is not None:
            event.listen(self.engine, "do_connect", self._file.before_connect)
            event.listen(self.engine, "connect", self._file.connected)

    def use_webhooks(self, hooks: Iterable[WebhookConfig]) -> None:
        """Queue request events for these webhooks from now on (at start and on reload)."""
        self.webhooks = Subscription.of(hooks)

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
            session = self._sessions(info={WEBHOOKS_KEY: self.webhooks})
            try:
                with session.begin():
                    yield session
                    if self._file is not None:  # commit nothing to a file no longer in place
                        self._file.check()
            except OperationalError as exc:
                raise TransientError(f"database unavailable: {exc.orig or exc}") from exc
            finally:
                session.close()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only unit of work that never holds up intake.

        Every SQLite transaction of :meth:`transaction` takes the write lock (BEGIN
        IMMEDIATE) and queues for this process's turn; a console page or an API call
        done that way waited behind a backlog's commits and held intake up in turn.
        Here SQLite gets a deferred BEGIN: the reader sees one snapshot of the WAL
        while writers carry on. Nothing may be written in it: on SQLite a write would
        have to wait for the lock outside this process's turns.
        """
        session = self._reads()
        try:
            with session.begin():
                yield session
        except OperationalError as exc:
            raise TransientError(f"database unavailable: {exc.orig or exc}") from exc
        finally:
            session.close()

    def turn(self) -> AbstractContextManager[None]:
        """This process's turn for one transaction: on SQLite the write lock is handed
        over in order (see :class:`_Turns`); elsewhere nothing to wait for.

        On a SQLite file the turn is refused (DatabaseFileReplaced) while the file at
        the path is not the one this process opened."""
        if self._turns is None:
            return nullcontext()
        return self._turns.take(self._file.check if self._file is not None else None)

    def note_growth(self, letters: int) -> None:
        """``letters`` more were stored: on PostgreSQL, refresh the planner's statistics
        of the tables a backlog grows once they have grown past what it last counted.

        A first start on a mailbox with years of history fills empty tables faster than
        autovacuum looks at them (every minute, after 10 % more rows): the planner went
        on estimating one row, and the per-batch reply counts, planned for an empty
        outbox, cost 11-13 ms a batch against 9,000 replies instead of 1.6-2.7. So the
        tables are analysed whenever they have doubled (at least 1,000 letters more):
        a handful of times in a backlog, and never for a desk's ordinary trickle into
        tables that already hold more than that.
        """
        if self.is_sqlite:
            return
        growth = self._growth
        if growth is None:
            try:
                counted = self._counted_letters()
            except SQLAlchemyError:  # then as if never analysed
                counted = 0
            growth = self._growth = _Growth(counted)
        growth.added += letters
        if growth.added < max(ANALYZE_AFTER_LETTERS, growth.counted):
            return
        growth.counted, growth.added = growth.counted + growth.added, 0
        try:
            with self.engine.connect() as connection:
                connection = connection.execution_options(isolation_level="AUTOCOMMIT")
                connection.execute(text(f"ANALYZE {', '.join(GROWING_TABLES)}"))
        except SQLAlchemyError as exc:  # a help, not a need: intake goes on without it
            log.warning("cannot refresh the planner's statistics",
                        error=f"{type(exc).__name__}: {exc}".splitlines()[0])
            return
        log.debug("planner statistics refreshed", tables=",".join(GROWING_TABLES),
                  letters=growth.counted)

    def _counted_letters(self) -> int:
        """The letters PostgreSQL's statistics last counted (0 if never analysed)."""
        with self.engine.connect() as connection:
            counted = connection.scalar(text(
                "SELECT reltuples FROM pg_class WHERE oid = to_regclass('letters')"))
        return max(0, int(counted or 0))

    def dispose(self) -> None:
        self.engine.dispose()
        if self._file is not None:
            self._file.close()

    # ------------------------------------------------------------------ schema

    def upgrade(self) -> str | None:
        """Bring the schema to the newest migration; returns the revision reached."""
        from alembic import command

        command.upgrade(_alembic_config(self.url), "head")
        return self.current_revision()

    def current_revision(self) -> str | None:
        """The revision in ``alembic_version``; None for a database without the schema."""
        with self.engine.connect() as conn:
            if not inspect(conn).has_table(VERSION_TABLE):
                return None
            return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()

    def head_revision(self) -> str | None:
        """The newest migration, as alembic reads it from the migration scripts."""
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(_alembic_config(self.url)).get_current_head()

    def require_current(self) -> None:
        """Refuse to work on a database that is not at the newest migration.

        The newest is read from the scripts' file names (:func:`newest_migration`), not
        by alembic, which imports itself and every script to say so: a tenth of a
        second of every start of every command."""
        try:
            current = self.current_revision()
        except OperationalError as exc:
            raise TransientError(f"database unavailable: {exc.orig or exc}") from exc
        head = newest_migration()
        if current != head:
            state = "has no mailroute schema" if current is None else f"is at revision {current}"
            raise DatabaseNotReady(
                f"the database {self.engine.url.render_as_string(hide_password=True)} {state}, "
                f"this mailroute needs {head}: run `mailroute db upgrade`"
            )


VERSION_TABLE = "alembic_version"  # alembic's default, which migrations/env.py keeps


def newest_migration() -> str:
    """The revision of the newest migration script: each is named after its revision
    (``0015_outbox_counts_covered.py`` holds revision ``0015``) and the revisions count
    up, one chain (``tests/store/test_store.py`` holds alembic to both)."""
    versions = resources.files("mailroute.migrations") / "versions"
    numbers = [entry.name.split("_", 1)[0] for entry in versions.iterdir()
               if entry.name.endswith(".py") and entry.name[:1].isdigit()]
    return max(numbers, key=int)


@dataclass
class _Growth:
    """Letters stored since the planner's statistics were last refreshed (note_growth)."""

    counted: int  # the letters the statistics counted then
    added: int = 0


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
    def take(self, check: Callable[[], None] | None = None) -> Iterator[None]:
        """The turn; ``check`` runs once it is ours, and may refuse it by raising."""
        self._acquire()
        try:
            if check is not None:
                check()
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


class _FileWatch:
    """Is the SQLite file this process opened still the file at its path?

    A file moved away, deleted or replaced (a restored backup, ``mv new.db
    mailroute.db``) under a running process stays open: without this, letters were
    filed while their records went to the unlinked file, and nothing said so. The
    path's device and inode are compared with those noted when the first connection
    opened it, before every transaction (a stat, about a microsecond) and before
    every new connection (which would otherwise create an empty file at the path).
    The first refusal is logged and written to an alarm file beside the database for
    `mailroute status`; the file coming back is logged once too.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.alarm = alarm_path(path)
        self._opened: tuple[int, int] | None = None
        self._problem: str | None = None
        self._lock = threading.Lock()

    def before_connect(self, *_args: Any) -> None:
        """Engine ``do_connect`` hook: no new connection while the file is not in place."""
        self.check()

    def connected(self, _dbapi_connection: Any, _record: Any) -> None:
        """Engine ``connect`` hook: the first connection notes which file it opened."""
        with self._lock:
            if self._opened is None:
                self._opened = _identity(self.path)

    def check(self) -> None:
        """Raise DatabaseFileReplaced unless the path still names the file opened."""
        with self._lock:
            if self._opened is None:
                return  # nothing opened yet: whatever is at the path is ours
            problem = self._compare(_identity(self.path))
            self._note(problem)
        if problem is not None:
            raise DatabaseFileReplaced(problem)

    def close(self) -> None:
        """The process stops using the file: its alarm, if any, goes with it."""
        with self._lock:
            if self._problem is not None:
                with suppress(OSError):
                    self.alarm.unlink()

    def _compare(self, current: tuple[int, int] | None) -> str | None:
        if current == self._opened:
            return None
        happened = "was moved away or deleted" if current is None else "was replaced"
        return (
            f"the SQLite database {self.path} {happened} under the running daemon; intake "
            "is stopped and nothing is written until the file it opened is back at that "
            "path (or the daemon is restarted to use the new one)"
        )

    def _note(self, problem: str | None) -> None:
        """Log and raise the alarm when the problem starts; clear both when it ends."""
        if problem == self._problem:
            return
        if problem is not None:
            log.error("database file replaced", path=str(self.path), error=problem)
            self._write_alarm(problem)
        else:
            log.info("database file back", path=str(self.path))
            with suppress(OSError):
                self.alarm.unlink()
        self._problem = problem

    def _write_alarm(self, problem: str) -> None:
        alarm = {"pid": os.getpid(), "since": datetime.now(UTC).isoformat(), "problem": problem}
        scratch = self.alarm.with_name(f"{self.alarm.name}.{os.getpid()}")
        try:
            scratch.write_text(json.dumps(alarm), encoding="utf-8")
            scratch.replace(self.alarm)
        except OSError as exc:  # the log line above is still there
            log.warning("database alarm not written", path=str(self.alarm), error=str(exc))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for other databases and in-memory ones."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return None
    database = parsed.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().absolute()


def alarm_path(database: Path) -> Path:
    """Where a daemon says that the SQLite file at ``database`` is not the one it opened."""
    return database.with_name(database.name + ALARM_SUFFIX)


def read_alarm(database: Path) -> str | None:
    """The problem a live daemon reported for this SQLite file, if any.

    An alarm left by a process that has died is ignored: the next daemon will open
    whatever file is at the path, so the mismatch it reported is gone with it.
    """
    try:
        alarm = json.loads(alarm_path(database).read_text(encoding="utf-8"))
        pid, problem = int(alarm["pid"]), str(alarm["problem"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, under another user
    return f"{problem} (reported by pid {pid} since {alarm.get('since', '?')})"


def make_engine(url: str, name: str = "mailroute") -> Engine:
    """An engine with the settings each backend needs for a long-running daemon.

    On PostgreSQL its connections carry ``name`` as their ``application_name`` (unless
    the URL sets one), so that ``pg_stat_activity``, the server's log and lock waits say
    which part of which mailroute holds a connection: the daemon's intake, its outbox
    process, the console or a command."""
    if url.startswith("sqlite"):
        _make_parent_dir(url)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    named = "application_name" in make_url(url).query
    return create_engine(url, pool_pre_ping=True, pool_recycle=1800,
                         connect_args={} if named else {"application_name": name[:63]})


def _make_parent_dir(url: str) -> None:
    path = url.split(":///", 1)[-1]
    if path and path != ":memory:" and not path.startswith("file:"):
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE instead of pysqlite's
    # deferred BEGIN: two threads upgrading read locks to write locks deadlock.
    dbapi_connection.isolation_level = None
    sqlite_page_size(dbapi_connection)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Statement journals in memory, not in a file of their own: see the note below.
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()
    # SQLite's own lower() folds ASCII only; searches of Cyrillic text need all of Unicode.
    dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)


SQLITE_PAGE_SIZE = 16384


def sqlite_page_size(dbapi_connection: Any) -> None:
    """Pages of 16 KiB for a database file not yet created (a no-op on one that is).

    Most of the bytes are letters' raw bytes (a mean of ~57 KB), kept in chains of
    overflow pages: with 4 KiB pages the WAL took ~100 page writes a letter, one
    ``pwrite`` each, and its checkpoints as many again. SQLite's own measurements
    (sqlite.org/intern-v-extern-blob.html) find 8-16 KiB pages the fastest for blobs
    of this size. Set before journal_mode: the WAL fixes the page size.
    """
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
    cursor.close()


# Why temp_store=MEMORY (set in _sqlite_on_connect). A statement inside a transaction that
# may fail half-way (an UPDATE of a column with a foreign key, a multi-row INSERT) keeps
# the pages it changes in a statement journal, to undo itself alone. SQLite keeps that
# journal in memory up to 64 KiB, then spills it to a temporary file (/var/tmp/etilqs_*)
# that stays open until the commit. A batch's UPDATE of its decided letters (one execution
# a letter, each journaling the 16 KiB pages it rewrites) wrote ~108 KB a letter there:
# 26,500 pwrite calls and ~217 MB for 2,000 letters, about what the WAL itself took
# (bench/README, fourteenth round). In memory, a journal holds one statement's pages and
# is emptied when the statement ends; temporary tables and sorts go to memory too, and
# mailroute's are small (a page of a list, a batch's ids).


def _unicode_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _sqlite_begin_immediate(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY)
                         else "BEGIN IMMEDIATE")


def _alembic_config(url: str) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("mailroute.migrations")))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg
