"""The store: schema version checks, request numbers under concurrency, outbox rows."""

from __future__ import annotations

import ast
import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, inspect, select, text

from mailroute.errors import DatabaseNotReady
from mailroute.store import Store
from mailroute.store import repository as repo
from mailroute.store.models import Letter, OutboxItem, Suppression

REPOSITORY = Path(repo.__file__)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    yield store
    store.dispose()


@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"\xd0", b"."])).map(b"".join))
def test_a_fingerprint_reads_each_crlf_as_lf_and_keeps_bare_crs(raw: bytes) -> None:
    """The fast path (CRs deleted when every CR begins a CRLF) hashes what the stored
    fingerprints were made from: CRLF read as LF, a bare CR kept."""
    assert repo.fingerprint(raw) == hashlib.sha256(raw.replace(b"\r\n", b"\n")).hexdigest()


def test_a_letter_served_with_crlf_or_stored_with_lf_has_one_fingerprint() -> None:
    lf = b"Subject: x\n\nline\n"
    assert repo.fingerprint(lf.replace(b"\n", b"\r\n")) == repo.fingerprint(lf)
    assert repo.fingerprint(b"a\rb\r\n") != repo.fingerprint(b"ab\n")  # a bare CR counts


def test_fresh_database_is_refused_until_upgraded(store: Store) -> None:
    with pytest.raises(DatabaseNotReady, match="mailroute db upgrade"):
        store.require_current()
    assert store.upgrade() == store.head_revision()
    store.require_current()
    assert store.upgrade() == store.head_revision()  # idempotent


def test_a_database_one_migration_behind_is_refused_naming_both_revisions(store: Store) -> None:
    """``require_current`` reads the revisions without alembic: it must still tell a
    database left behind from a current one."""
    from alembic import command

    from mailroute.store.db import _alembic_config, newest_migration

    head = newest_migration()
    behind = f"{int(head) - 1:04d}"
    command.upgrade(_alembic_config(store.url), behind)
    assert store.current_revision() == behind
    with pytest.raises(DatabaseNotReady, match=f"is at revision {behind}.*needs {head}"):
        store.require_current()
    store.upgrade()
    store.require_current()


def test_the_newest_migration_read_from_file_names_is_alembics_head(store: Store) -> None:
    """Each script is named after its revision, in one chain counting up: what
    ``newest_migration`` relies on to name the head without importing alembic."""
    from alembic.script import ScriptDirectory

    from mailroute.store.db import _alembic_config, newest_migration

    scripts = ScriptDirectory.from_config(_alembic_config(store.url))
    assert newest_migration() == store.head_revision() == scripts.get_current_head()
    chain = list(reversed(list(scripts.walk_revisions())))
    for number, script in enumerate(chain, start=1):
        assert script.revision == f"{number:04d}"
        assert Path(str(script.path)).name.startswith(f"{script.revision}_")
        assert script.down_revision == (f"{number - 1:04d}" if number > 1 else None)


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


def test_a_suppression_is_made_once_then_renewed_without_flushing_the_batch(
    store: Store,
) -> None:
    """Deciding a bounce suppresses its address among a batch's pending changes: the
    upsert must neither flush them (a flush per bounce split the batch's one flush) nor
    lose the letter it names when a renewal names none."""
    store.upgrade()
    then = datetime(2026, 1, 5, tzinfo=UTC)
    later = datetime(2026, 2, 5, tzinfo=UTC)
    with store.transaction() as session:
        letter, _ = repo.save_letter(session, mailbox="m", uidvalidity=1, uid="1",
                                     raw=b"bounce", message_id=None, received_at=then, now=then)
        letter.state = "ignored"  # pending in the session, as in a batch
        assert repo.suppress(session, "Ann@Example.COM", "bounce", then, letter.id)
        assert session.dirty  # nothing was flushed by the suppression
        assert not repo.suppress(session, "ann@example.com", "SMTP refused: 550", later)
        assert session.dirty
    with store.transaction() as session:
        (row,) = session.scalars(select(Suppression))
        assert (row.address, row.reason, row.letter_id) == (
            "ann@example.com", "SMTP refused: 550", letter.id)
        assert row.created_at.replace(tzinfo=UTC) == later
        assert repo.is_suppressed(session, "ann@example.com")


