"""XOAUTH2 logins: the token command and its cache, then IMAP (Dovecot) and SMTP (aiosmtpd).

The servers are real: Dovecot's oauth2 passdb checks each token against an introspection
endpoint served by the test, and the SMTP sink implements AUTH XOAUTH2 the way Gmail and
Microsoft 365 answer it. The token command is a script that counts its runs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support.configs import sample_letters, write_config
from support.dovecot import DovecotServer, ImapAccount, dovecot_binary
from support.oauth2 import IntrospectionServer, TokenCommand
from support.services import free_port, require_service
from support.smtp import SmtpSink

from mailroute import config as config_module
from mailroute.config import MailboxConfig, RepliesConfig, SmtpConfig
from mailroute.errors import ConfigError, MailboxUnavailable, TransientError
from mailroute.mail import oauth2
from mailroute.mail.imap import ImapSource
from mailroute.mail.oauth2 import TokenCommandFailed, TokenSource, parse_output
from mailroute.mail.outbox import deliver_due
from mailroute.store import Store
from mailroute.store.models import OutboxItem

MAILROUTE = [sys.executable, "-m", "mailroute"]
GOOD = "ya29.good-token-0123456789abcdef"
BAD = "ya29.revoked-token-fedcba9876543210"
DESK = "servicedesk@example.com"
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ the token command


def test_json_token_is_cached_until_shortly_before_it_expires(tmp_path: Path) -> None:
    command = TokenCommand(tmp_path / "helper", GOOD, mode="3600")
    clock = Clock()
    tokens = TokenSource(command.command, clock=clock)
    assert tokens.token() == GOOD
    assert tokens.token() == GOOD
    assert command.runs == 1
    clock.now += 3600 - oauth2.REFRESH_MARGIN - 1
    command.set(token="ya29.next-token-aaaaaaaaaaaaaaaa")
    assert tokens.token() == GOOD and command.runs == 1  # still valid for over a minute
    clock.now += 2
    assert tokens.token() == "ya29.next-token-aaaaaaaaaaaaaaaa"
    assert command.runs == 2


def test_bare_token_is_trusted_for_the_default_lifetime(tmp_path: Path) -> None:
    command = TokenCommand(tmp_path / "helper", GOOD, mode="bare")
    clock = Clock()
    tokens = TokenSource(command.command, clock=clock)
    assert tokens.token() == GOOD
    clock.now += oauth2.DEFAULT_LIFETIME - oauth2.REFRESH_MARGIN - 1
    assert tokens.token() == GOOD and command.runs == 1
    clock.now += 2
    tokens.token()
    assert command.runs == 2


def test_invalidate_forces_a_new_run_but_spares_a_newer_token(tmp_path: Path) -> None:
    command = TokenCommand(tmp_path / "helper", BAD)
    tokens = TokenSource(command.command)
    refused = tokens.token()
    tokens.invalidate(refused)
    command.set(token=GOOD)
    assert tokens.token() == GOOD and command.runs == 2
    tokens.invalidate(refused)  # a late failure report about the old token
    assert tokens.token() == GOOD and command.runs == 2
    tokens.invalidate()
    assert tokens.token() == GOOD and command.runs == 3


def test_concurrent_callers_run_the_command_once(tmp_path: Path) -> None:
    command = TokenCommand(tmp_path / "helper", GOOD)
    tokens = TokenSource(command.command)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(tokens.token())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [GOOD] * 8
    assert command.runs == 1


def test_failing_command_names_program_and_status_but_not_its_output(tmp_path: Path) -> None:
    command = TokenCommand(tmp_path / "helper", GOOD, mode="fail")
    with pytest.raises(TokenCommandFailed) as caught:
        TokenSource(command.command).token()
    message = str(caught.value)
    assert isinstance(caught.value, TransientError)  # retried with backoff
    assert str(command.path) in message
    assert "exit status 3" in message
    assert "refresh token expired; sign in again" in message  # stderr is quoted
    assert GOOD not in message


def test_command_arguments_are_not_named_and_stderr_echo_of_the_token_is_masked(
    tmp_path: Path,
) -> None:
    script = tmp_path / "echoes"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nprint('{GOOD}')\n"
        f"print('bad token {GOOD} for', sys.argv[1], file=sys.stderr)\nsys.exit(1)\n"
    )
    script.chmod(0o755)
    with pytest.raises(TokenCommandFailed) as caught:
        TokenSource(f"{script} --account desk").token()
    assert GOOD not in str(caught.value)
    assert "bad token ******** for --account" in str(caught.value)


def test_missing_command_and_timeout_are_clear(tmp_path: Path) -> None:
    with pytest.raises(TokenCommandFailed, match=r"/nonexistent/helper cannot be run: No such"):
        TokenSource("/nonexistent/helper --flag").token()
    started = time.monotonic()
    with pytest.raises(TokenCommandFailed, match=r"sleep did not finish within 0.5 s"):
        TokenSource("sleep 30", timeout=0.5).token()
    assert time.monotonic() - started < 5


def test_no_shell_and_credentials_directory_expanded(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(GOOD + "\n")
    command = "cat ${CREDENTIALS_DIRECTORY}/token"
    tokens = TokenSource(command, environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert tokens.token() == GOOD
    with pytest.raises(TokenCommandFailed, match=r"CREDENTIALS_DIRECTORY, which is not set"):
        TokenSource(command, environ={}).token()
    # No shell: ";" is an argument, not a command separator.
    with pytest.raises(TokenCommandFailed, match=r"echo printed no usable token: .*several"):
        TokenSource("echo a; echo b").token()


@pytest.mark.parametrize(
    ("output", "lifetime"),
    [
        (f"{GOOD}\n", None),
        (f'{{"access_token": "{GOOD}", "expires_in": 3599}}', 3599.0),
        (f'{{"accessToken": "{GOOD}", "expires_on": "NOW+600"}}', 600.0),
        (f'{{"access_token": "{GOOD}", "expiry": "2999-01-01T00:00:00Z"}}', None),
    ],
)
def test_output_forms(output: str, lifetime: float | None) -> None:
    # an absolute expiry is made when the test runs, not when it is collected
    output = output.replace("NOW+600", str(int(time.time()) + 600))
    token, seconds = parse_output(output)
    assert token == GOOD
    if lifetime is None and "expiry" not in output:
        assert seconds is None
    elif lifetime is None:
        assert seconds is not None and seconds > 10**9
    else:
        assert seconds is not None and abs(seconds - lifetime) < 5


@pytest.mark.parametrize(
    "output",
    ["", "   \n", f'{{"access_token": "{GOOD}"', '{"token": "x"}', f"{GOOD}\n{GOOD}\n",
     f'{{"access_token": "{GOOD}", "expires_in": "soon"}}'],
)
def test_unusable_output_is_refused_without_quoting_it(output: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_output(output)
    assert GOOD not in str(caught.value)


# ------------------------------------------------------------------------- config


def load(tmp_path: Path, text: str) -> config_module.Config:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return config_module.load(path, environ={})


def test_config_xoauth2_needs_username_and_command(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r'mailbox: auth = "xoauth2" needs username and '
                                          r"oauth2_token_command"):
        load(tmp_path, '[mailbox]\nhost = "imap.example.com"\nauth = "xoauth2"\n')
    with pytest.raises(ConfigError, match=r'smtp: oauth2_token_command is set: set auth = "xo'):
        load(tmp_path, '[smtp]\nusername = "desk"\noauth2_token_command = "helper"\n')
    with pytest.raises(ConfigError, match=r"smtp.oauth2_token_command: cannot split"):
        load(tmp_path, '[smtp]\nauth = "xoauth2"\nusername = "d"\n'
                       "oauth2_token_command = \"helper 'unclosed\"\n")
    loaded = load(tmp_path, '[smtp]\nauth = "xoauth2"\nusername = "desk@example.com"\n'
                            'oauth2_token_command = "helper --for desk"\n')
    assert loaded.smtp.auth == "xoauth2"
    assert loaded.mailbox.auth == "password"


# ------------------------------------------------------------------- IMAP (Dovecot)


@pytest.fixture(scope="module")
def introspection() -> Iterator[IntrospectionServer]:
    with IntrospectionServer() as server:
        yield server


@pytest.fixture(scope="module")
def oauth2_dovecot(introspection: IntrospectionServer) -> Iterator[DovecotServer]:
    """A Dovecot offering XOAUTH2, checking tokens with ``introspection``."""
    if not dovecot_binary().is_file():
        require_service("Dovecot", f"{dovecot_binary()} not found (apt-get install dovecot-imapd)")
    server = DovecotServer(oauth2_introspection_url=introspection.url)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def oauth2_account(
    oauth2_dovecot: DovecotServer, introspection: IntrospectionServer
) -> ImapAccount:
    """A fresh account whose valid access token is ``GOOD + account name``."""
    account = oauth2_dovecot.new_account()
    introspection.tokens[GOOD + account.username] = account.username
    return account


def xoauth2_mailbox(account: ImapAccount, command: str) -> MailboxConfig:
    return MailboxConfig(host=account.host, port=account.port, security="none",
                         username=account.username, auth="xoauth2",
                         oauth2_token_command=command)


LETTER = b"From: a@b.example\r\nSubject: one\r\nMessage-ID: <1@b>\r\n\r\nbody\r\n"


@pytest.mark.services
def test_imap_xoauth2_login_reads_the_mailbox(oauth2_account: ImapAccount, tmp_path: Path) -> None:
    oauth2_account.append(LETTER)
    command = TokenCommand(tmp_path / "helper", GOOD + oauth2_account.username)
    for _ in range(2):  # a reconnect with a new source reuses the cached token
        source = ImapSource(xoauth2_mailbox(oauth2_account, command.command))
        try:
            assert source.select() > 0
            assert [f.raw for f in source.fetch(source.list_uids())] == [LETTER]
        finally:
            source.close()
    assert command.runs == 1


@pytest.mark.services
def test_imap_refused_token_is_reported_and_fetched_anew(
    oauth2_account: ImapAccount, oauth2_dovecot: DovecotServer, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")  # imapclient and imaplib log at DEBUG: the token must not show
    command = TokenCommand(tmp_path / "helper", BAD)
    tokens = TokenSource(command.command)
    source = ImapSource(xoauth2_mailbox(oauth2_account, command.command), tokens=tokens)
    with pytest.raises(MailboxUnavailable) as caught:
        source.select()
    message = str(caught.value)
    assert message.startswith(f"IMAP XOAUTH2 login refused for {oauth2_account.username}: ")
    assert "AUTHENTICATIONFAILED" in message
    assert BAD not in message
    assert BAD not in caplog.text and BAD not in oauth2_dovecot.log()

    command.set(token=GOOD + oauth2_account.username)  # the helper got a new token
    try:
        assert source.select() > 0  # no stale cache: the refused token was forgotten
    finally:
        source.close()
    assert command.runs == 2
    assert GOOD not in caplog.text


@pytest.mark.services
def test_imap_token_command_failure_is_a_mailbox_error(
    oauth2_account: ImapAccount, tmp_path: Path
) -> None:
    command = TokenCommand(tmp_path / "helper", GOOD, mode="fail")
    source = ImapSource(xoauth2_mailbox(oauth2_account, command.command))
    with pytest.raises(MailboxUnavailable,
                       match=rf"IMAP XOAUTH2 token for {oauth2_account.username}: OAuth2 token "
                             r"command .*token-helper failed with exit status 3: helper: refresh"):
        source.select()


# ------------------------------------------------------------------- SMTP (aiosmtpd)


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    store = Store(sqlite_url)
    store.upgrade()
    yield store
    store.dispose()


def queue(store: Store, number: int = 1) -> int:
    raw = (f"From: ServiceDesk <{DESK}>\r\nTo: c@customer.example\r\nSubject: [SD-000001] t\r\n"
           f"Message-ID: <r{number}@example.com>\r\n\r\nhi\r\n").encode()
    with store.transaction() as session:
        item = OutboxItem(kind="acknowledgement", sender=DESK, recipient="c@customer.example",
                          message_id=f"<r{number}@example.com>", subject="s", raw=raw,
                          state="pending",
                          attempts=0, not_before=NOW, created_at=NOW)
        session.add(item)
        session.flush()
        item_id: int = item.id
        return item_id


def outbox_item(store: Store, item_id: int) -> OutboxItem:
    with store.transaction() as session:
        found = session.get(OutboxItem, item_id)
        assert found is not None
        return found


def xoauth2_smtp(sink: SmtpSink, command: str) -> SmtpConfig:
    return SmtpConfig(host=sink.host, port=sink.port, security="none", timeout=5,
                      username=DESK, auth="xoauth2",
                      oauth2_token_command=command)


@pytest.fixture
def xoauth2_sink() -> Iterator[SmtpSink]:
    with SmtpSink(xoauth2={DESK: GOOD}) as sink:
        yield sink


@pytest.mark.services
def test_smtp_xoauth2_sends_and_reuses_the_token(
    store: Store, xoauth2_sink: SmtpSink, tmp_path: Path
) -> None:
    command = TokenCommand(tmp_path / "helper", GOOD)
    first = queue(store)
    report = deliver_due(store, xoauth2_smtp(xoauth2_sink, command.command), RepliesConfig(), NOW)
    assert report.sent == [first]
    assert xoauth2_sink.wait_for(1)[0].rcpt_tos == ("c@customer.example",)
    second = queue(store, 2)
    report = deliver_due(store, xoauth2_smtp(xoauth2_sink, command.command), RepliesConfig(), NOW)
    assert report.sent == [second]
    assert xoauth2_sink.auth_attempts == [(DESK, True), (DESK, True)]
    assert command.runs == 1


@pytest.mark.services
def test_smtp_refused_token_keeps_the_reply_queued_and_is_fetched_anew(
    store: Store, xoauth2_sink: SmtpSink, tmp_path: Path
) -> None:
    command = TokenCommand(tmp_path / "helper", BAD)
    smtp = xoauth2_smtp(xoauth2_sink, command.command)
    item_id = queue(store)
    report = deliver_due(store, smtp, RepliesConfig(), NOW)
    assert report.retried == [item_id] and report.sent == []
    queued = outbox_item(store, item_id)
    assert queued.state == "pending"
    assert queued.last_error == (
        f"SMTP XOAUTH2 login refused for {DESK}: 535 5.7.8 Username and Password not accepted"
    )
    assert xoauth2_sink.auth_attempts == [(DESK, False)]

    command.set(token=GOOD)
    report = deliver_due(store, smtp, RepliesConfig(), queued.not_before)
    assert report.sent == [item_id]
    assert command.runs == 2
    assert xoauth2_sink.wait_for(1)


@pytest.mark.services
def test_smtp_server_without_xoauth2_is_named(
    store: Store, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    command = TokenCommand(tmp_path / "helper", GOOD)
    item_id = queue(store)
    deliver_due(store, xoauth2_smtp(smtp_sink, command.command), RepliesConfig(), NOW)
    error = outbox_item(store, item_id).last_error or ""
    assert "does not offer AUTH XOAUTH2 (offers: no AUTH)" in error
    assert command.runs == 0  # no token is fetched for a server that cannot take it


# ------------------------------------------------------------------ the whole daemon


def xoauth2_config(
    tmp_path: Path, account: ImapAccount, sink: SmtpSink, command: TokenCommand,
    **extra: dict[str, Any],
) -> Path:
    sections: dict[str, dict[str, Any]] = {
        "mailbox": {"auth": "xoauth2", "oauth2_token_command": command.command},
        "smtp": {"auth": "xoauth2", "oauth2_token_command": command.command, "username": DESK},
        **extra,
    }
    path = write_config(tmp_path / "config.toml", account=account, sink=sink,
                        database_url=f"sqlite:///{tmp_path / 'mailroute.db'}", extra=sections)
    subprocess.run([*MAILROUTE, "--config", str(path), "db", "upgrade"], check=True,
                   capture_output=True)
    return path


@pytest.mark.services
def test_run_once_with_xoauth2_for_imap_and_smtp_runs_the_command_once(
    oauth2_account: ImapAccount, tmp_path: Path
) -> None:
    token = GOOD + oauth2_account.username
    command = TokenCommand(tmp_path / "helper", token)
    for raw in sample_letters()[:3]:
        oauth2_account.append(raw)
    with SmtpSink(xoauth2={DESK: token}) as sink:
        config = xoauth2_config(tmp_path, oauth2_account, sink, command)
        result = subprocess.run([*MAILROUTE, "--config", str(config), "run", "--once"],
                                capture_output=True, text=True, check=False, timeout=60)
        assert result.returncode == 0, result.stderr
        assert len(sink.received()) == 3
        assert sink.auth_attempts == [(DESK, True)]
    assert command.runs == 1  # [mailbox] and [smtp] name the same command: one token
    assert token not in result.stderr


@pytest.mark.services
def test_refused_imap_login_fails_run_once_and_shows_in_status_and_metrics(
    oauth2_account: ImapAccount, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    command = TokenCommand(tmp_path / "helper", BAD)
    port = free_port()
    config = xoauth2_config(tmp_path, oauth2_account, smtp_sink, command,
                            metrics={"listen": f"127.0.0.1:{port}"})
    refused = f"IMAP XOAUTH2 login refused for {oauth2_account.username}: "

    once = subprocess.run([*MAILROUTE, "--config", str(config), "run", "--once"],
                          capture_output=True, text=True, check=False, timeout=60)
    assert once.returncode == 1
    assert f"mailroute: {refused}" in once.stderr
    assert BAD not in once.stderr

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    daemon = subprocess.Popen([*MAILROUTE, "--config", str(config), "run"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        errors = wait_for_metric(port, r'mailroute_errors_total\{part="intake"\} (\d+)', 2)
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=20)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    assert errors >= 2  # retried with backoff
    assert command.runs >= 3  # every refusal made the next attempt fetch a new token
    lost = [line for line in stderr.splitlines() if 'event="cannot connect"' in line]
    assert len(lost) == 1, stderr  # logged when it starts, not on every retry
    assert refused in lost[0]
    assert BAD not in stderr

    status = subprocess.run([*MAILROUTE, "--config", str(config), "status"],
                            capture_output=True, text=True, check=False, timeout=60)
    assert status.returncode == 1
    assert f"failing: intake: {refused}" in status.stdout
    assert BAD not in status.stdout


def wait_for_metric(port: int, pattern: str, at_least: int, timeout: float = 30) -> int:
    deadline, value = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as page:
                match = re.search(pattern, page.read().decode())
        except OSError:
            match = None
        if match:
            value = int(float(match.group(1)))
            if value >= at_least:
                return value
        time.sleep(0.2)
    raise AssertionError(f"{pattern} did not reach {at_least} within {timeout} s (last {value})")
