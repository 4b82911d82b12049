"""Where letters come from: an IMAP folder or a local Maildir, behind one interface."""

from mailroute.intake.source import FetchedLetter, MailSource, open_source

__all__ = ["FetchedLetter", "MailSource", "open_source"]
