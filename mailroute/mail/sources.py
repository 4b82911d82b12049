"""Which mail source a config describes: a local Maildir, else an IMAP folder.

Kept apart from :mod:`mailroute.mail.mailbox` (the interface both sources implement), so
that the interface does not import its own implementations.
"""

from __future__ import annotations

from mailroute.config import MailboxConfig
from mailroute.mail.imap import ImapSource
from mailroute.mail.mailbox import MailSource
from mailroute.mail.maildir import MaildirSource


def source_name(config: MailboxConfig) -> str:
    """The name a mailbox's letters and state are stored under (no connection made)."""
    return open_source(config).name


def open_source(config: MailboxConfig) -> MailSource:
    """The source the config describes: a Maildir path, else IMAP."""
    if config.maildir:
        return MaildirSource(config)
    return ImapSource(config)
