"""A backlog is fetched in batches bounded by count and by bytes (the server's sizes).

The count alone let a batch of large letters hold ``batch_size`` times the largest
letter allowed (50 MB) in memory at once; the bytes bound it by ``batch_bytes``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.configs import imap_desk_config
from support.dovecot import ImapAccount
from support.imapserver import ScriptedImapServer

from mailroute.config import MailboxConfig
from mailroute.mail.imap import ImapSource
from mailroute.mail.mailbox import FetchedLetter, UnservedLetter
from mailroute.mail.maildir import MaildirSource
from mailroute.pipeline.decide import Pipeline
from mailroute.pipeline.intake import drain, within_bytes
from mailroute.store import Store
from mailroute.store.models import Letter, Request

# ------------------------------------------------------------------ the cut (pure)


def test_a_batch_takes_the_letters_that_fit_the_budget_in_their_order() -> None:
    sizes = {"1": 40, "2": 40, "3": 40, "4": 10}
    assert within_bytes(["1", "2", "3", "4"], sizes, 100) == ["1", "2"]
    assert within_bytes(["3", "4"], sizes, 100) == ["3", "4"]
    assert within_bytes(["1", "2"], sizes, 80) == ["1", "2"]  # the budget itself fits


def test_a_letter_larger_than_the_budget_comes_alone_and_never_stalls_the_queue() -> None:
    sizes = {"1": 500, "2": 10}
    assert within_bytes(["1", "2"], sizes, 100) == ["1"]
    assert within_bytes(["2", "1"], sizes, 100) == ["2"]


def test_unknown_sizes_leave_the_batch_to_its_count() -> None:
    assert within_bytes(["1", "2", "3"], {}, 100) == ["1", "2", "3"]
    assert within_bytes(["1", "2", "3"], {"2": 200}, 100) == ["1"]


# ----------------------------------------------------------------- the sources' sizes


def letter(number: int, padding: int) -> bytes:
    return (f"From: customer{number}@example.org\r\nTo: servicedesk@example.com\r\n"
            f"Subject: printer {number} does not print\r\n"
            f"Message-ID: <batch-{number}@example.org>\r\n\r\n"
            f"Printer {number} stopped printing. Our organization: OOO Romashka.\r\n"
            + "The log of the printer follows.\r\n" * (padding // 32)).encode()


def imap_config(account: ImapAccount, **extra: object) -> MailboxConfig:
    return MailboxConfig(host=account.host, port=account.port, security="none",
                         username=account.username, password=account.password,
                         **extra)  # type: ignore[arg-type]


def test_imap_sizes_are_the_letters_bytes_read_without_their_bodies(
    imap_account: ImapAccount,
) -> None:
    raws = [letter(1, 100), letter(2, 5000), letter(3, 20000)]
    for raw in raws:
        imap_account.append(raw)
    source = ImapSource(imap_config(imap_account))
    try:
        source.select()
        uids = source.list_uids()
        assert source.sizes(uids) == {uid: len(raw) for uid, raw in zip(uids, raws, strict=True)}
        source.file(uids[:1], "Processed")  # gone from the folder: its size is not known
        assert source.sizes(uids) == {uid: len(raw) for uid, raw in
                                      zip(uids[1:], raws[1:], strict=True)}
        assert source.sizes([]) == {}
    finally:
        source.close()


def test_a_server_refusing_the_sizes_leaves_them_unknown_and_the_letters_are_fetched(
    store: Store,
) -> None:
    """The scripted server answers NO to any FETCH naming a broken letter, sizes too: the
    batch is then cut by count, and the FETCH of bodies sets that one letter aside."""
    with ScriptedImapServer() as scripted:
        uids = [scripted.add(letter(n, 100), now()) for n in range(6)]
        scripted.faults[uids[2]] = "no"
        config = imap_desk_config(scripted.host, scripted.port, store.url, "desk", "secret",
                                  batch_size=3)
        source = ImapSource(config.mailbox)
        try:
            source.select()
            assert source.sizes([str(uid) for uid in uids[:3]]) == {}
            assert source.sizes([str(uid) for uid in uids[3:]]) == {
                str(uid): len(letter(n + 3, 100)) for n, uid in enumerate(uids[3:])}
            report = drain(source, store, Pipeline.from_config(config), config.mailbox, now)
        finally:
            source.close()
        assert report.unserved == 1
        assert count(store, Letter) == 5
        assert scripted.uids("INBOX") == [uids[2]]


def test_maildir_sizes_are_the_files_sizes(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "a").write_bytes(letter(1, 300))
    (maildir / "cur" / "b:2,S").write_bytes(letter(2, 3000))
    source = MaildirSource(MailboxConfig(maildir=str(maildir)))  # type: ignore[call-arg]
    source.select()
    uids = source.list_uids()
    assert source.sizes(uids) == {item.uid: len(item.raw) for item in source.fetch(uids)}
    assert sorted(source.sizes(uids).values()) == [len(letter(1, 300)), len(letter(2, 3000))]
    assert source.sizes(["gone"]) == {}


# ----------------------------------------------------------- a backlog, end to end


class _RecordingSource(ImapSource):
    """Remembers the UIDs of each FETCH of bodies: the batches the drain made."""

    batches: list[list[str]]

    def fetch(self, uids: Sequence[str]) -> Iterator[FetchedLetter | UnservedLetter]:
        self.batches.append(list(uids))
        return super().fetch(uids)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.upgrade()
    yield store
    store.dispose()


def now() -> datetime:
    return datetime.now(UTC)


def count(store: Store, model: type) -> int:
    with store.transaction() as session:
        return session.query(model).count()


def test_a_backlog_is_fetched_in_batches_within_the_byte_budget(
    imap_account: ImapAccount, store: Store,
) -> None:
    """Twelve letters of 2-70 KB, at most 5 a batch and 100 KB: every FETCH keeps to both
    bounds (the 150 KB letter comes alone), and every letter is registered and filed."""
    paddings = [2_000, 30_000, 30_000, 30_000, 70_000, 150_000,
                2_000, 2_000, 2_000, 2_000, 2_000, 40_000]
    raws = [letter(n, padding) for n, padding in enumerate(paddings)]
    for raw in raws:
        imap_account.append(raw)
    budget = 100_000
    config = imap_desk_config(imap_account.host, imap_account.port, store.url,
                              imap_account.username, imap_account.password,
                              batch_size=5, batch_bytes=budget)
    source = _RecordingSource(config.mailbox)
    source.batches = []
    try:
        source.select()
        size_of = dict(zip(source.list_uids(), map(len, raws), strict=True))
        report = drain(source, store, Pipeline.from_config(config), config.mailbox, now)
    finally:
        source.close()

    batches = source.batches
    uids = list(size_of)
    # 2+30+30+30 KB fit, the 70 KB one would not; 70 and 150 KB each alone (the 150 KB one
    # is over the budget by itself); five small ones reach the count; the last one.
    assert batches == [uids[0:4], uids[4:5], uids[5:6], uids[6:11], uids[11:12]]
    for batch in batches:
        assert len(batch) <= 5
        assert len(batch) == 1 or sum(size_of[uid] for uid in batch) <= budget
    assert report.fetched == len(raws)
    assert count(store, Request) == len(raws)
    assert imap_account.uids() == []
    assert len(imap_account.messages("Processed")) == len(raws)
