"""A fresh, empty database per test, on SQLite or on a real PostgreSQL.

The store must behave the same on both (locking, ``ON CONFLICT``, time zones, sequences), so
store tests run against each. PostgreSQL tests get a database of their own, created from
the server named by ``MAILROUTE_TEST_DATABASE_URL`` and dropped afterwards, so tests never
see each other's rows or migrations and can run against a shared server.

On the CI machine the server URL is ``postgresql+psycopg://root@127.0.0.1:5432/test``
(trust authentication); ``.ci/run`` exports it. Without the variable PostgreSQL tests are
skipped, or fail when ``MAILROUTE_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from .services import require_service

DATABASE_URL_ENV = "MAILROUTE_TEST_DATABASE_URL"
CONNECT_TIMEOUT_SECONDS = 5


def sqlite_url(directory: Path) -> str:
    """URL of a not-yet-existing SQLite file in *directory* (e.g. pytest's tmp_path)."""
    return f"sqlite:///{directory / 'mailroute.db'}"


def postgres_server_url() -> URL:
    """The PostgreSQL server to create test databases on; skips (or fails in CI) if unset."""
    value = os.environ.get(DATABASE_URL_ENV, "").strip()
    if not value:
        require_service(
            "PostgreSQL",
            f"{DATABASE_URL_ENV} is not set "
            "(e.g. postgresql+psycopg://root@127.0.0.1:5432/test)",
        )
    url = make_url(value)
    if not url.drivername.startswith("postgresql"):
        raise ValueError(f"{DATABASE_URL_ENV} must be a postgresql:// URL, got {url.drivername}")
    return url


@contextmanager
def fresh_postgres_database(server_url: URL | None = None) -> Iterator[str]:
    """Create ``mailroute_test_<hex>`` on the server, yield its URL, drop it afterwards.

    ``DROP ... WITH (FORCE)`` (PostgreSQL 13+) also ends connections a failed test left
    open, e.g. from an engine that was never disposed.
    """
    server = server_url if server_url is not None else postgres_server_url()
    name = f"mailroute_test_{secrets.token_hex(6)}"
    admin = create_engine(
        server,
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,  # no connection may outlive the DROP
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
    )
    try:
        problem = None
        try:
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        except SQLAlchemyError as error:
            problem = str(error.orig if error.orig is not None else error).strip()
        if problem is not None:  # outside ``except``: no chained traceback in the report
            require_service(
                "PostgreSQL", f"cannot create a database on {server.render_as_string()}: {problem}"
            )
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def postgres_database_exists(name: str, server_url: URL | None = None) -> bool:
    """Whether database *name* exists (used to check that cleanup really drops it)."""
    server = server_url if server_url is not None else postgres_server_url()
    engine = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            found = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).scalar()
        return found is not None
    finally:
        engine.dispose()


@contextmanager
def statements_sent(engine: Engine) -> Iterator[list[str]]:
    """The SQL ``engine`` sends to the database while the block runs, in order."""
    sent: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", seen)