def _letter_with_files(number: int, files: dict[str, bytes]) -> bytes:
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"] = f"a{number}@customer.example"
    message["Subject"] = f"Ошибка в отчёте {number}"
    message["Message-ID"] = f"<files{number}@customer.example>"
    message.set_content("Отчёт не формируется, скриншоты во вложении.\n\n"
                        f"ООО «А{number}»\nрег. номер 80011122{number}")
    for name, content in files.items():
        message.add_attachment(content, maintype="image", subtype="png", filename=name)
    return bytes(message)


def _decided(store: Store, raws: list[bytes]) -> list[int]:
    from mailroute.config import Config
    from mailroute.pipeline.decide import Pipeline, process_batch

    now = datetime.now(UTC)
    with store.transaction() as session:
        ids = [repo.save_letter(session, mailbox="m", uidvalidity=1, uid=str(n), raw=raw,
                                message_id=f"<files{n}@customer.example>", received_at=now,
                                now=now)[0].id
               for n, raw in enumerate(raws, 1)]
    outcomes = process_batch(store, Pipeline.from_config(Config()), ids, now)
    assert [outcome.state for outcome in outcomes] == ["processed"] * len(raws)
    return ids


def test_attachments_are_read_back_from_their_letters_bytes(store: Store) -> None:
    """Each file of a letter is recorded, and read back from the letter's raw bytes byte
    for byte (the same file twice too); nothing is stored a second time beside them."""
    from sqlalchemy import select

    from mailroute.core.letter import ParseLimits
    from mailroute.store.models import AttachmentRecord, Blob

    store.upgrade()
    files = {"one.png": b"\x89PNG same bytes", "two.png": b"\x89PNG same bytes",
             "three.png": os.urandom(200_000)}
    _decided(store, [_letter_with_files(1, files)])
    with store.reading() as session:
        records = session.scalars(select(AttachmentRecord).order_by(AttachmentRecord.id)).all()
        assert [(r.filename, r.size) for r in records] == [
            (name, len(content)) for name, content in files.items()]
        assert [repo.attachment_content(session, r, ParseLimits()) for r in records] == list(
            files.values())
        assert session.query(Blob).count() == 0


def test_a_purged_letters_file_is_read_from_a_younger_letter_or_an_old_blob(
    store: Store,
) -> None:
    """Retention purges raw bytes: a file another letter still carries is read from it
    (as the shared blob served it before); one an earlier version stored as a blob is
    read from there; one no letter has any more is gone (None, the console says 410)."""
    from sqlalchemy import delete, select

    from mailroute.core.letter import ParseLimits
    from mailroute.store.models import AttachmentRecord, Blob, LetterBytes

    store.upgrade()
    shared, alone, old = b"\x89PNG logo", b"\x89PNG only in the first", b"\x89PNG stored"
    first, second = _decided(store, [
        _letter_with_files(1, {"logo.png": shared, "alone.png": alone, "old.png": old}),
        _letter_with_files(2, {"logo.png": shared}),
    ])
    with store.transaction() as session:
        session.execute(delete(LetterBytes).where(LetterBytes.letter_id == first))
        old_hash = session.scalar(select(AttachmentRecord.sha256)
                                  .where(AttachmentRecord.filename == "old.png"))
        session.add(Blob(sha256=old_hash, content=old))
    with store.reading() as session:
        records = session.scalars(select(AttachmentRecord)
                                  .where(AttachmentRecord.letter_id == first)
                                  .order_by(AttachmentRecord.id)).all()
        assert [repo.attachment_content(session, r, ParseLimits()) for r in records] == [
            shared, None, old]
    with store.transaction() as session:
        session.execute(delete(LetterBytes).where(LetterBytes.letter_id == second))
    with store.reading() as session:
        logo = session.scalars(select(AttachmentRecord)
                               .where(AttachmentRecord.filename == "logo.png")).first()
        assert logo is not None
        assert repo.attachment_content(session, logo, ParseLimits()) is None


