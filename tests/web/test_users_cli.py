"""`mailroute users add` stores an argon2 hash (the password from stdin) that logs in."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from mailroute.cli import main
from mailroute.config import Config
from mailroute.store import Store
from mailroute.store.models import WebUser
from mailroute.web.auth import Sessions


def test_users_add_reads_the_password_from_stdin_and_keeps_a_hash(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "{sqlite_url}"\n', encoding="utf-8")
    store = Store(sqlite_url)
    store.upgrade()
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret pass\n"))
    assert main(["users", "add", "anna", "--role", "viewer", "--config", str(config)]) == 0
    with store.transaction() as session:
        user = session.scalars(select(WebUser)).one()
        assert (user.name, user.role) == ("anna", "viewer")
        assert user.password_hash.startswith("$argon2") and "s3cret" not in user.password_hash
    sessions = Sessions(store, Config().web, lambda: datetime.now(UTC))
    assert sessions.login("anna", "s3cret pass", "127.0.0.1") is not None
    assert sessions.login("anna", "wrong", "127.0.0.1") is None
    store.dispose()


def test_a_disabled_user_loses_their_session_and_cannot_log_in(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "{sqlite_url}"\n', encoding="utf-8")
    store = Store(sqlite_url)
    store.upgrade()
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret pass\n"))
    assert main(["users", "add", "boris", "--config", str(config)]) == 0
    sessions = Sessions(store, Config().web, lambda: datetime.now(UTC))
    token = sessions.login("boris", "s3cret pass", "127.0.0.1")
    assert token is not None and sessions.person(token) is not None

    assert main(["users", "disable", "boris", "--config", str(config)]) == 0
    assert sessions.person(token) is None  # the open session ended
    assert sessions.login("boris", "s3cret pass", "127.0.0.1") is None
    capsys.readouterr()
    assert main(["users", "list", "--json", "--config", str(config)]) == 0
    assert '"disabled": true' in capsys.readouterr().out
    assert main(["users", "enable", "boris", "--config", str(config)]) == 0
    assert sessions.login("boris", "s3cret pass", "127.0.0.1") is not None
    assert main(["users", "disable", "nobody", "--config", str(config)]) == 1
    store.dispose()
