"""The interface every mail source offers to the intake loop."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class FetchedLetter:
    """One letter as the server holds it."""

    uid: str
    raw: bytes
    received_at: datetime | None


@dataclass(frozen=True)
class UnservedLetter:
    """A letter the server would not hand over (a NO, a broken literal, a timeout on it
    alone): set aside with its own backoff so the rest of the folder goes on."""

    uid: str
    error: str


class MailSource(Protocol):
    """A folder of new letters, and folders to file them into once they are saved.

    ``name`` identifies the mailbox in the database; with ``uidvalidity`` and a
    letter's ``uid`` it is the key that makes fetching idempotent.
    """

    name: str

    def select(self) -> int:
        """(Re)select the intake folder, connecting if needed; returns its UIDVALIDITY."""

    def list_uids(self) -> list[str]:
        """UIDs of all letters in the intake folder, in arrival order."""

    def sizes(self, uids: Sequence[str]) -> dict[str, int]:
        """The size in bytes of each of these letters, as the server counts it, read
        without their bodies (what a batch is cut by). A letter gone meanwhile, or every
        letter when the server will not say, is left out: its size is unknown."""

    def fetch(self, uids: Sequence[str]) -> Iterator[FetchedLetter | UnservedLetter]:
        """The raw bytes of these letters, without marking them seen; a letter the server
        will not serve comes as UnservedLetter, the outage of the server as an error."""

    def file(self, uids: Sequence[str], folder: str) -> dict[str, str]:
        """Move these letters to ``folder``, creating it if needed; returns uid -> reason
        for letters the server refused to move (the others were moved)."""

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """Block until something may have arrived, ``timeout`` passes, or ``stop`` is set."""

    def close(self) -> None:
        """Log out and release the connection; safe to call twice."""