def test_a_batch_writes_its_attachment_rows_with_one_insert_in_their_order(
    store: Store,
) -> None:
    """Attachment rows wait for the batch's end and go in as one executemany: one
    ORM object each was one INSERT each. Their ids keep the letters' and parts' order."""

    from sqlalchemy import event, select

    from mailroute.config import Config
    from mailroute.pipeline.decide import Pipeline, process_batch
    from mailroute.store.models import AttachmentRecord, Blob

    store.upgrade()
    now = datetime.now(UTC)
    expected = []
    with store.transaction() as session:
        ids = []
        for number in range(3):
            names = [f"{part}-{number}.png" for part in ("first", "second")]
            expected += names
            raw = _letter_with_files(number, {name: f"PNG {name}".encode() for name in names})
            letter, _ = repo.save_letter(
                session, mailbox="m", uidvalidity=1, uid=str(number + 1), raw=raw,
                message_id=f"<files{number}@customer.example>", received_at=now, now=now)
            ids.append(letter.id)
    inserts: list[tuple[str, int]] = []

    def count(conn: object, cursor: object, statement: str, parameters: object,
              context: object, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO ATTACHMENTS"):
            rows = len(parameters) if executemany and isinstance(parameters, list | tuple) else 1
            inserts.append((statement, rows))

    engine = store.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        outcomes = process_batch(store, Pipeline.from_config(Config()), ids, now)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert [outcome.state for outcome in outcomes] == ["processed"] * 3
    assert len(inserts) == 1, inserts
    with store.transaction() as session:
        records = session.scalars(select(AttachmentRecord).order_by(AttachmentRecord.id)).all()
        assert [record.filename for record in records] == expected
        assert [record.letter_id for record in records] == [i for i in ids for _ in (1, 2)]
        assert all(record.size == len(f"PNG {record.filename}") for record in records)
        assert all(not record.inline and record.content_type == "image/png"
                   for record in records)
        assert session.query(Blob).count() == 0


def test_raw_bytes_move_to_their_own_table_and_back(store: Store) -> None:
    """0006 moves every letter's bytes to letter_bytes; its downgrade puts them back."""
    from alembic import command
    from sqlalchemy import text

    from mailroute.store.db import _alembic_config

    config = _alembic_config(store.url)
    command.upgrade(config, "0005")
    raw = b"Subject: old\r\n\r\n" + bytes(range(256)) * 64
    with store.engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO letters (id, mailbox, uidvalidity, uid, sha256, raw, size, received_at,"
            " fetched_at, state, attempts) VALUES (7, 'm', 1, '1', 'x', :raw, :size, :now, :now,"
            " 'pending', 0)"), {"raw": raw, "size": len(raw), "now": datetime.now(UTC)})
    store.upgrade()
    with store.transaction() as session:
        (letter,) = repo.lock_pending_letters(session, [7])
        assert letter.raw == raw
    with store.engine.connect() as connection:
        columns = {c["name"] for c in inspect(connection).get_columns("letters")}
        assert "raw" not in columns
    command.downgrade(config, "0005")
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT raw FROM letters WHERE id = 7")).scalar() == raw
        assert "letter_bytes" not in inspect(connection).get_table_names()


