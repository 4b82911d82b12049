"""Mail sources: IMAP against a real Dovecot, and a local Maildir."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.dovecot import ImapAccount

from mailroute.config import MailboxConfig
from mailroute.errors import MailboxUnavailable
from mailroute.mail.imap import ImapSource
from mailroute.mail.maildir import MaildirSource

LETTER = b"From: a@b.example\r\nSubject: one\r\nMessage-ID: <1@b>\r\n\r\nbody\r\n"


def imap_config(account: ImapAccount, **extra: object) -> MailboxConfig:
    return MailboxConfig(host=account.host, port=account.port, security="none",
                         username=account.username, password=account.password,
                         **extra)  # type: ignore[arg-type]


def test_imap_fetch_is_byte_exact_and_does_not_mark_seen(imap_account: ImapAccount) -> None:
    imap_account.append(LETTER)
    imap_account.append(LETTER.replace(b"one", b"two"))
    source = ImapSource(imap_config(imap_account))
    try:
        validity = source.select()
        uids = source.list_uids()
        fetched = list(source.fetch(uids))
    finally:
        source.close()
    assert validity > 0
    assert [f.raw for f in fetched] == imap_account.messages()
    assert all(f.received_at is not None and f.received_at.tzinfo for f in fetched)
    assert all(b"\\Seen" not in flags for flags in imap_account.flags().values())


def test_imap_file_moves_and_creates_folder(imap_account: ImapAccount) -> None:
    imap_account.append(LETTER)
    source = ImapSource(imap_config(imap_account))
    try:
        source.select()
        source.file(source.list_uids(), "Processed")
    finally:
        source.close()
    assert imap_account.uids() == []
    assert imap_account.messages("Processed") == [LETTER]


def test_imap_idle_wakes_on_new_mail(imap_account: ImapAccount) -> None:
    source = ImapSource(imap_config(imap_account, idle_timeout=20))
    stop = threading.Event()
    try:
        source.select()
        threading.Timer(0.5, imap_account.append, args=(LETTER,)).start()
        started = time.monotonic()
        source.wait(20, stop)
        waited = time.monotonic() - started
    finally:
        source.close()
    assert waited < 10  # woken by EXISTS, not by the 20 s timeout


def test_imap_idle_sees_mail_that_landed_just_before_it_began(
    imap_account: ImapAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A letter that lands after the last look at the folder and before IDLE starts is
    not announced by Dovecot (19 times in 20): the wait looks again after a short first
    IDLE instead of sleeping to its timeout (here 20 s; Dovecot's own check: 30 s).

    When Dovecot does announce it (the twentieth time), the attempt proves nothing about
    the second look, so it is tried again, up to five times: every attempt must end in
    seconds, and one at least must have been found by the second look."""
    outcomes = []
    for _attempt in range(5):
        source = ImapSource(imap_config(imap_account, idle_timeout=20))
        looks: list[bool] = []
        first_look = source._arrived_since_listing

        def look_then_deliver(first_look: Callable[[], bool] = first_look,
                              looks: list[bool] = looks) -> bool:
            found = first_look()
            looks.append(found)
            if len(looks) == 1:
                imap_account.append(LETTER)  # in the window: after the look, before IDLE
            return found

        monkeypatch.setattr(source, "_arrived_since_listing", look_then_deliver)
        try:
            source.select()
            source.list_uids()
            started = time.monotonic()
            source.wait(20, threading.Event())
            waited = time.monotonic() - started
        finally:
            source.close()
        assert waited < 5, (looks, waited)
        assert looks in ([False], [False, True])  # announced by IDLE, or the second look
        outcomes.append(looks)
        if looks == [False, True]:
            break
    assert [False, True] in outcomes, outcomes  # found by the second look, not by IDLE


def test_imap_stop_interrupts_idle(imap_account: ImapAccount) -> None:
    source = ImapSource(imap_config(imap_account, idle_timeout=60))
    stop = threading.Event()
    try:
        source.select()
        threading.Timer(0.3, stop.set).start()
        started = time.monotonic()
        source.wait(60, stop)
        assert time.monotonic() - started < 5
    finally:
        source.close()


def test_imap_bad_login_is_mailbox_unavailable(imap_account: ImapAccount) -> None:
    config = imap_config(imap_account)
    config.password = type(config.password)("wrong")
    source = ImapSource(config)
    with pytest.raises(MailboxUnavailable, match=r"IMAP connect to 127\.0\.0\.1:\d+ failed"):
        source.select()


