"""An online copy of the SQLite database, taken while the daemon writes to it.

SQLite's backup API copies the pages of one consistent snapshot: done in one step
on a WAL database, it holds a read transaction for the copy while writers go on
(a copy in several steps would restart each time another connection writes, and
under a steady backlog might never end). The copy is written beside the target
and renamed into place only once ``PRAGMA integrity_check`` says "ok", so a
failed or interrupted backup never leaves a file that looks like a backup.

PostgreSQL has its own tools for this (``pg_dump``, or base backups with WAL
archiving): see docs/operations.md.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from mailroute.errors import MailrouteError
from mailroute.store.db import sqlite_file


class BackupError(MailrouteError):
    """The backup could not be taken; nothing was left at the target."""


def backup_sqlite(url: str, target: Path, *, overwrite: bool = False) -> int:
    """Copy the SQLite database at ``url`` to ``target``; returns the copy's size in bytes."""
    source = sqlite_file(url)
    if source is None:
        raise BackupError(
            f"{url.split('://', 1)[0]}: only SQLite is copied by `mailroute backup`; for "
            "PostgreSQL use pg_dump (docs/operations.md)"
        )
    if not source.exists():
        raise BackupError(f"{source}: no such database file")
    target = target.expanduser().absolute()
    if target.exists() and not overwrite:
        raise BackupError(f"{target} exists; give another name or --force")
    if target == source:
        raise BackupError(f"{target} is the database itself")
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        _copy(source, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target.stat().st_size


def _copy(source: Path, partial: Path) -> None:
    reader = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        writer = sqlite3.connect(partial)
        try:
            reader.backup(writer)  # one step: one snapshot, writers carry on (WAL)
            writer.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
            verdict = writer.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            writer.close()
    except sqlite3.Error as exc:
        raise BackupError(f"{source}: the copy failed: {exc}") from None
    finally:
        with contextlib.suppress(sqlite3.Error):
            reader.close()
    if verdict != "ok":
        raise BackupError(f"the copy of {source} is not sound: {verdict}")
