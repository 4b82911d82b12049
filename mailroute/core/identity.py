"""What makes two letters, or two spellings of one mailbox, the same (pure).

A Message-ID is a label, not an identity: scanners, ERP exports and some clients
stamp the same one on every letter they send. A letter repeats an earlier one only
when its bytes' fingerprint matches (the storage layer checks that), or when its
normalised sender and content match: a second delivery path adds Received lines
and changes the bytes, not the letter.

A mailbox is named the same way however a config spells it, so that two instances
share one lock and one set of stored keys: the host is case-insensitive (DNS), and
so is the name INBOX (RFC 3501, 5.1). Other folder names are the server's business
and are kept as written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

INBOX = "INBOX"


def canonical_folder(folder: str) -> str:
    """``inbox``, ``Inbox`` and ``INBOX`` are one folder; any other name as written."""
    return INBOX if folder.upper() == INBOX else folder


def imap_mailbox_name(username: str, host: str, port: int, folder: str) -> str:
    """The name letters of this IMAP folder are stored and locked under."""
    host = host.strip().rstrip(".").lower()
    return f"imap://{username}@{host}:{port}/{canonical_folder(folder)}"


def content_key(sender: str | None, text: str, attachment_hashes: Iterable[str]) -> str:
    """SHA-256 of what a re-delivery keeps: the sender's address (case-folded), the
    text with whitespace collapsed, and the attachments' contents (their hashes)."""
    address = (sender or "").strip().lower()
    words = " ".join(text.split())
    parts = [address, words, *sorted(attachment_hashes)]
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
