"""A local Maildir as a mail source, for hosts where the MTA delivers locally.

Maildir has no UIDs; a message's unique base name (before the ``:2,`` flags)
stands in for one, and UIDVALIDITY is always 1. Folders are Maildir++
subfolders (``.Processed``), which Dovecot and Courier also read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

from mailroute.config import MailboxConfig
from mailroute.errors import MailboxUnavailable
from mailroute.mail.mailbox import FetchedLetter

UIDVALIDITY = 1


class MaildirSource:
    """Reads ``new/`` and ``cur/`` of a Maildir; files letters into subfolders."""

    def __init__(self, config: MailboxConfig) -> None:
        self.config = config
        self.path = Path(config.maildir or "").expanduser()
        self.name = f"maildir:{self.path.resolve()}"

    def select(self) -> int:
        if not (self.path / "cur").is_dir() or not (self.path / "new").is_dir():
            raise MailboxUnavailable(f"{self.path} is not a Maildir (needs cur/ and new/)")
        return UIDVALIDITY

    def list_uids(self) -> list[str]:
        files = self._files()
        return sorted(files, key=lambda uid: (_mtime(files[uid]), uid))

    def sizes(self, uids: Sequence[str]) -> dict[str, int]:
        files = self._files()
        found: dict[str, int] = {}
        for uid in uids:
            path = files.get(uid)
            if path is not None:
                with suppress(OSError):  # filed by someone else meanwhile
                    found[uid] = path.stat().st_size
        return found

    def fetch(self, uids: Sequence[str]) -> Iterator[FetchedLetter]:
        files = self._files()
        for uid in uids:
            path = files.get(uid)
            if path is None:
                continue  # filed by someone else meanwhile
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                continue
            received = datetime.fromtimestamp(_mtime(path), tz=UTC)
            yield FetchedLetter(uid=uid, raw=raw, received_at=received)

    def file(self, uids: Sequence[str], folder: str) -> dict[str, str]:
        target = self._ensure_folder(folder)
        files = self._files()
        for uid in uids:
            path = files.get(uid)
            if path is not None:
                path.rename(target / "cur" / f"{uid}:2,S")
        return {}

    def wait(self, timeout: float, stop: threading.Event) -> None:
        stop.wait(min(timeout, self.config.poll_interval))

    def close(self) -> None:
        """Nothing to release: every call reads the directory afresh."""

    def _files(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for sub in ("new", "cur"):
            try:
                entries = list((self.path / sub).iterdir())
            except OSError as exc:
                raise MailboxUnavailable(f"cannot read {self.path / sub}: {exc}") from exc
            for entry in entries:
                if not entry.name.startswith(".") and entry.is_file():
                    found[entry.name.split(":", 1)[0]] = entry
        return found

    def _ensure_folder(self, folder: str) -> Path:
        target = self.path / f".{folder}"
        for sub in ("cur", "new", "tmp"):
            (target / sub).mkdir(parents=True, exist_ok=True)
        (target / "maildirfolder").touch(exist_ok=True)
        return target


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
