"""Tests of the service harness itself (tests/support), so that integration tests can trust it.

Each test checks something that a misconfigured harness would get wrong: byte fidelity
of stored mail, capabilities the daemon relies on, restart behaviour, certificate
verification, failure injection and database cleanup.
"""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from support.databases import (
    fresh_postgres_database,
    postgres_database_exists,
    postgres_server_url,
)
from support.dovecot import DOVECOT_BINARY_ENV, DovecotServer, ImapAccount
from support.services import REQUIRE_SERVICES_ENV, require_service
from support.smtp import SmtpSink

pytestmark = pytest.mark.services

TESTS_DIR = Path(__file__).parent

LETTER_ONE = (
    b"From: =?utf-8?b?0JjQstCw0L0=?= <ivan@example.org>\r\n"
    b"To: support@example.com\r\n"
    b"Subject: =?utf-8?b?0J3QtSDRgNCw0LHQvtGC0LDQtdGCINC/0YDQuNC90YLQtdGA?=\r\n"
    b"Message-ID: <one@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    + "Принтер на 3-м этаже не печатает.\r\n".encode()
    + b"Trailing spaces stay:   \r\n"
    + b".leading dot\r\n"
)
LETTER_TWO = (
    b"From: anna@example.org\r\n"
    b"To: support@example.com\r\n"
    b"Subject: second\r\n"
    b"Message-ID: <two@example.org>\r\n"
    b"\r\n"
    b"Body without a final newline"
)


def _smtp_message(subject: str = "Re: [SD-1] printer") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "ServiceDesk <support@example.com>"
    message["To"] = "ivan@example.org"
    message["Subject"] = subject
    message.set_content("Заявка зарегистрирована.\n")
    return message


# -- Dovecot ---------------------------------------------------------------------------------


def test_fresh_account_has_empty_inbox_only(imap_account: ImapAccount) -> None:
    assert imap_account.uids() == []
    assert imap_account.messages() == []
    assert imap_account.folders() == ["INBOX"]


def test_appended_letters_read_back_byte_identical(imap_account: ImapAccount) -> None:
    first = imap_account.append(LETTER_ONE)
    second = imap_account.append(LETTER_TWO, flags=[r"\Seen"])

    assert first is not None and second is not None and first < second
    assert imap_account.uids() == [first, second]
    assert imap_account.messages() == [LETTER_ONE, LETTER_TWO]
    flags = imap_account.flags()
    assert rb"\Seen" not in flags[first]  # messages() used BODY.PEEK
    assert rb"\Seen" in flags[second]


def test_accounts_are_isolated_and_passwords_checked(dovecot: DovecotServer) -> None:
    alice, bob = dovecot.new_account(), dovecot.new_account()
    alice.append(LETTER_ONE)

    assert bob.uids() == []
    with IMAPClient(bob.host, port=bob.port, ssl=False, timeout=10) as client:
        with pytest.raises(LoginError):
            client.login(bob.username, alice.password)
        client.login(bob.username, bob.password)


def test_folders_are_created_on_request(imap_account: ImapAccount) -> None:
    imap_account.create_folder("Processed")
    imap_account.append(LETTER_TWO, folder="Processed")

    assert sorted(imap_account.folders()) == ["INBOX", "Processed"]
    assert imap_account.messages("Processed") == [LETTER_TWO]


def test_server_advertises_what_the_daemon_relies_on(imap_account: ImapAccount) -> None:
    with imap_account.client() as client:
        capabilities = set(client.capabilities())

    assert {b"IDLE", b"MOVE", b"UIDPLUS"} <= capabilities


def test_restart_keeps_port_and_mail(dovecot: DovecotServer, imap_account: ImapAccount) -> None:
    imap_account.append(LETTER_ONE)
    port = dovecot.port

    dovecot.stop()
    try:
        assert not dovecot.running
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((dovecot.host, port), timeout=2).close()
    finally:
        dovecot.start()

    assert dovecot.port == port
    assert imap_account.messages() == [LETTER_ONE]


def test_kill_connections_drops_sessions_but_keeps_serving(
    dovecot: DovecotServer, imap_account: ImapAccount
) -> None:
    with imap_account.client() as client:
        client.select_folder("INBOX")
        dovecot.kill_connections()
        with pytest.raises((IMAPClient.AbortError, OSError)):
            client.noop()

    assert imap_account.uids() == []  # a new connection works


def test_tls_port_presents_a_certificate_signed_by_ca_file(
    dovecot: DovecotServer, imap_account: ImapAccount
) -> None:
    context = ssl.create_default_context(cafile=str(dovecot.ca_file))
    with IMAPClient(
        "localhost", port=dovecot.tls_port, ssl=True, ssl_context=context, timeout=10
    ) as client:
        client.login(imap_account.username, imap_account.password)
        assert client.select_folder("INBOX")[b"EXISTS"] == 0

    # The system CAs must not trust it: proves verification really happens.
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient(
            "127.0.0.1",
            port=dovecot.tls_port,
            ssl=True,
            ssl_context=ssl.create_default_context(),
            timeout=10,
        )


# -- SMTP ------------------------------------------------------------------------------------


