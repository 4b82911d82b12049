"""Connection failures are told in words, naming the server, with no Python reprs."""

from __future__ import annotations

import errno
import socket
import ssl

import pytest
from support.services import free_port

from mailroute.config import MailboxConfig
from mailroute.errors import MailboxUnavailable
from mailroute.mail.causes import in_words
from mailroute.mail.imap import ImapSource


@pytest.mark.parametrize(("exc", "words"), [
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 9)"),
     "the connection was refused (nothing listens on that port)"),
    (OSError(errno.EHOSTUNREACH, "No route to host"), "the host is unreachable"),
    (socket.gaierror(-2, "Name or service not known"), "the host name was not found"),
    (TimeoutError(), "no answer in time"),
    (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "TLS handshake failed"),
    (Exception(b"[AUTHENTICATIONFAILED] Authentication failed."),
     "[AUTHENTICATIONFAILED] Authentication failed."),
])
def test_failures_are_told_in_words(exc: BaseException, words: str) -> None:
    told = in_words(exc)
    assert words in told
    assert "Errno" not in told and "b'" not in told and "('" not in told


def test_a_cause_behind_a_library_error_is_found() -> None:
    wrapped = RuntimeError("Error connecting to 127.0.0.1 on port 9")
    wrapped.__cause__ = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    assert in_words(wrapped) == "the connection was refused (nothing listens on that port)"


def test_an_imap_server_that_is_not_there_is_named_with_the_cause() -> None:
    port = free_port()
    source = ImapSource(MailboxConfig.model_validate(
        {"host": "127.0.0.1", "port": port, "security": "none", "username": "u",
         "password": "p", "timeout": 2}))
    with pytest.raises(MailboxUnavailable) as raised:
        source.select()
    message = str(raised.value)
    assert f"127.0.0.1:{port}" in message
    assert "the connection was refused" in message
    assert "check [mailbox] host, port and security" in message
    assert "Errno" not in message
