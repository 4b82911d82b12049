"""The journal of accepted replies (SQLite): written before a mark, replayed after a crash.

The files are real (flock, rename, unlink); the crash is a real SIGKILL of a process
that sent a reply to a real SMTP server (aiosmtpd) and was about to mark it in SQLite.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from support.smtp import SmtpSink
from test_outbox import NOW, item, queue, smtp_for

from mailroute import logs
from mailroute.config import RepliesConfig
from mailroute.mail import outbox
from mailroute.mail.accepted import Accepted, AcceptedJournal
from mailroute.mail.outbox import deliver_due
from mailroute.store import Store

AT = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)


def journals(database: Path) -> list[Path]:
    return sorted(database.parent.glob(database.name + "-accepted.*"))


def test_a_pass_whose_replies_were_all_marked_leaves_no_file(tmp_path: Path) -> None:
    database = tmp_path / "mailroute.sqlite"
    quiet = AcceptedJournal(database)
    assert quiet.finish() and journals(database) == []  # nothing accepted: no file at all
    journal = AcceptedJournal(database)
    journal.write(Accepted(1, AT, 1))
    journal.write(Accepted(2, AT, 3))
    assert len(journals(database)) == 1
    journal.marked(1)
    journal.marked(2)
    assert journal.finish()
    assert journals(database) == []


def test_an_unmarked_reply_is_left_for_the_next_pass_and_read_once(tmp_path: Path) -> None:
    database = tmp_path / "mailroute.sqlite"
    journal = AcceptedJournal(database)
    journal.write(Accepted(7, AT, 2))
    journal.write(Accepted(8, AT, 1))
    journal.marked(8)
    assert not journal.finish()
    (left,) = journals(database)
    with left.open("ab") as file:  # a crash in the middle of a write
        file.write(b"9 2026-12-05T10:0")

    found = list(AcceptedJournal(database).left())
    assert [(path, entries) for path, entries in found] == [
        (left, [Accepted(7, AT, 2), Accepted(8, AT, 1)])]
    assert journals(database) == []
    assert list(AcceptedJournal(database).left()) == []


def test_the_journal_of_a_running_pass_is_not_touched(tmp_path: Path) -> None:
    database = tmp_path / "mailroute.sqlite"
    running = AcceptedJournal(database)
    running.write(Accepted(1, AT, 1))
    assert list(AcceptedJournal(database).left()) == []
    assert len(journals(database)) == 1
    running.marked(1)
    assert running.finish() and journals(database) == []


def test_a_journal_is_kept_when_the_caller_fails_while_marking(tmp_path: Path) -> None:
    database = tmp_path / "mailroute.sqlite"
    journal = AcceptedJournal(database)
    journal.write(Accepted(3, AT, 1))
    journal.finish()
    with pytest.raises(RuntimeError):
        for _path, _entries in AcceptedJournal(database).left():
            raise RuntimeError("database unavailable")
    assert len(journals(database)) == 1
    assert [entries for _path, entries in AcceptedJournal(database).left()] == [
        [Accepted(3, AT, 1)]]


def test_a_journal_that_never_got_its_name_is_swept(tmp_path: Path) -> None:
    """A pass killed between creating its journal and renaming it into view leaves an
    empty hidden file: the next pass deletes it, unless it is being created now."""
    database = tmp_path / "mailroute.sqlite"
    unborn = tmp_path / ".mailroute.sqlite-accepted.1.deadbeef"
    unborn.write_bytes(b"")
    held = tmp_path / ".mailroute.sqlite-accepted.2.cafebabe"
    held.write_bytes(b"")
    fd = os.open(held, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert list(AcceptedJournal(database).left()) == []
        assert not unborn.exists()
        assert held.exists()
    finally:
        os.close(fd)


def test_only_a_sqlite_file_has_a_journal(tmp_path: Path) -> None:
    assert AcceptedJournal.for_url(f"sqlite:///{tmp_path}/a.sqlite") is not None
    assert AcceptedJournal.for_url("sqlite://") is None
    assert AcceptedJournal.for_url("postgresql+psycopg://root@127.0.0.1/test") is None


_CRASH_BEFORE_THE_MARK = """
import os, signal, sys
from datetime import datetime
from mailroute.config import RepliesConfig, SmtpConfig
from mailroute.mail import outbox
from mailroute.store import Store

