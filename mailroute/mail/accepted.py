"""Replies the SMTP server accepted, written down before their mark (SQLite only).

A reply is marked sent in the database right after the SMTP server's 250. On SQLite
that mark may have to wait for the one write lock while intake decides a batch (in
``bench/backlog.py``, with the outbox process sending beside a drain: p99 ~0.1 s, at
worst ~0.5 s); a crash in that wait would send the reply again once its lease lapsed.
So each accepted reply is first appended to a journal file beside the database: one
``write(2)``, which outlives a crash of the process (not a power cut: the same as the
marks' lazy commits, ``outbox._Books``), and each outbox pass begins by marking sent
what an earlier pass wrote down and never marked. With that, the marks of a claimed
batch can wait for its end and commit together (``outbox._JournaledMarks``): one wait
for the lock a batch instead of one a reply.

Each pass that sends writes a file of its own, ``<database>-accepted.<pid>.<token>``,
holds an exclusive ``flock`` on it while it runs, and deletes it at its end when every
reply it wrote down was marked. A file nobody holds is a pass that ended before its
marks did (a crash, a database outage): the next pass, in any process, takes the lock,
marks its replies sent where they are still pending, and deletes it. A file still held
is a pass running elsewhere, left to it.

PostgreSQL needs no journal: marks there wait for no one (and a local file would not
help an instance on another machine).
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mailroute.store.db import sqlite_file

SUFFIX = "-accepted."


@dataclass(frozen=True)
class Accepted:
    """One line of a journal: the outbox row, when the server took it, the attempt."""

    outbox_id: int
    sent_at: datetime
    attempts: int

    def line(self) -> bytes:
        return f"{self.outbox_id} {self.sent_at.isoformat()} {self.attempts}\n".encode()

    @classmethod
    def parse(cls, line: str) -> Accepted | None:
        """None for a line cut short by a crash mid-write (or anything else unreadable)."""
        parts = line.split()
        if len(parts) != 3:
            return None
        try:
            return cls(int(parts[0]), datetime.fromisoformat(parts[1]), int(parts[2]))
        except ValueError:
            return None


class AcceptedJournal:
    """The journal of one outbox pass, and the way to the ones earlier passes left."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self._fd: int | None = None
        self._path: Path | None = None
        self._unmarked: set[int] = set()

    @classmethod
    def for_url(cls, url: str) -> AcceptedJournal | None:
        """A journal for a SQLite file; None for PostgreSQL and in-memory SQLite."""
        database = sqlite_file(url)
        return cls(database) if database is not None else None

    def write(self, item: Accepted) -> None:
        """Write ``item`` down (the file is created at the pass's first accepted reply)."""
        if self._fd is None:
            self._open()
        assert self._fd is not None
        os.write(self._fd, item.line())
        self._unmarked.add(item.outbox_id)

    def marked(self, outbox_id: int) -> None:
        """``outbox_id``'s mark is committed: its line is no longer needed."""
        self._unmarked.discard(outbox_id)

    def finish(self) -> bool:
        """End this pass's journal: deleted if every reply in it was marked, else left
        (unlocked) for the next pass. True when it was deleted or never written."""
        fd, path = self._fd, self._path
        self._fd = self._path = None
        if fd is None or path is None:
            return True
        complete = not self._unmarked
        self._unmarked = set()
        try:
            if complete:
                with suppress(FileNotFoundError):
                    path.unlink()  # still locked: nobody replays it meanwhile
        finally:
            os.close(fd)
        return complete

    def left(self) -> Iterator[tuple[Path, list[Accepted]]]:
        """The journals earlier passes left unfinished, each locked while the caller
        marks its replies; deleted when the caller moves on to the next (or ends the
        loop), not if the caller raises. Journals held by a running pass are skipped."""
        self._sweep_unborn()
        for path in sorted(self.database.parent.glob(self.database.name + SUFFIX + "*")):
            if path == self._path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # another pass replayed it meanwhile
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a pass still running
                entries = _read(fd)
                yield path, entries
                with suppress(FileNotFoundError):
                    path.unlink()
            finally:
                os.close(fd)

    def _sweep_unborn(self) -> None:
        """Delete the hidden files of passes that died between creating their journal
        and giving it its name (nothing is written to a journal before that)."""
        for path in self.database.parent.glob("." + self.database.name + SUFFIX + "*"):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being created right now
            else:
                with suppress(FileNotFoundError):
                    path.unlink()
            finally:
                os.close(fd)

    def _open(self) -> None:
        """Created under a name no pass replays, locked, then renamed into view: a
        pass looking for journals never finds this one unlocked."""
        name = f"{self.database.name}{SUFFIX}{os.getpid()}.{secrets.token_hex(4)}"
        hidden = self.database.with_name("." + name)
        fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            path = hidden.with_name(name)
            hidden.rename(path)
        except BaseException:
            os.close(fd)
            with suppress(FileNotFoundError):
                hidden.unlink()
            raise
        self._fd, self._path = fd, path


def _read(fd: int) -> list[Accepted]:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    text = b"".join(chunks).decode("utf-8", "replace")
    return [entry for line in text.splitlines() if (entry := Accepted.parse(line))]
