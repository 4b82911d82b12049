"""The drain loop against Dovecot: crash repair and UIDVALIDITY re-sync without duplicates."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from support.configs import imap_desk_config, sample_letters
from support.dovecot import ImapAccount

from mailroute.mail.imap import ImapSource
from mailroute.pipeline.decide import Pipeline
from mailroute.pipeline.intake import drain, header_message_id
from mailroute.store import Store
from mailroute.store import repository as repo
from mailroute.store.models import Letter, Request


@pytest.fixture(autouse=True)
def _dispose_stores() -> Iterator[None]:
    yield
    for store in _stores:
        store.dispose()
    _stores.clear()


_stores: list[Store] = []


def setup(imap_account: ImapAccount, database_url: str, folder: str = "INBOX"):
    config = imap_desk_config(imap_account.host, imap_account.port, database_url,
                              imap_account.username, imap_account.password, folder=folder)
    store = Store(database_url)
    store.upgrade()
    _stores.append(store)
    return config, store, Pipeline.from_config(config), ImapSource(config.mailbox)


def clock() -> datetime:
    return datetime.now(UTC)


def count(store: Store, model: type) -> int:
    with store.transaction() as session:
        return session.query(model).count()


def test_letter_saved_but_not_moved_is_not_processed_twice(
    imap_account: ImapAccount, database_url: str
) -> None:
    config, store, pipeline, source = setup(imap_account, database_url)
    raw = sample_letters()[0]
    imap_account.append(raw)
    validity = source.select()
    (uid,) = source.list_uids()
    with store.transaction() as session:  # a crash right after the save
        repo.save_letter(session, mailbox=source.name, uidvalidity=validity, uid=uid, raw=raw,
                         message_id=header_message_id(raw), received_at=clock(), now=clock())
    report = drain(source, store, pipeline, config.mailbox, clock)
    source.close()
    assert report.fetched == 0  # known UID: not fetched again
    assert report.count("processed") == 1
    assert count(store, Letter) == 1 and count(store, Request) == 1
    assert imap_account.uids("INBOX") == []


def test_uidvalidity_change_resyncs_without_duplicates(
    imap_account: ImapAccount, database_url: str
) -> None:
    letters = sample_letters()[:3]
    imap_account.create_folder("Support")
    for raw in letters:
        imap_account.append(raw, folder="Support")
    config, store, pipeline, source = setup(imap_account, database_url, folder="Support")
    old_validity = source.select()
    with store.transaction() as session:  # saved under the old UIDs, then a crash
        for uid, raw in zip(source.list_uids(), letters, strict=True):
            repo.save_letter(session, mailbox=source.name, uidvalidity=old_validity, uid=uid,
                             raw=raw, message_id=header_message_id(raw), received_at=clock(),
                             now=clock())
    source.close()
    with imap_account.client() as imap:  # the server rebuilds the folder: new UIDVALIDITY
        imap.delete_folder("Support")
        imap.create_folder("Support")
    for raw in letters:
        imap_account.append(raw, folder="Support")

    source = ImapSource(config.mailbox)
    assert source.select() != old_validity
    report = drain(source, store, pipeline, config.mailbox, clock)
    source.close()

    assert report.saved == 0
    assert count(store, Letter) == 3
    assert count(store, Request) == 3
    assert imap_account.uids("Support") == []
    filed = [raw.replace(b"\r\n", b"\n") for raw in imap_account.messages("Processed")]
    assert sorted(filed) == sorted(letters)


def test_same_message_id_twice_makes_one_request(
    imap_account: ImapAccount, database_url: str
) -> None:
    config, store, pipeline, source = setup(imap_account, database_url)
    raw = sample_letters()[0]
    imap_account.append(raw)
    imap_account.append(raw.replace(b"Date: Mon", b"X-Relay: second\r\nDate: Mon", 1))
    report = drain(source, store, pipeline, config.mailbox, clock)
    source.close()
    assert report.count("processed") == 1
    assert report.count("duplicate") == 1
    assert count(store, Request) == 1
    assert len(imap_account.uids("Processed")) == 2
