"""The exceptions mailroute raises, and what each one asks the caller to do.

::

    MailrouteError                 base of everything mailroute raises on purpose
    ├── ConfigError                bad configuration: refuse to start (names key and line)
    ├── DatabaseNotReady           schema missing or behind: run `mailroute db upgrade`
    ├── TransientError             try again later (server away, 4xx, lock held)
    │   ├── DatabaseFileReplaced   the SQLite file was moved, replaced or deleted under us
    │   ├── MailboxUnavailable     IMAP/Maildir cannot be reached or selected
    │   └── SmtpTemporaryFailure   SMTP 4xx or connection trouble
    └── PermanentError             retrying will not help
        ├── LetterUnreadable       a letter the pure core cannot handle: quarantine it
        └── SmtpPermanentFailure   SMTP 5xx: record as failed, do not retry

Library errors (imaplib, socket, aiosmtplib, SQLAlchemy) are mapped to these at
the IO edges with ``raise ... from``, so the daemon decides by class, not by
inspecting foreign exception types.
"""

from __future__ import annotations


class MailrouteError(Exception):
    """Base class for every error mailroute raises deliberately."""


class ConfigError(MailrouteError):
    """The configuration is invalid; the message names the key and, if known, the line."""


class DatabaseNotReady(MailrouteError):
    """The database schema is absent or older than this version of mailroute."""


class TransientError(MailrouteError):
    """A failure that may go away by itself; the operation is retried with backoff."""


class DatabaseFileReplaced(TransientError):
    """The SQLite file this process opened is no longer the file at its path.

    Writing on would put records in a file nobody will read again (or start a second
    database at the path), so nothing is written until the file is back.
    """


class MailboxUnavailable(TransientError):
    """The mailbox server cannot be reached, refused the login, or lost the connection."""


class SmtpTemporaryFailure(TransientError):
    """The SMTP server answered 4xx or could not be reached; the reply stays queued."""


class PermanentError(MailrouteError):
    """A failure that will repeat on every attempt; the item is parked, not retried."""


class LetterUnreadable(PermanentError):
    """The pure core could not make sense of a letter; it goes to quarantine."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


class SmtpPermanentFailure(PermanentError):
    """The SMTP server rejected a reply with a 5xx code.

    ``stage`` is the command refused (``RCPT``, ``MAIL``, ``DATA``, ``session``),
    ``code`` the reply code and ``status`` its RFC 3463 enhanced code ("5.1.1", or ""
    when the server gave none): together they say whether the recipient or the desk
    is at fault (``mailroute.core.reply_policy.rejection_names_recipient``).
    """

    def __init__(self, text: str, stage: str = "session", code: int = 550,
                 status: str = "") -> None:
        super().__init__(text)
        self.stage = stage
        self.code = code
        self.status = status
