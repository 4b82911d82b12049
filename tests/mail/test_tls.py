"""Transport security: certificates are verified by default, for IMAP and SMTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from support.dovecot import DovecotServer, ImapAccount
from support.smtp import SmtpSink

from mailroute.config import MailboxConfig, RepliesConfig, SmtpConfig
from mailroute.errors import MailboxUnavailable
from mailroute.mail.imap import ImapSource
from mailroute.mail.outbox import deliver_due
from mailroute.store import Store
from mailroute.store.models import OutboxItem


def imap(account: ImapAccount, dovecot: DovecotServer, **overrides: object) -> ImapSource:
    values: dict[str, object] = {
        "host": "127.0.0.1", "port": dovecot.tls_port, "security": "ssl",
        "username": account.username, "password": account.password, "timeout": 5,
    }
    return ImapSource(MailboxConfig.model_validate(values | overrides))


def test_imap_tls_verified_with_the_right_ca(imap_account: ImapAccount,
                                             dovecot: DovecotServer) -> None:
    source = imap(imap_account, dovecot, ca_file=str(dovecot.ca_file))
    try:
        assert source.select() > 0
    finally:
        source.close()


def test_imap_tls_refuses_an_unknown_certificate(imap_account: ImapAccount,
                                                 dovecot: DovecotServer) -> None:
    with pytest.raises(MailboxUnavailable, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
        imap(imap_account, dovecot).select()


def test_imap_verification_can_be_switched_off_explicitly(imap_account: ImapAccount,
                                                          dovecot: DovecotServer) -> None:
    source = imap(imap_account, dovecot, tls_verify=False)
    try:
        assert source.select() > 0
    finally:
        source.close()


def test_imap_without_tls_loads_no_ca_bundle(imap_account: ImapAccount, dovecot: DovecotServer,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """security = "none" (loopback only) builds no TLS context: loading the CA bundle
    cost ~15 ms of every start."""
    import mailroute.mail.imap as imap_module

    def refused(*args: object) -> None:
        raise AssertionError("a TLS context was built for a connection without TLS")

    monkeypatch.setattr(imap_module, "tls_context", refused)
    source = imap(imap_account, dovecot, port=dovecot.port, security="none")
    try:
        assert source.select() > 0
    finally:
        source.close()


def test_imap_starttls_verified(imap_account: ImapAccount, dovecot: DovecotServer) -> None:
    source = imap(imap_account, dovecot, port=dovecot.port, security="starttls",
                  ca_file=str(dovecot.ca_file))
    try:
        assert source.select() > 0
    finally:
        source.close()
    with pytest.raises(MailboxUnavailable):
        imap(imap_account, dovecot, port=dovecot.port, security="starttls").select()


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    store = Store(sqlite_url)
    store.upgrade()
    now = datetime.now(UTC)
    with store.transaction() as session:
        session.add(OutboxItem(
            kind="acknowledgement", sender="servicedesk@example.com", recipient="c@x.example",
            message_id="<tls@example.com>", subject="s", state="pending", attempts=0,
            raw=b"From: servicedesk@example.com\r\nTo: c@x.example\r\nSubject: s\r\n\r\nhi\r\n",
            not_before=now, created_at=now))
    yield store
    store.dispose()


def test_smtp_starttls_verified(store: Store, smtp_tls_sink: SmtpSink) -> None:
    unverified = SmtpConfig(host="127.0.0.1", port=smtp_tls_sink.port, security="starttls",
                            timeout=5)
    report = deliver_due(store, unverified, RepliesConfig(), datetime.now(UTC))
    assert report.retried and not report.sent  # unknown CA: nothing sent in clear or unverified
    assert smtp_tls_sink.received() == []
    verified = unverified.model_copy(update={"ca_file": str(smtp_tls_sink.ca_file)})
    later = datetime.now(UTC) + timedelta(minutes=5)  # past the first retry delay
    assert len(deliver_due(store, verified, RepliesConfig(), later).sent) == 1
    assert len(smtp_tls_sink.wait_for(1)) == 1
