"""Shared fixtures: real Dovecot, a real SMTP sink and fresh databases (see tests/support).

A missing service skips the tests that need it, or fails them when
``MAILROUTE_REQUIRE_SERVICES=1`` (as in CI), so a broken CI machine cannot pass quietly.
Tests that use these fixtures are marked ``services`` automatically; ``-m "not services"``
gives a quick unit-only run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.databases import fresh_postgres_database
from support.databases import sqlite_url as make_sqlite_url
from support.dovecot import DovecotServer, ImapAccount, dovecot_binary
from support.services import require_service
from support.smtp import SmtpSink

# Fixtures that need a server; a test using any of them gets the ``services`` marker.
SERVICE_FIXTURES = frozenset(
    {"dovecot", "imap_account", "smtp_sink", "smtp_tls_sink", "postgres_url"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests that use a service fixture, so they can be deselected as a group."""
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """One private Dovecot for the whole session (about 0.1 s to start, 1 s to stop).

    Tests isolate themselves through ``imap_account`` (a fresh user each). Tests that
    ``stop()`` it should ``start()`` it again; ``imap_account`` restarts it if one did not.
    """
    binary = dovecot_binary()
    if not binary.is_file():
        require_service(
            "Dovecot",
            f"{binary} not found; install it with "
            "`apt-get install dovecot-imapd` (or set MAILROUTE_DOVECOT_BINARY)",
        )
    server = DovecotServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def imap_account(dovecot: DovecotServer) -> ImapAccount:
    """A new user on the session's Dovecot with an empty INBOX and no other folders."""
    if not dovecot.running:  # an earlier test stopped it and failed before restarting
        dovecot.start()
    return dovecot.new_account()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A plaintext SMTP server on 127.0.0.1 recording every message it accepts."""
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def smtp_tls_sink(tmp_path: Path) -> Iterator[SmtpSink]:
    """Like ``smtp_sink`` but offering STARTTLS; clients verify with ``smtp_tls_sink.ca_file``."""
    with SmtpSink(tls=True, cert_dir=tmp_path / "smtp-tls") as sink:
        yield sink


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a fresh SQLite database file (not created yet) in the test's tmp_path."""
    return make_sqlite_url(tmp_path)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of a freshly created, empty PostgreSQL database, dropped after the test."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.services),
    ]
)
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh empty database URL; the test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        url: str = request.getfixturevalue("sqlite_url")
    else:
        url = request.getfixturevalue("postgres_url")
    return url