def test_smtp_sink_records_envelope_and_content(smtp_sink: SmtpSink) -> None:
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=10) as client:
        client.send_message(
            _smtp_message(),
            from_addr="bounces@example.com",
            to_addrs=["ivan@example.org", "copy@example.org"],
        )

    [mail] = smtp_sink.wait_for(1)
    assert mail.mail_from == "bounces@example.com"
    assert mail.rcpt_tos == ("ivan@example.org", "copy@example.org")
    assert mail.message["Subject"] == "Re: [SD-1] printer"
    assert mail.message.get_content().rstrip() == "Заявка зарегистрирована."
    assert b"Subject: Re: [SD-1] printer\r\n" in mail.content


def test_smtp_reply_code_rejects_data_until_cleared(smtp_sink: SmtpSink) -> None:
    smtp_sink.reply_code = "451 4.3.0 try later"
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.send_message(_smtp_message())
        assert refused.value.smtp_code == 451

        smtp_sink.reply_code = None
        client.send_message(_smtp_message("accepted"))

    assert [mail.message["Subject"] for mail in smtp_sink.wait_for(1)] == ["accepted"]


def test_smtp_rcpt_reply_code_refuses_recipients(smtp_sink: SmtpSink) -> None:
    smtp_sink.rcpt_reply_code = "550 5.1.1 no such user"
    with (
        smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=10) as client,
        pytest.raises(smtplib.SMTPRecipientsRefused) as refused,
    ):
        client.send_message(_smtp_message())

    assert refused.value.recipients["ivan@example.org"][0] == 550
    assert smtp_sink.received() == []


def test_smtp_sink_outage_and_recovery_on_same_port(smtp_sink: SmtpSink) -> None:
    port = smtp_sink.port
    smtp_sink.stop()
    with pytest.raises(ConnectionRefusedError):
        smtplib.SMTP(smtp_sink.host, port, timeout=5)

    smtp_sink.start()
    with smtplib.SMTP(smtp_sink.host, port, timeout=10) as client:
        client.send_message(_smtp_message())
    assert len(smtp_sink.wait_for(1)) == 1


def test_smtp_wait_for_reports_what_arrived(smtp_sink: SmtpSink) -> None:
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=10) as client:
        client.send_message(_smtp_message("only one"))

    with pytest.raises(AssertionError, match=r"expected 2 .*got 1.*only one"):
        smtp_sink.wait_for(2, timeout=0.3)
    smtp_sink.clear()
    assert smtp_sink.received() == []


def test_smtp_starttls_with_verified_certificate(smtp_tls_sink: SmtpSink) -> None:
    context = ssl.create_default_context(cafile=str(smtp_tls_sink.ca_file))
    with smtplib.SMTP("localhost", smtp_tls_sink.port, timeout=10) as client:
        client.starttls(context=context)
        client.send_message(_smtp_message())

    assert len(smtp_tls_sink.wait_for(1)) == 1


# -- Databases -------------------------------------------------------------------------------


def test_fresh_postgres_database_is_usable_then_dropped() -> None:
    server = postgres_server_url()
    with fresh_postgres_database(server) as url:
        name = make_url(url).database
        assert name is not None and name.startswith("mailroute_test_")
        engine = create_engine(url)
        try:
            assert inspect(engine).get_table_names() == []
            with engine.begin() as connection:
                connection.execute(text("CREATE TABLE ticket (id serial PRIMARY KEY, t text)"))
                connection.execute(text("INSERT INTO ticket (t) VALUES ('SD-1')"))
            with engine.connect() as connection:
                assert connection.execute(text("SELECT t FROM ticket")).scalar_one() == "SD-1"
        finally:
            engine.dispose()
        assert postgres_database_exists(name, server)

    assert not postgres_database_exists(name, server)


def test_database_url_is_fresh_and_writable(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        assert inspect(engine).get_table_names() == []
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE probe (id integer PRIMARY KEY)"))
            connection.execute(text("INSERT INTO probe (id) VALUES (1)"))
        assert inspect(engine).get_table_names() == ["probe"]
    finally:
        engine.dispose()


# -- Skip-or-fail policy ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("required", "outcome"), [("", pytest.skip.Exception), ("1", pytest.fail.Exception)]
)
def test_require_service_skips_or_fails(
    monkeypatch: pytest.MonkeyPatch, required: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv(REQUIRE_SERVICES_ENV, required)
    with pytest.raises(outcome, match="Dovecot"):
        require_service("Dovecot", "not installed")


@pytest.mark.parametrize(("required", "summary"), [("", "1 skipped"), ("1", "1 error")])
def test_missing_dovecot_binary_skips_or_fails_the_session(
    tmp_path: Path, required: str, summary: str
) -> None:
    """Runs a child pytest with Dovecot "uninstalled" through MAILROUTE_DOVECOT_BINARY."""
    env = {
        **os.environ,
        DOVECOT_BINARY_ENV: str(tmp_path / "no-dovecot"),
        REQUIRE_SERVICES_ENV: required,
    }
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(TESTS_DIR.parent),
            f"{TESTS_DIR / 'test_services.py'}::test_fresh_account_has_empty_inbox_only",
        ],
        env=env,
        cwd=TESTS_DIR.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert summary in output, output
    assert "install it with `apt-get install dovecot-imapd`" in output, output