def test_the_migrations_build_the_schema_the_models_describe(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from mailroute.store.models import Base

    store.upgrade()
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_letter_bytes_are_compressed_with_lz4_on_postgresql(postgres_url: str) -> None:
    """pglz made saving a backlog's bytes 4x slower than lz4 (see migration 0006)."""
    store = Store(postgres_url)
    try:
        store.upgrade()
        with store.engine.connect() as connection:
            methods = dict(connection.exec_driver_sql(
                "SELECT attrelid::regclass::text || '.' || attname, attcompression"
                " FROM pg_attribute WHERE attname IN ('raw', 'content')"
                " AND attrelid IN ('letter_bytes'::regclass, 'blobs'::regclass)").all())
    finally:
        store.dispose()
    assert methods == {"letter_bytes.raw": "l", "blobs.content": "l"}


def test_a_new_sqlite_database_has_16_kib_pages_and_an_old_one_keeps_its_own(
    tmp_path: Path,
) -> None:
    """Letters' bytes fill chains of overflow pages: 16 KiB pages took a third of the
    WAL's writes of 4 KiB ones (bench/README). The page size is fixed once the file
    exists: a database made before keeps its 4 KiB pages and still works."""
    import sqlite3

    def page_size(path: Path) -> int:
        with contextlib.closing(sqlite3.connect(path)) as connection:
            return int(connection.execute("PRAGMA page_size").fetchone()[0])

    new = tmp_path / "new.sqlite"
    store = Store(f"sqlite:///{new}")
    try:
        store.upgrade()  # the first migration creates the file
        store.require_current()
    finally:
        store.dispose()
    assert page_size(new) == 16384

    old = tmp_path / "old.sqlite"
    with contextlib.closing(sqlite3.connect(old)) as connection:
        connection.execute("PRAGMA page_size=4096")
        connection.execute("CREATE TABLE made_before (x)")
    store = Store(f"sqlite:///{old}")
    try:
        store.upgrade()
        store.require_current()
    finally:
        store.dispose()
    assert page_size(old) == 4096


def test_the_repository_takes_plain_fields_not_the_composers_draft() -> None:
    """An outbox row is kind, addresses, subject, Message-ID and bytes: the repository
    takes those, so the store does not depend on how a letter is composed (it may use the
    pure core's value helpers, such as addresses, and nothing above itself)."""
    imported = [
        node.module or ""
        for node in ast.walk(ast.parse(REPOSITORY.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom)
    ]
    outside = ("mailroute.core.compose", "mailroute.pipeline", "mailroute.mail", "mailroute.ops")
    assert [name for name in imported if name.startswith(outside)] == []


def test_a_pending_reply_is_an_outbox_row_of_plain_fields(store: Store) -> None:
    store.upgrade()
    now = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    raw = b"From: desk@example.com\r\nTo: Boss@Example.com\r\n\r\nhello\r\n"
    with store.transaction() as session:
        session.add(repo.pending_reply(
            kind="report", sender="desk@example.com", recipient="Boss@Example.com",
            subject="ServiceDesk report 2026-11-16 – 2026-11-22", message_id="<r@example.com>",
            raw=raw, not_before=now, now=now,
        ))
    with store.transaction() as session:
        row = session.scalars(select(OutboxItem)).one()
        assert (row.kind, row.recipient, row.recipient_domain) == (
            "report", "Boss@Example.com", "example.com")
        assert row.counted_as == repo.counted_as("Boss@Example.com")
        assert (row.raw, row.state, row.attempts, row.request_id) == (raw, "pending", 0, None)
        assert row.subject == "ServiceDesk report 2026-11-16 – 2026-11-22"


def test_a_read_does_not_wait_for_a_writer(tmp_path: Path) -> None:
    """The console and the API read with Store.reading: on SQLite a deferred BEGIN sees
    the last commit while another writer holds the lock (BEGIN IMMEDIATE would wait
    for it, and a page would hold intake up in turn)."""
    import threading
    import time

    from sqlalchemy import func, select, text

    from mailroute.store.models import Counter

    store = Store(f"sqlite:///{tmp_path / 'read.db'}")
    store.upgrade()
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with store.transaction() as session:
            session.execute(text("insert into counters (name, value) values ('w', 1)"))
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert holding.wait(10)
        started = time.monotonic()
        with store.reading() as session:
            seen = session.scalar(
                select(func.count()).select_from(Counter).where(Counter.name == "w"))
        waited = time.monotonic() - started
    finally:
        release.set()
        thread.join()
        store.dispose()
    assert seen == 0  # the snapshot before the writer's commit
    assert waited < 5  # it did not wait out the writer (which holds the lock for 10 s)


def _request(request_id: int, number: str) -> Any:
    from mailroute.store.models import Request

    now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    return Request(id=request_id, number=number, status="new", request_type="incident",
                   priority="normal", requester="a@example.com", language="ru",
                   created_at=now, updated_at=now, clarifications=0)


def test_request_ids_reserved_ahead_are_fresh_across_blocks_and_transactions(
    store: Store,
) -> None:
    """A batch takes its requests' ids ahead (so their INSERTs go in one executemany):
    more than one block in a transaction, and the next transaction, never repeat one."""
    from mailroute.store.lookups import ID_BLOCK, BatchLookups
    from mailroute.store.models import Request

    store.upgrade()
    since = datetime(2026, 11, 1, tzinfo=UTC)
    taken: list[int] = []
    for batch in range(2):
        with store.transaction() as session:
            lookups = BatchLookups(session, message_ids=[], references=[], senders=[],
                                   replies_since=since)
            for n in range(ID_BLOCK + 6):  # past one block
                request_id = lookups.next_request_id()
                taken.append(request_id)
                session.add(_request(request_id, f"T-{batch}-{n}"))
    assert len(set(taken)) == len(taken) == 2 * (ID_BLOCK + 6)
    assert taken == sorted(taken)
    with store.transaction() as session:  # the database's own numbering goes on after them
        later = Request(**{c: getattr(_request(0, "T-later"), c) for c in (
            "number", "status", "request_type", "priority", "requester", "language",
            "created_at", "updated_at", "clarifications")})
        session.add(later)
        session.flush()
        assert later.id > max(taken)
        assert session.scalar(select(func.count()).select_from(Request)) == len(taken) + 1


def test_taking_request_ids_and_numbers_does_not_flush_the_batch(store: Store) -> None:
    """The batch's requests wait for its one flush, which inserts them in one executemany.
    On PostgreSQL the ids' reservation autoflushed them, and on both the lock of the
    numbers' counter: a batch's flush came in two to four pieces, and deciding took 1.10 s
    of CPU for 2,000 letters instead of 0.60 s (bench/dbprofile.py --timers)."""
    from mailroute.store.lookups import ID_BLOCK, BatchLookups

    store.upgrade()
    since = datetime(2026, 11, 1, tzinfo=UTC)
    with store.transaction() as session:
        lookups = BatchLookups(session, message_ids=[], references=[], senders=[],
                               replies_since=since)
        waiting = [_request(lookups.next_request_id(), "F-first")]
        session.add(waiting[0])
        for _n in range(ID_BLOCK):  # the first number locks the counter; the last id
            request = _request(lookups.next_request_id(), lookups.next_request_number())
            session.add(request)  # reserves a second block
            waiting.append(request)
        assert all(request in session.new for request in waiting)


def test_the_reply_counts_of_each_batch_read_only_an_index(sqlite_url: str) -> None:
    """Each batch counts the automatic replies of the window, desk-wide and per domain;
    in a backlog the window holds every reply queued so far. Read from the table, those
    counts cost 12.6 and 6.4 ms a batch with 9,000 replies queued (and grew with the
    backlog); from an index that holds ``kind`` as well, 1.1 and 0.9 ms."""
    from sqlalchemy import event

    store = Store(sqlite_url)
    store.upgrade()
    statements: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    since = datetime(2026, 12, 4, tzinfo=UTC)
    try:
        with store.transaction() as session:
            event.listen(store.engine, "before_cursor_execute", record)
            try:
                repo.automatic_replies_since(session, since)
                repo.replies_to_domains_since(session, ["customer.example"], since)
            finally:
                event.remove(store.engine, "before_cursor_execute", record)
            plans = [" ".join(str(row[-1]) for row in session.connection().exec_driver_sql(
                         f"EXPLAIN QUERY PLAN {statement}", parameters))
                     for statement, parameters in statements]
    finally:
        store.dispose()
    assert len(plans) == 2
    assert all("COVERING INDEX" in plan for plan in plans), plans


def _store_letters(store: Store, first: int, count: int) -> None:
    arrivals = [repo.Arrival(str(uid), f"Subject: {uid}\r\n\r\nbody {uid}\r\n".encode(), None,
                             datetime(2026, 12, 4, tzinfo=UTC))
                for uid in range(first, first + count)]
    with store.transaction() as session:
        repo.save_letters(session, "m", 1, arrivals, datetime(2026, 12, 4, tzinfo=UTC))


def _letters_counted(store: Store) -> float:
    """What PostgreSQL's planner believes ``letters`` holds (-1: never analysed)."""
    with store.engine.connect() as connection:
        return float(connection.scalar(text(
            "SELECT reltuples FROM pg_class WHERE oid = to_regclass('letters')")))


@pytest.mark.services
def test_a_growing_backlog_refreshes_the_planners_statistics_each_time_it_doubles(
    postgres_url: str,
) -> None:
    """A first start fills empty tables faster than autovacuum looks: intake reports
    the letters it stored, and the store analyses the tables each time they double
    (from 1,000 letters on), so the planner stops planning for empty tables."""
    store = Store(postgres_url)
    store.upgrade()
    try:
        _store_letters(store, 1, 1000)
        store.note_growth(600)
        assert _letters_counted(store) <= 0  # not yet: fewer than 1,000 letters
        store.note_growth(400)
        assert _letters_counted(store) == 1000
        _store_letters(store, 1001, 1000)
        store.note_growth(999)
        assert _letters_counted(store) == 1000  # grown by less than it held
        store.note_growth(1)
        assert _letters_counted(store) == 2000
    finally:
        store.dispose()


def test_on_sqlite_growth_changes_nothing(sqlite_url: str) -> None:
    """SQLite plans with its own heuristics (the covering indexes are chosen without
    statistics): note_growth runs no ANALYZE there, which would write sqlite_stat1."""
    store = Store(sqlite_url)
    store.upgrade()
    try:
        _store_letters(store, 1, 1200)
        store.note_growth(5000)
        with store.engine.connect() as connection:
            tables = connection.scalars(text(
                "SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'")).all()
        assert tables == []
    finally:
        store.dispose()


def test_postgresql_connections_carry_the_name_of_the_part_that_opened_them(
    postgres_url: str,
) -> None:
    """``pg_stat_activity`` says which part of mailroute holds a connection (the daemon,
    its outbox process, the console, a command); a name the URL sets is kept."""
    named = Store(postgres_url, "mailroute outbox")
    joiner = "&" if "?" in postgres_url else "?"
    chosen = Store(f"{postgres_url}{joiner}application_name=desk-7", "mailroute daemon")
    try:
        for store, expected in ((named, "mailroute outbox"), (chosen, "desk-7")):
            with store.engine.connect() as conn:
                own = conn.execute(text(
                    "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
                )).scalar_one()
            assert own == expected
    finally:
        named.dispose()
        chosen.dispose()


def test_sqlite_statement_journals_stay_in_memory(tmp_path: Path) -> None:
    """An UPDATE of a foreign-key column inside a transaction journals the pages it
    rewrites, to undo itself alone; past 64 KiB SQLite spilled that journal to a file
    of its own (``etilqs_*``) held open until the commit, and a batch's decided letters
    wrote ~108 KB a letter there. With ``temp_store=MEMORY`` no such file is opened."""
    import os

    def temporary_files() -> list[str]:
        found = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/self/fd/{fd}")
                if "etilqs_" in target:
                    found.append(target)
        return found

    store = Store(f"sqlite:///{tmp_path / 'journals.sqlite'}")
    try:
        with store.engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
            connection.exec_driver_sql(
                "CREATE TABLE child (id INTEGER PRIMARY KEY,"
                " parent_id INTEGER REFERENCES parent (id), body BLOB NOT NULL)")
            connection.exec_driver_sql("INSERT INTO parent (id) VALUES (1)")
            connection.exec_driver_sql(
                "INSERT INTO child (id, body) VALUES (?, ?)",
                [(number, bytes(100_000)) for number in range(1, 21)])
        with store.transaction() as session:
            connection = session.connection()
            # each row's 100 KB of overflow pages is freed and written again from the
            # freelist: pages that existed before the statement, so all journaled
            connection.exec_driver_sql(
                "UPDATE child SET parent_id = 1, body = ? WHERE id = ?",
                [(bytes([number]) * 100_000, number) for number in range(1, 21)])
            assert temporary_files() == []
            assert connection.exec_driver_sql("PRAGMA temp_store").scalar() == 2
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql(
                "SELECT count(*) FROM child WHERE parent_id = 1").scalar() == 20
    finally:
        store.dispose()
