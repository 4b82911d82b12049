"""A Maildir for `[mailbox] maildir` tests: made empty, letters delivered as an MTA does."""

from __future__ import annotations

from pathlib import Path


def empty_maildir(root: Path) -> Path:
    """``root/Maildir`` with its cur, new and tmp folders."""
    box = root / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    return box


def deliver(box: Path, name: str, raw: bytes) -> None:
    """Write into tmp, then rename into new: a reader never sees half a letter."""
    (box / "tmp" / name).write_bytes(raw)
    (box / "tmp" / name).rename(box / "new" / name)
