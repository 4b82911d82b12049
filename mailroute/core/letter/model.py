"""What a parsed letter is: the values `parse` returns and the limits it reads under.

Kept apart from the parsing so that every later stage (verdict, reply policy, the store)
imports these shapes without importing the parser's machinery.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from mailroute.config import LimitsConfig


@dataclass(frozen=True)
class Address:
    """One mailbox of an address header."""

    name: str  # decoded display name, "" if none
    email: str  # lower-cased addr-spec, "" if unparseable


@dataclass(frozen=True)
class Attachment:
    """A non-body part of a letter (file, inline image, delivery report)."""

    filename: str
    content_type: str
    size: int
    sha256: str
    inline: bool
    content_id: str | None
    content: bytes = field(repr=False, compare=False)


class HeaderMap(Mapping[str, str]):
    """Immutable, hashable mapping of lower-case header names to decoded values."""

    __slots__ = ("_data", "_hash")

    def __init__(self, data: dict[str, str]) -> None:
        self._data = data
        self._hash: int | None = None

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._data) == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"HeaderMap({self._data!r})"


@dataclass(frozen=True)
class ParsedLetter:
    """Everything the rest of mailroute needs to know about one letter."""

    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str | None
    sender: Address | None
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    return_path: str | None
    date: datetime | None
    headers: Mapping[str, str]
    content_type: str
    text: str
    html: bool
    attachments: tuple[Attachment, ...]
    forwarded: tuple[ParsedLetter, ...]
    defects: tuple[str, ...]
    # Which header gave ``sender``: "from", or "sender" / "reply-to" when no From parsed.
    sender_header: str = "from"


@dataclass(frozen=True)
class ParseLimits:
    """Resource limits; exceeding one makes the letter unreadable (quarantined)."""

    max_bytes: int = 50 * 1024 * 1024
    max_parts: int = 1000
    max_depth: int = 30
    max_header_bytes: int = 1024 * 1024
    # The body text analysed: nobody writes a request longer than this, and rule
    # matching over tens of megabytes of pasted logs takes minutes and gigabytes.
    # The raw letter is stored whole; only its reading is cut.
    max_text_chars: int = 200_000

    @classmethod
    def from_config(cls, limits: LimitsConfig) -> ParseLimits:
        """The limits ``[limits]`` sets: the daemon, ``explain`` and replay all read a letter
        with these, so they agree on a large one."""
        return cls(
            max_bytes=limits.max_message_bytes,
            max_parts=limits.max_parts,
            max_depth=limits.max_depth,
            max_header_bytes=limits.max_header_bytes,
            max_text_chars=limits.max_text_chars,
        )