def killed(*args, **kwargs):  # the SMTP server said 250; the mark never commits
    os.kill(os.getpid(), signal.SIGKILL)

outbox._mark_sent = outbox._mark_all_sent = killed
smtp = SmtpConfig(host=sys.argv[2], port=int(sys.argv[3]), security="none", timeout=5)
outbox.deliver_due(Store(sys.argv[1]), smtp, RepliesConfig(), datetime.fromisoformat(sys.argv[4]))
"""


def test_a_reply_accepted_just_before_a_crash_is_not_sent_again(
    sqlite_url: str, smtp_sink: SmtpSink
) -> None:
    """SIGKILL between the SMTP server's 250 and the mark: the next pass, after the
    lease, finds the reply in the journal, marks it sent and does not send it again
    (without the journal it went out a second time, with the same Message-ID)."""
    store = Store(sqlite_url)
    store.upgrade()
    try:
        first, second = queue(store, 1), queue(store, 2)
        crashed = subprocess.run(
            [sys.executable, "-c", _CRASH_BEFORE_THE_MARK, sqlite_url, smtp_sink.host,
             str(smtp_sink.port), NOW.isoformat()],
            capture_output=True, text=True, timeout=60, env=os.environ.copy())
        assert crashed.returncode == -9, crashed.stderr
        # SQLite marks a batch at its end: both went out before the mark that crashed
        crashed_after = sorted(m.message["Message-ID"] for m in smtp_sink.wait_for(2))
        assert crashed_after == ["<r1@example.com>", "<r2@example.com>"]
        assert {item(store, first).state, item(store, second).state} == {"pending"}

        later = NOW + timedelta(seconds=RepliesConfig().claim_timeout + 1)
        logs.configure("info")  # an earlier test may have left the level at warning
        with capture_logs() as logged:
            report = deliver_due(store, smtp_for(smtp_sink), RepliesConfig(), later)
        assert report.sent == []
        for reply in (first, second):
            assert item(store, reply).state == "sent"
            assert item(store, reply).sent_at is not None
            assert item(store, reply).attempts == 1
        assert len(smtp_sink.received()) == 2  # none again
        database = Path(sqlite_url.removeprefix("sqlite:///"))
        assert journals(database) == []
        (replayed,) = [e for e in logged if e["event"].endswith("from a journal")]
        assert (replayed["accepted"], replayed["recorded"]) == (2, 2)
    finally:
        store.dispose()


def test_a_reply_sent_again_after_its_journal_was_lost_is_still_sent_once_more(
    sqlite_url: str, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal is what stops the second send: the same crash with the journal
    deleted sends the reply again (at-least-once, as on PostgreSQL), and the row ends
    sent; a journaled row already sent is left as it is."""
    store = Store(sqlite_url)
    store.upgrade()
    try:
        first = queue(store, 1)
        subprocess.run(
            [sys.executable, "-c", _CRASH_BEFORE_THE_MARK, sqlite_url, smtp_sink.host,
             str(smtp_sink.port), NOW.isoformat()],
            capture_output=True, timeout=60, env=os.environ.copy())
        smtp_sink.wait_for(1)
        database = Path(sqlite_url.removeprefix("sqlite:///"))
        (journal,) = journals(database)
        kept = journal.read_bytes()
        journal.unlink()
        later = NOW + timedelta(seconds=RepliesConfig().claim_timeout + 1)
        report = deliver_due(store, smtp_for(smtp_sink), RepliesConfig(), later)
        assert report.sent == [first]
        assert len(smtp_sink.wait_for(2)) == 2
        before = (item(store, first).sent_at, item(store, first).attempts)

        journal.write_bytes(kept)  # replayed now, the row is already sent: unchanged
        calls: list[int] = []
        real = outbox._mark_sent_if_pending
        monkeypatch.setattr(outbox, "_mark_sent_if_pending",
                            lambda books, entry: calls.append(entry.outbox_id) or real(
                                books, entry))
        deliver_due(store, smtp_for(smtp_sink), RepliesConfig(), later)
        assert calls == [first]
        assert (item(store, first).sent_at, item(store, first).attempts) == before
        assert journals(database) == []
    finally:
        store.dispose()
