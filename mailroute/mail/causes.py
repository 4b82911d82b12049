"""A connection failure in words a person can act on, without Python's reprs.

``[Errno 111] Connect call failed ('127.0.0.1', 9)`` and ``b'[AUTHENTICATIONFAILED] ...'``
are what the libraries say; an operator reading the log or `mailroute status` needs "the
connection was refused (nothing listens on that port)". IMAP and SMTP errors both go through
:func:`in_words`.
"""

from __future__ import annotations

import errno
import socket
import ssl

_ERRNO_WORDS = {
    errno.ECONNREFUSED: "the connection was refused (nothing listens on that port)",
    errno.ECONNRESET: "the server closed the connection",
    errno.EHOSTUNREACH: "the host is unreachable",
    errno.ENETUNREACH: "the network is unreachable",
    errno.ETIMEDOUT: "the connection timed out",
    errno.EPIPE: "the server closed the connection",
}


def in_words(exc: BaseException) -> str:
    """What went wrong, as a sentence fragment: no errno numbers, tuples or bytes reprs."""
    if isinstance(exc, socket.gaierror):
        return "the host name was not found (check the name and DNS)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its TLS certificate was not trusted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or (exc.args[1] if len(exc.args) > 1 else exc)
        return f"the TLS handshake failed ({reason})"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "no answer in time"
    for cause in (exc, exc.__cause__, exc.__context__):
        code = getattr(cause, "errno", None)
        if isinstance(cause, OSError) and code in _ERRNO_WORDS:
            return _ERRNO_WORDS[code]
    return _plain(exc)


def _plain(exc: BaseException) -> str:
    """The exception's own text, with bytes shown as text."""
    args = [a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a) for a in exc.args]
    text = " ".join(a for a in args if a) or type(exc).__name__
    if text.startswith(("b'", 'b"')) and text.endswith(("'", '"')):
        text = text[2:-1]
    return text