def test_imap_unreachable_is_mailbox_unavailable() -> None:
    source = ImapSource(MailboxConfig(host="127.0.0.1", port=1, security="none", timeout=2))
    with pytest.raises(MailboxUnavailable):
        source.select()


def test_maildir_list_fetch_file(tmp_path: Path) -> None:
    for sub in ("cur", "new", "tmp"):
        (tmp_path / sub).mkdir()
    (tmp_path / "new" / "100.a.host").write_bytes(LETTER)
    (tmp_path / "cur" / "200.b.host:2,S").write_bytes(LETTER + b"2")
    source = MaildirSource(MailboxConfig(maildir=str(tmp_path)))
    assert source.select() == 1
    uids = source.list_uids()
    assert sorted(uids) == ["100.a.host", "200.b.host"]
    assert [f.raw for f in source.fetch(["100.a.host"])] == [LETTER]
    source.file(["100.a.host"], "Processed")
    assert source.list_uids() == ["200.b.host"]
    assert (tmp_path / ".Processed" / "cur" / "100.a.host:2,S").read_bytes() == LETTER
    assert (tmp_path / ".Processed" / "maildirfolder").exists()


def test_maildir_missing_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(MailboxUnavailable, match="not a Maildir"):
        MaildirSource(MailboxConfig(maildir=str(tmp_path / "nope"))).select()


def test_imap_wait_returns_at_once_for_mail_that_came_during_the_pass(
    imap_account: ImapAccount,
) -> None:
    """A letter appended after the listing (its EXISTS eaten by the MOVE) is not missed."""
    imap_account.append(LETTER)
    source = ImapSource(imap_config(imap_account, idle_timeout=30))
    try:
        source.select()
        uids = source.list_uids()
        imap_account.append(LETTER.replace(b"one", b"late"))  # arrives mid-pass
        source.file(uids, "Processed")
        started = time.monotonic()
        source.wait(30, threading.Event())
        assert time.monotonic() - started < 2
    finally:
        source.close()


def test_imap_wait_returns_at_once_for_mail_that_came_after_the_last_command(
    imap_account: ImapAccount,
) -> None:
    """A letter appended after the listing, with no command between (an empty pass):
    the server reports it only after the next command, so a SEARCH alone, run on the
    session's old view, missed it and IDLE then waited its whole timeout."""
    source = ImapSource(imap_config(imap_account, idle_timeout=10))
    try:
        source.select()
        assert source.list_uids() == []
        imap_account.append(LETTER)  # arrives while the pass is still going
        started = time.monotonic()
        source.wait(10, threading.Event())
        assert time.monotonic() - started < 5
    finally:
        source.close()


def _fetch_recording_imaplib_messages(account: ImapAccount) -> tuple[bytes, list[str]]:
    """Fetch the folder's letter, recording what imaplib formats for its debug messages."""
    source = ImapSource(imap_config(account))
    messages: list[str] = []
    try:
        source.select()
        source._client._imap._mesg = messages.append  # type: ignore[union-attr]
        fetched = list(source.fetch(source.list_uids()))
    finally:
        source.close()
    assert len(fetched) == 1
    return fetched[0].raw, messages


def test_imap_fetch_does_not_format_letters_for_a_debug_log_nobody_reads(
    imap_account: ImapAccount,
) -> None:
    """imapclient turns imaplib's debug level up to 5, at which imaplib formats every
    literal with %r for a logger that then drops the line: most of the CPU a backlog's
    FETCH cost, and a string several times a large letter's size."""
    marker = "unformatted-" + "x" * 2000
    imap_account.append(LETTER.replace(b"one", marker.encode()))
    raw, messages = _fetch_recording_imaplib_messages(imap_account)
    assert marker.encode() in raw
    assert not [m for m in messages if marker in m]

    imaplib_log = logging.getLogger("imapclient.imaplib")
    level = imaplib_log.level
    imaplib_log.setLevel(logging.DEBUG)  # an operator tracing IMAP gets every line again
    try:
        raw, messages = _fetch_recording_imaplib_messages(imap_account)
    finally:
        imaplib_log.setLevel(level)
    assert [m for m in messages if marker in m]
