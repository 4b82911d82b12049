"""The store: schema version checks and request numbers under concurrency."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from mailroute.errors import DatabaseNotReady
from mailroute.store import Store
from mailroute.store import repository as repo
from mailroute.store.models import Letter


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    yield store
    store.dispose()


def test_fresh_database_is_refused_until_upgraded(store: Store) -> None:
    with pytest.raises(DatabaseNotReady, match="mailroute db upgrade"):
        store.require_current()
    assert store.upgrade() == store.head_revision()
    store.require_current()
    assert store.upgrade() == store.head_revision()  # idempotent


def test_request_numbers_are_unique_and_gapless_under_concurrency(store: Store) -> None:
    store.upgrade()
    numbers: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(15):
                with store.transaction() as session:
                    number = repo.next_request_number(session)
                with lock:
                    numbers.append(number)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(numbers) == [f"SD-{n:06d}" for n in range(1, 91)]


def test_rolled_back_number_is_reused(store: Store) -> None:
    store.upgrade()
    with pytest.raises(RuntimeError), store.transaction() as session:
        repo.next_request_number(session)
        raise RuntimeError("letter failed")
    with store.transaction() as session:
        assert repo.next_request_number(session) == "SD-000001"


def test_same_bytes_are_stored_once(store: Store) -> None:
    store.upgrade()
    now = datetime.now(UTC)
    with store.transaction() as session:
        first, new1 = repo.save_letter(session, mailbox="m", uidvalidity=1, uid="1",
                                       raw=b"a\r\nb", message_id=None, received_at=now, now=now)
        second, new2 = repo.save_letter(session, mailbox="m", uidvalidity=2, uid="9",
                                        raw=b"a\nb", message_id=None, received_at=now, now=now)
        assert (new1, new2) == (True, False) and first.id == second.id
        assert session.query(Letter).count() == 1


def test_the_same_attachment_twice_in_one_letter_is_stored_once(store: Store) -> None:
    from email.message import EmailMessage

    from mailroute.config import Config
    from mailroute.process import Pipeline, process_letter
    from mailroute.store.models import AttachmentRecord, Blob

    store.upgrade()
    message = EmailMessage()
    message["From"] = "a@customer.example"
    message["Subject"] = "Ошибка в отчёте"
    message["Message-ID"] = "<twice@customer.example>"
    message.set_content(
        "Отчёт не формируется, скриншоты во вложении.\n\nООО «А»\nрег. номер 800111222")
    for name in ("one.png", "two.png"):
        message.add_attachment(b"\x89PNG same bytes", maintype="image", subtype="png",
                               filename=name)
    now = datetime.now(UTC)
    with store.transaction() as session:
        letter, _ = repo.save_letter(session, mailbox="m", uidvalidity=1, uid="1",
                                     raw=bytes(message), message_id="<twice@customer.example>",
                                     received_at=now, now=now)
        letter_id = letter.id
    outcome = process_letter(store, Pipeline.from_config(Config()), letter_id, now)
    assert outcome is not None and outcome.state == "processed"
    with store.transaction() as session:
        assert session.query(AttachmentRecord).count() == 2
        assert session.query(Blob).count() == 1
