"""Queries and state changes, each taking the session of the caller's transaction.

Nothing here commits: the caller's ``Store.transaction()`` block decides what one
unit of work is (one letter, one reply).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Self, TypeVar, cast

from sqlalchemy import Table, and_, bindparam, delete, func, insert, or_, select, text, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailroute.core.addresses import counted_as, domain_of
from mailroute.core.letter import ParseLimits, parse
from mailroute.errors import LetterUnreadable
from mailroute.store import webhooks
from mailroute.store.models import (
    AttachmentRecord,
    Blob,
    Counter,
    Letter,
    LetterBytes,
    LetterFault,
    MailboxState,
    OutboxItem,
    Request,
    RequestEvent,
    Suppression,
)

REQUEST_COUNTER = "request"
FINAL_LETTER_STATES = ("processed", "follow_up", "note", "ignored", "duplicate", "quarantined")


IN_LIST = 500  # values per IN (...) list: well under every backend's parameter limit


Key = TypeVar("Key", str, int)


def _chunks(values: Iterable[Key]) -> Iterator[list[Key]]:
    """The distinct values, sorted, in lists short enough for one IN (...)."""
    wanted = sorted(set(values))
    for start in range(0, len(wanted), IN_LIST):
        yield wanted[start : start + IN_LIST]


# ----------------------------------------------------------------------------- letters


@dataclass
class KnownUids:
    """What the database knows of the UIDs in a folder."""

    unfiled: set[str]  # saved, not yet moved out: not fetched again
    filed: set[str]  # only letters already moved out had them: the server reused them


def known_uids(
    session: Session, mailbox: str, uidvalidity: int, uids: Sequence[str]
) -> KnownUids:
    """Which of these UIDs of this mailbox generation are saved already.

    A UID whose letters were all filed, yet is in the folder again, names another
    letter (a server that lost its UID state); it is fetched and judged by its bytes.
    """
    known = KnownUids(set(), set())
    for chunk in _chunks(uids):
        rows = session.execute(
            select(Letter.uid, Letter.filed_to).where(
                Letter.mailbox == mailbox,
                Letter.uidvalidity == uidvalidity,
                Letter.uid.in_(chunk),
            )
        )
        for uid, filed_to in rows:
            (known.filed if filed_to is not None else known.unfiled).add(uid)
    known.filed -= known.unfiled
    return known


@dataclass(frozen=True)
class Arrival:
    """A letter as a source delivered it, to be saved under its key."""

    uid: str
    raw: bytes
    message_id: str | None
    received_at: datetime


def save_letter(
    session: Session,
    *,
    mailbox: str,
    uidvalidity: int,
    uid: str,
    raw: bytes,
    message_id: str | None,
    received_at: datetime,
    now: datetime,
) -> tuple[Letter, bool]:
    """Store raw bytes under (mailbox, UIDVALIDITY, UID); returns (letter, is_new)."""
    arrival = Arrival(uid, raw, message_id, received_at)
    return save_letters(session, mailbox, uidvalidity, [arrival], now)[0]


def save_letters(
    session: Session, mailbox: str, uidvalidity: int, arrivals: Sequence[Arrival], now: datetime
) -> list[tuple[Letter, bool]]:
    """:func:`save_arrivals`, with the letters as objects of ``session``."""
    saved = save_arrivals(session, mailbox, uidvalidity, arrivals, now)
    letters = {letter.id: letter for chunk in _chunks(letter_id for letter_id, _ in saved)
               for letter in session.scalars(select(Letter).where(Letter.id.in_(chunk)))}
    return [(letters[letter_id], is_new) for letter_id, is_new in saved]


def save_arrivals(
    session: Session, mailbox: str, uidvalidity: int, arrivals: Sequence[Arrival], now: datetime
) -> list[tuple[int, bool]]:
    """Store each letter's raw bytes under (mailbox, UIDVALIDITY, UID); (id, is_new) each.

    The same bytes seen again under another key (a UIDVALIDITY change, a second
    copy in the folder, twice in this batch) return the letter already stored. A
    unique index backs this: if another writer saves the same bytes first, the
    insert raises IntegrityError, and the caller saves the batch again (then finding
    that writer's letter). The rows go in with one executemany each for letters and
    their bytes (no ORM objects: most of a batch's saving time was the ORM's).
    """
    hashes = [fingerprint(arrival.raw) for arrival in arrivals]
    stored = _originals(session, hashes)
    new: dict[str, Arrival] = {}
    for arrival, sha in zip(arrivals, hashes, strict=True):
        if sha not in stored:
            new.setdefault(sha, arrival)
    if new:
        session.execute(insert(_LETTERS), [
            {"mailbox": mailbox, "uidvalidity": uidvalidity, "uid": arrival.uid,
             "message_id": arrival.message_id, "sha256": sha, "size": len(arrival.raw),
             "received_at": arrival.received_at, "fetched_at": now, "state": "pending",
             "attempts": 0}
            for sha, arrival in new.items()])
        ids = _originals(session, new)
        session.execute(insert(_LETTER_BYTES), [
            {"letter_id": ids[sha], "raw": arrival.raw} for sha, arrival in new.items()])
        stored.update(ids)
    saved = []
    for sha in hashes:
        is_new = new.pop(sha, None) is not None  # the first of the batch with these bytes
        saved.append((stored[sha], is_new))
    return saved


def _originals(session: Session, hashes: Iterable[str]) -> dict[str, int]:
    """The ids of the letters (originals, not copies) stored with these fingerprints."""
    found: dict[str, int] = {}
    letters = _LETTERS.c
    for chunk in _chunks(hashes):
        rows = session.execute(select(letters.sha256, letters.id)
                               .where(letters.sha256.in_(chunk), letters.copy_of.is_(None)))
        for sha, letter_id in rows:
            found.setdefault(sha, letter_id)
    return found


_LETTERS = cast(Table, Letter.__table__)
_LETTER_BYTES = cast(Table, LetterBytes.__table__)


def fingerprint(raw: bytes) -> str:
    """SHA-256 of the letter with line endings normalised (each CRLF read as LF).

    Servers disagree on CRLF vs LF (an LF letter appended to Dovecot is served
    with CRLF), so the same letter must hash the same however it was stored.
    Where every CR begins a CRLF (nearly always), deleting the CRs is the same
    normalisation at a seventh of the cost of replacing CRLF, which searches for two
    bytes; it runs on the daemon's main thread for every letter fetched. (``replace``
    deletes a single byte with ``memchr``: 16 µs for a 57 KB letter, ``translate`` 36.)
    """
    if _BARE_CR.search(raw) is None:
        return hashlib.sha256(raw.replace(b"\r", b"")).hexdigest()
    return hashlib.sha256(raw.replace(b"\r\n", b"\n")).hexdigest()


_BARE_CR = re.compile(rb"\r(?!\n)")


def pending_letters(
    session: Session, limit: int = 1000, up_to: int | None = None, mailbox: str | None = None
) -> list[tuple[int, int]]:
    """(id, size) of saved letters not yet processed, oldest first (ids <= ``up_to``; of
    one mailbox, by its source name, if given)."""
    query = select(Letter.id, Letter.size).where(Letter.state == "pending")
    if mailbox is not None:
        query = query.where(Letter.mailbox == mailbox)
    if up_to is not None:
        query = query.where(Letter.id <= up_to)
    rows = session.execute(query.order_by(Letter.id).limit(limit))
    return [(letter_id, size) for letter_id, size in rows]


def pending_count(session: Session) -> int:
    return session.scalar(select(func.count()).where(Letter.state == "pending")) or 0


@dataclass(slots=True, eq=False)
class DecidingLetter:
    """A saved letter while a batch decides it: the columns deciding reads and sets, as a
    plain object rather than an ORM instance, written back by :func:`write_decided`.

    As ORM instances a batch's letters cost their loading, an instrumented set per
    attribute, a backref append per letter joined to a request and the flush's sorting
    of dirty rows into UPDATE groups: about 90 µs a letter against 30 for these rows and
    one UPDATE a batch. The catch: what this batch changed is not in the session, so
    queries about letters within the batch must be answered by the batch
    (``store.lookups.BatchLookups`` keeps what they need).
    """

    id: int
    uid: str
    received_at: datetime
    attempts: int
    message_id: str | None
    sender: str | None
    subject: str | None
    content_key: str | None
    state: str
    request_id: int | None
    analysis: dict[str, Any] | None
    ignore_reason: str | None
    stage: str | None
    error: str | None
    request: Request | None = None  # joined to this object: its id is written at the end
    _raw: bytes | None = None
    _session: Session | None = None

    @property
    def raw(self) -> bytes:
        """The letter as fetched (read from ``letter_bytes`` when first asked for)."""
        if self._raw is None:
            assert self._session is not None, "a letter's bytes need its session"
            raw = self._session.scalar(select(_LETTER_BYTES.c.raw)
                                       .where(_LETTER_BYTES.c.letter_id == self.id))
            if raw is None:
                raise LookupError(f"letter {self.id} has no bytes stored")
            self._raw = raw
        return self._raw

    def owner_id(self) -> int | None:
        """The id of the request it belongs to (a request object's, set before the write)."""
        return self.request.id if self.request is not None else self.request_id


_DECIDED_COLUMNS = ("state", "request_id", "message_id", "sender", "subject", "content_key",
                    "attempts", "ignore_reason", "stage", "error")
# the columns a DecidingLetter is made of, in the order of its fields (read, not repeated)
_LOADED_COLUMNS = tuple(field.name for field in dataclasses.fields(DecidingLetter)
                        if field.name != "request" and not field.name.startswith("_"))


def lock_pending_letters(
    session: Session, letter_ids: Sequence[int], *, with_raw: bool = True
) -> list[DecidingLetter]:
    """Those of these letters still pending, oldest first, locked against a second worker
    for this transaction (one locked by another worker is left to it). With
    ``with_raw`` their bytes are read too, in one more query (else when asked for)."""
    letters = _LETTERS.c
    query = (
        select(*(letters[name] for name in _LOADED_COLUMNS))
        .where(letters.id.in_(list(letter_ids)), letters.state == "pending")
        .order_by(letters.id)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    found = [DecidingLetter(*row) for row in session.execute(query)]
    for letter in found:
        letter._session = session
    if with_raw and found:
        rows = session.execute(select(_LETTER_BYTES.c.letter_id, _LETTER_BYTES.c.raw)
                               .where(_LETTER_BYTES.c.letter_id.in_(
                                   [letter.id for letter in found])))
        raws = {letter_id: raw for letter_id, raw in rows}  # (a Result has keys(): not dict())
        for letter in found:
            letter._raw = raws.get(letter.id)
    return found


def write_decided(session: Session, letters: Sequence[DecidingLetter]) -> None:
    """Write back what deciding set on these letters: one UPDATE (executemany) for those
    with an analysis and one for the rest, whose analysis stays as it was (a None
    written through the JSON type would be the JSON ``null``, not SQL NULL).

    The requests they joined must be in the session with their ids (they are reserved
    ahead); the session is flushed first, so those rows exist for the foreign key."""
    if not letters:
        return
    session.flush()
    with_analysis = [letter for letter in letters if letter.analysis is not None]
    without = [letter for letter in letters if letter.analysis is None]
    statement = update(_LETTERS).where(_LETTERS.c.id == bindparam("letter_id"))
    for group, columns in ((with_analysis, (*_DECIDED_COLUMNS, "analysis")),
                           (without, _DECIDED_COLUMNS)):
        if group:
            session.execute(statement, [_decided_row(letter, columns) for letter in group])


def _decided_row(letter: DecidingLetter, columns: Sequence[str]) -> dict[str, Any]:
    row = {name: getattr(letter, name) for name in columns}
    row["request_id"] = letter.owner_id()
    row["letter_id"] = letter.id
    return row


ORIGINAL_LETTER_STATES = ("processed", "follow_up", "note", "ignored")  # what a duplicate copies


@dataclass(frozen=True)
class EarlierLetter:
    """A decided letter that carried a Message-ID: whether a new one repeats it is
    told by content (``content_key``; None for letters decided before it was kept,
    which are compared by sender and subject)."""

    id: int
    request_id: int | None
    content_key: str | None
    sender: str | None
    subject: str | None


def processed_with_message_ids(
    session: Session, message_ids: Iterable[str]
) -> dict[str, list[EarlierLetter]]:
    """Message-ID -> the decided letters carrying it, oldest first."""
    found: dict[str, list[EarlierLetter]] = {}
    for chunk in _chunks(message_ids):
        rows = session.execute(  # states filtered here: the planner must pick the Message-ID
            select(Letter.message_id, Letter.state, Letter.id, Letter.request_id,  # index,
                   Letter.content_key, Letter.sender, Letter.subject)  # not scan every
            .where(Letter.message_id.in_(chunk))  # processed letter
            .order_by(Letter.id)
        )
        for message_id, state, letter_id, request_id, key, sender, subject in rows:
            if message_id is not None and state in ORIGINAL_LETTER_STATES:
                found.setdefault(message_id, []).append(
                    EarlierLetter(letter_id, request_id, key, sender, subject))
    return found


def letters_to_file(session: Session, mailbox: str, uidvalidity: int) -> dict[int, tuple[str, str]]:
    """id -> (uid, state) of decided letters not moved out of the folder yet."""
    return {
        row[0]: (row[1], row[2])
        for row in session.execute(
            select(Letter.id, Letter.uid, Letter.state)
            .where(
                Letter.mailbox == mailbox,
                Letter.uidvalidity == uidvalidity,
                Letter.state.in_(FINAL_LETTER_STATES),
                Letter.filed_to.is_(None),
            )
            .order_by(Letter.id)
        )
    }


def letter_states(session: Session, letter_ids: Sequence[int]) -> dict[int, str]:
    if not letter_ids:
        return {}
    rows = session.execute(select(Letter.id, Letter.state).where(Letter.id.in_(letter_ids)))
    return {letter_id: state for letter_id, state in rows}


def mark_filed(session: Session, letter_ids: Iterable[int], folder: str) -> None:
    ids = list(letter_ids)
    if ids:
        session.execute(update(Letter).where(Letter.id.in_(ids)).values(filed_to=folder))


def add_attachment(
    session: Session,
    letter: DecidingLetter,
    *,
    filename: str,
    content_type: str,
    size: int,
    sha256: str,
    inline: bool,
) -> None:
    """An attachment's metadata. Its content is not stored apart: the letter's raw bytes
    hold it, and :func:`attachment_content` reads it from them (``blobs`` holds only
    what earlier versions stored there). With an :class:`AttachmentBuffer` installed,
    the row waits for the transaction's end."""
    row = {"letter_id": letter.id, "filename": filename, "content_type": content_type,
           "size": size, "sha256": sha256, "inline": inline}
    buffer = AttachmentBuffer.of(session)
    if buffer is not None:
        buffer.rows.append(row)
    else:
        session.add(AttachmentRecord(**row))


_ATTACHMENTS = cast(Table, AttachmentRecord.__table__)


class _TransactionBuffer:
    """Rows one transaction holds back to insert with one ``INSERT`` (executemany) just
    before it commits, instead of one ORM object and one ``INSERT ... RETURNING`` each:
    for rows nothing reads back within the transaction that adds them.

    Installed on a session by :meth:`install` (the writers then find it with
    :meth:`of`); ``write`` must be called before the commit: rows not written are lost
    with the session, as a rollback loses them anyway.
    """

    KEY: ClassVar[str]

    @classmethod
    def install(cls, session: Session) -> Self:
        buffer = cls()
        session.info[cls.KEY] = buffer
        return buffer

    @classmethod
    def of(cls, session: Session) -> Self | None:
        """The buffer installed on this session, if any."""
        buffer: Self | None = session.info.get(cls.KEY)
        return buffer


class AttachmentBuffer(_TransactionBuffer):
    """A transaction's attachment rows: as ORM objects each was an insert of its own on
    SQLite (its id is generated), 504 statements for a 2,000-letter backlog."""

    KEY = "mailroute.attachment_buffer"

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def write(self, session: Session) -> None:
        """Insert the rows in the order they were added (their ids keep that order)."""
        rows, self.rows = self.rows, []
        if rows:
            session.execute(insert(_ATTACHMENTS), rows)


ATTACHMENT_CARRIERS = 20  # other letters tried for a file whose own letter lost its bytes


def attachment_content(
    session: Session, record: AttachmentRecord, limits: ParseLimits
) -> bytes | None:
    """An attachment's bytes, or None once no letter that carried it has its raw bytes.

    Attachments are read again from the letter that carried them (parsing is
    deterministic, and the SHA-256 of the record picks the part) instead of being stored
    a second time, decoded, beside the raw bytes: that copy was a third of what a letter
    cost to keep (``bench/storage.py``). ``blobs`` holds what earlier versions stored
    there. When retention has purged the letter's bytes, a younger letter with the same
    file serves it, as the shared blob did before.
    """
    stored = session.scalar(select(Blob.content).where(Blob.sha256 == record.sha256))
    if stored is not None:
        return stored

    def carriers() -> Iterator[int]:  # the others asked for only if its own letter fails
        yield record.letter_id
        yield from session.scalars(
            select(AttachmentRecord.letter_id)
            .where(AttachmentRecord.sha256 == record.sha256,
                   AttachmentRecord.letter_id != record.letter_id)
            .order_by(AttachmentRecord.letter_id.desc())
            .limit(ATTACHMENT_CARRIERS)
        )

    for letter_id in carriers():
        raw = session.scalar(select(LetterBytes.raw).where(LetterBytes.letter_id == letter_id))
        if raw is None:
            continue
        try:
            parsed = parse(raw, limits)
        except LetterUnreadable:  # read once, so not likely; another carrier may do
            continue
        for item in parsed.attachments:
            if item.sha256 == record.sha256:
                return item.content
    return None


def quarantined_count(session: Session) -> int:
    return session.scalar(select(func.count()).where(Letter.state == "quarantined")) or 0


# ---------------------------------------------------------------------------- requests


REQUEST_PREFIX = "SD-"


def next_request_number(session: Session, prefix: str = REQUEST_PREFIX) -> str:
    """The next number in the sequence, gapless: the counter row is locked until commit."""
    return f"{prefix}{bump_counter(session, request_counter(prefix), 1):06d}"


def request_counter(prefix: str) -> str:
    """The counter a prefix numbers from: each prefix has its own sequence, and "SD-"
    keeps the one it always had."""
    return REQUEST_COUNTER if prefix == REQUEST_PREFIX else f"{REQUEST_COUNTER}:{prefix}"


def bump_counter(session: Session, name: str, by: int) -> int:
    """Add ``by`` (0 just locks the row) to a counter; returns its new value.

    The row stays locked until the transaction ends, which is what keeps the
    numbers it hands out unique and gapless across writers.
    """
    bumped = _bump(session, name, by)
    if bumped is None:  # a database from before the row was seeded: create it once
        try:
            with session.begin_nested():
                session.add(Counter(name=name, value=0))
        except IntegrityError:
            pass  # another writer created it first
        bumped = _bump(session, name, by)
    assert bumped is not None
    return bumped


def _bump(session: Session, name: str, by: int) -> int | None:
    with session.no_autoflush:  # a batch's pending rows wait for its one flush
        return session.execute(
            update(Counter)
            .where(Counter.name == name)
            .values(value=Counter.value + by)
            .returning(Counter.value)
        ).scalar()


@dataclass
class HistoryEntry:
    """A history entry held back by :class:`HistoryBuffer` until its transaction ends."""

    request: Request
    at: datetime
    kind: str
    detail: dict[str, Any]


class HistoryBuffer(_TransactionBuffer):
    """The history entries of one transaction (:func:`add_event` appends here)."""

    KEY = "mailroute.history_buffer"

    def __init__(self) -> None:
        self.entries: list[HistoryEntry] = []

    def write(self, session: Session) -> None:
        """Insert the entries, oldest first (so their ids keep the order they were added)."""
        entries, self.entries = self.entries, []
        if not entries:
            return
        session.flush()  # the requests this transaction made get their ids
        session.execute(insert(_REQUEST_EVENTS), [
            {"request_id": entry.request.id, "at": entry.at, "kind": entry.kind,
             "detail": entry.detail} for entry in entries])


_REQUEST_EVENTS = cast(Table, RequestEvent.__table__)


def add_event(
    session: Session, request: Request, kind: str, at: datetime, /, **detail: Any
) -> RequestEvent | HistoryEntry:
    """Append to the request's history; any keyword (even ``request``) is detail."""
    buffer = HistoryBuffer.of(session)
    event: RequestEvent | HistoryEntry
    if buffer is not None:
        event = HistoryEntry(request, at, kind, detail)
        buffer.entries.append(event)
    else:
        event = RequestEvent(request=request, at=at, kind=kind, detail=detail)
        session.add(event)  # by relationship: a request of this transaction has no id yet
    webhooks.on_history(session, request, kind, at, detail)  # in this same transaction
    return event


def request_by_number(session: Session, number: str) -> Request | None:
    """By ``SD-000001``, ``sd-000001`` or the bare ``1`` an operator types."""
    wanted = canonical_number(number)
    return session.scalars(select(Request).where(Request.number == wanted)).first()


def canonical_number(number: str) -> str:
    """``1`` -> ``SD-000001``; anything else upper-cased as given."""
    text = number.strip()
    if text.isdigit():
        return f"{REQUEST_PREFIX}{int(text):06d}"
    return text.upper()


def request_by_message_ids(session: Session, message_ids: Iterable[str]) -> Request | None:
    """The request one of these Message-IDs belongs to: our replies or its letters."""
    ids = [m for m in message_ids if m]
    replies, letters = threads_of(session, ids)
    for message_id in ids:
        if message_id in replies:
            return session.get(Request, replies[message_id])
    for message_id in ids:
        if message_id in letters:
            return session.get(Request, letters[message_id][0])
    return None


def threads_of(
    session: Session, message_ids: Iterable[str]
) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Message-ID -> request id of our replies, and -> request ids (oldest first) of
    customers' letters. Ours are proof of the thread (only its recipients know them);
    a customer's may be known to everyone on Cc, and reused by other senders."""
    wanted = [m for m in message_ids if m]
    replies: dict[str, int] = {}
    letters: dict[str, list[int]] = {}
    for chunk in _chunks(wanted):
        rows = session.execute(
            select(OutboxItem.message_id, OutboxItem.request_id)
            .where(OutboxItem.message_id.in_(chunk)).order_by(OutboxItem.id))
        for message_id, request_id in rows:
            if request_id is not None:
                replies.setdefault(message_id, request_id)
        rows = session.execute(
            select(Letter.message_id, Letter.request_id)
            .where(Letter.message_id.in_(chunk)).order_by(Letter.id))
        for message_id, request_id in rows:
            if message_id is not None and request_id is not None:
                owners = letters.setdefault(message_id, [])
                if request_id not in owners:
                    owners.append(request_id)
    return replies, letters


def letter_senders_of(session: Session, request_id: int) -> list[tuple[str | None, str]]:
    """(sender, state) of the letters stored under a request: who its thread's members
    are. Two columns, not the letters as objects: a long thread's letters, each with its
    analysis, were loaded for every follow-up to it."""
    return letter_senders_of_each(session, [request_id]).get(request_id, [])


def letter_senders_of_each(
    session: Session, request_ids: Iterable[int]
) -> dict[int, list[tuple[str | None, str]]]:
    """:func:`letter_senders_of` for many requests in one query a chunk, by request id
    (those with no letters left out); each (sender, state) once."""
    found: dict[int, list[tuple[str | None, str]]] = {}
    for chunk in _chunks(request_ids):
        rows = session.execute(
            select(_LETTERS.c.request_id, _LETTERS.c.sender, _LETTERS.c.state).distinct()
            .where(_LETTERS.c.request_id.in_(chunk)))
        for request_id, sender, state in rows:
            found.setdefault(request_id, []).append((sender, state))
    return found


def requests_by_id(session: Session, request_ids: Iterable[int]) -> dict[int, Request]:
    found: dict[int, Request] = {}
    for chunk in _chunks(request_ids):
        rows = session.scalars(select(Request).where(Request.id.in_(chunk)))
        found.update((request.id, request) for request in rows)
    return found


@dataclass(frozen=True)
class RequestFilter:
    """What `tickets list` narrows the registry to; None means any."""

    status: str | None = None
    request_type: str | None = None
    priority: str | None = None
    organization: str | None = None  # part of the name or the registration number
    queue: str | None = None
    since: datetime | None = None  # arrived (first letter) at or after
    breached_at: datetime | None = None  # only requests past a due time at this moment
    search: str | None = None  # part of the number, organization, requester or subject
    after: str | None = None  # a page's last number: only requests older than it (cursor)


def list_requests(
    session: Session, limit: int | None = None, where: RequestFilter | None = None
) -> tuple[list[tuple[Request, int]], int]:
    """Requests newest first, each with its message count (letters in + replies out),
    and how many match in all (to say how many the limit left out)."""
    letters = select(func.count(Letter.id)).where(Letter.request_id == Request.id).scalar_subquery()
    replies = (
        select(func.count(OutboxItem.id))
        .where(OutboxItem.request_id == Request.id)
        .scalar_subquery()
    )
    conditions = _request_conditions(where or RequestFilter())
    total = session.scalar(select(func.count(Request.id)).where(*conditions)) or 0
    query = select(Request, letters + replies).where(*conditions).order_by(Request.id.desc())
    if limit:
        query = query.limit(limit)
    return [(row[0], int(row[1])) for row in session.execute(query)], int(total)


def _request_conditions(where: RequestFilter) -> list[Any]:
    conditions: list[Any] = []
    for column, value in (
        (Request.status, where.status),
        (Request.request_type, where.request_type),
        (Request.priority, where.priority),
        (Request.queue, where.queue),
    ):
        if value is not None:
            conditions.append(column == value)
    if where.organization:
        typed = where.organization.strip()
        conditions.append(
            or_(  # lower() in SQLite folds ASCII only: the text as typed matches too
                Request.organization.like(f"%{typed}%"),
                func.lower(Request.organization).like(f"%{typed.lower()}%"),
                Request.registration_number.like(f"%{typed}%"),
            )
        )
    if where.search:
        conditions.append(_search_condition(where.search.strip()))
    if where.after is not None:  # keyset paging: the index on id, however deep the page
        last = select(Request.id).where(Request.number == where.after).scalar_subquery()
        conditions.append(Request.id < last)
    if where.since is not None:  # by arrival: an adopted backlog was not created today
        arrival = (
            select(func.min(Letter.received_at))
            .where(Letter.request_id == Request.id)
            .scalar_subquery()
        )
        conditions.append(func.coalesce(arrival, Request.created_at) >= where.since)
    if where.breached_at is not None:
        now = where.breached_at
        conditions.append(Request.status.not_in(("awaiting_customer", "closed")))
        conditions.append(
            or_(
                and_(Request.first_response_at.is_(None), Request.first_response_due < now),
                and_(Request.resolved_at.is_(None), Request.resolution_due < now),
            )
        )
    return conditions


def _search_condition(typed: str) -> Any:
    """Number, organization, requester or subject containing ``typed``; the number also
    as an operator types it (``42`` finds SD-000042)."""
    pattern = "%" + typed.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    folded = pattern.lower()  # lower() is Unicode-aware on SQLite too (store.db)
    matches = [
        Request.number == canonical_number(typed),
        Request.number.like(pattern.upper(), escape="\\"),
    ]
    for column in (Request.organization, Request.requester, Request.subject):
        matches.append(column.like(pattern, escape="\\"))
        matches.append(func.lower(column).like(folded, escape="\\"))
    return or_(*matches)


# ------------------------------------------------------------------------------ outbox


def pending_reply(
    *,
    kind: str,
    sender: str,
    recipient: str,
    subject: str,
    message_id: str,
    raw: bytes,
    not_before: datetime,
    now: datetime,
    request: Request | None = None,
    letter_id: int | None = None,
) -> OutboxItem:
    """The outbox row of a composed letter, to be sent from ``not_before`` on.

    Plain fields rather than the composer's draft, so the store depends on no layer
    above it; ``raw`` is the whole message, sent as it is.
    """
    return OutboxItem(
        request=request,
        letter_id=letter_id,
        kind=kind,
        sender=sender,
        recipient=recipient,
        counted_as=counted_as(recipient),
        recipient_domain=domain_of(recipient),
        message_id=message_id,
        subject=subject,
        raw=raw,
        state="pending",
        attempts=0,
        not_before=not_before,
        created_at=now,
    )


def reserve_request_ids(session: Session, count: int, after: int | None = None) -> list[int]:
    """``count`` ids for requests this transaction will insert, in order.

    PostgreSQL draws them from the column's own sequence, as an insert would (ids a
    transaction does not use stay a gap, as after a rollback). SQLite numbers rows
    max(id) + 1 on; the transaction holds the write lock (BEGIN IMMEDIATE), so those
    are its own until it ends. ``after``: the last id this transaction reserved before
    (its rows may not be flushed yet, so max(id) would not see them).
    """
    with session.no_autoflush:  # the batch's pending rows wait for its one flush
        if session.get_bind().dialect.name == "postgresql":
            rows = session.execute(
                text("SELECT nextval(pg_get_serial_sequence('requests', 'id'))"
                     " FROM generate_series(1, :count)"), {"count": count})
            return [int(value) for (value,) in rows]
        if after is None:
            after = session.scalar(select(func.max(Request.id))) or 0
    return list(range(after + 1, after + 1 + count))


@dataclass
class QueuedReply:
    """An outbox row held back by :class:`ReplyBuffer`; ``id`` once it is written."""

    request: Request
    letter_id: int | None
    kind: str
    sender: str
    recipient: str
    subject: str
    message_id: str
    raw: bytes
    not_before: datetime
    created_at: datetime
    id: int | None = None

    def row(self) -> dict[str, Any]:
        return {
            "request_id": self.request.id, "letter_id": self.letter_id, "kind": self.kind,
            "sender": self.sender, "recipient": self.recipient,
            "counted_as": counted_as(self.recipient),
            "recipient_domain": domain_of(self.recipient), "message_id": self.message_id,
            "subject": self.subject, "raw": self.raw, "state": "pending", "attempts": 0,
            "not_before": self.not_before, "created_at": self.created_at,
        }


class ReplyBuffer:
    """The replies one transaction queues, inserted together (one executemany) instead of
    one ORM object and one ``INSERT ... RETURNING`` each; their ids are then read back by
    Message-ID (unique). :meth:`write` before anything in the transaction reads the
    outbox, and before the commit."""

    def __init__(self) -> None:
        self.waiting: list[QueuedReply] = []

    def add(self, reply: QueuedReply) -> None:
        self.waiting.append(reply)

    def write(self, session: Session) -> None:
        waiting, self.waiting = self.waiting, []
        if not waiting:
            return
        session.flush()  # the requests this transaction made get their ids
        session.execute(insert(_OUTBOX), [reply.row() for reply in waiting])
        ids: dict[str, int] = {}
        for chunk in _chunks(reply.message_id for reply in waiting):
            rows = session.execute(select(_OUTBOX.c.message_id, _OUTBOX.c.id)
                                   .where(_OUTBOX.c.message_id.in_(chunk)))
            ids.update({message_id: item_id for message_id, item_id in rows})
        for reply in waiting:
            reply.id = ids[reply.message_id]


_OUTBOX = cast(Table, OutboxItem.__table__)


def outbox_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(OutboxItem.state, func.count()).group_by(OutboxItem.state))
    return {state: int(count) for state, count in rows}


AUTOMATIC_REPLIES = ("acknowledgement", "clarification", "limit")


def replies_to_since(session: Session, address: str, since: datetime) -> tuple[int, bool]:
    """(automatic replies to the person at ``address`` since then, whether one was the
    final notice); every spelling of the address counts (``mailroute.core.addresses``)."""
    person = counted_as(address)
    return replies_to_each_since(session, [person], since).get(person, (0, False))


def replies_to_each_since(
    session: Session, people: Iterable[str], since: datetime
) -> dict[str, tuple[int, bool]]:
    """:func:`replies_to_since` for many people at once, keyed by :func:`counted_as`
    (``people`` given in that form; those with none are left out)."""
    counts: dict[str, tuple[int, bool]] = {}
    for chunk in _chunks(people):
        rows = session.execute(
            select(OutboxItem.counted_as, OutboxItem.kind, func.count())
            .where(
                OutboxItem.counted_as.in_(chunk),
                OutboxItem.created_at >= since,
                OutboxItem.kind.in_(AUTOMATIC_REPLIES),
            )
            .group_by(OutboxItem.counted_as, OutboxItem.kind)
        )
        for person, kind, count in rows:
            if person is None:
                continue
            total, notice = counts.get(person, (0, False))
            counts[person] = (total + int(count), notice or kind == "limit")
    return counts


def replies_to_domains_since(
    session: Session, domains: Iterable[str], since: datetime
) -> dict[str, int]:
    """Automatic replies to each of these (lower-case) domains since then."""
    counts: dict[str, int] = {}
    for chunk in _chunks(domains):
        rows = session.execute(
            select(OutboxItem.recipient_domain, func.count())
            .where(
                OutboxItem.recipient_domain.in_(chunk),
                OutboxItem.created_at >= since,
                OutboxItem.kind.in_(AUTOMATIC_REPLIES),
            )
            .group_by(OutboxItem.recipient_domain)
        )
        counts.update({domain: int(count) for domain, count in rows if domain})
    return counts


def automatic_replies_since(session: Session, since: datetime) -> int:
    """Automatic replies of the whole desk since then (the desk-wide cap)."""
    return session.scalar(
        select(func.count()).select_from(OutboxItem)
        .where(OutboxItem.created_at >= since, OutboxItem.kind.in_(AUTOMATIC_REPLIES))
    ) or 0


def recipients_we_wrote(session: Session, addresses: Iterable[str]) -> list[str]:
    """Which of these addresses received replies from us."""
    wanted = sorted({a.lower() for a in addresses})[:500]
    if not wanted:
        return []
    rows = session.scalars(
        select(OutboxItem.recipient).where(OutboxItem.recipient.in_(wanted)).distinct()
    )
    return list(rows)


def _active(since: datetime | None) -> Any:
    """Suppressions made after ``since`` (all of them without it): the ones not expired."""
    return Suppression.created_at > since if since is not None else true()


def is_suppressed(session: Session, address: str, since: datetime | None = None) -> bool:
    """Is ``address`` suppressed by a suppression made after ``since`` (not expired)?"""
    found = session.scalar(select(Suppression.address).where(
        Suppression.address == address.lower(), _active(since)))
    return found is not None


def suppressed_among(
    session: Session, addresses: Iterable[str], since: datetime | None = None
) -> set[str]:
    """Which of these (lower-case) addresses are suppressed (after ``since``)."""
    found: set[str] = set()
    for chunk in _chunks(addresses):
        found.update(session.scalars(select(Suppression.address).where(
            Suppression.address.in_(chunk), _active(since))))
    return found


def list_suppressions(session: Session, since: datetime | None = None) -> list[Suppression]:
    """The suppressions made after ``since`` (the active ones), newest first."""
    return list(session.scalars(select(Suppression).where(_active(since))
                                .order_by(Suppression.created_at.desc(), Suppression.address)))


def suppression_count(session: Session, since: datetime | None = None) -> int:
    return session.scalar(select(func.count()).select_from(Suppression)
                          .where(_active(since))) or 0


def lift_suppression(session: Session, address: str) -> bool:
    """Answer ``address`` again; False when it was not suppressed."""
    found = session.get(Suppression, address.strip().lower())
    if found is None:
        return False
    session.delete(found)
    return True


def suppress(
    session: Session, address: str, reason: str, now: datetime, letter_id: int | None = None
) -> bool:
    """Stop answering ``address`` from ``now``; False when it already had a suppression
    (which this renews: a new permanent failure restarts its time).

    Core statements on the session's connection, not ORM objects: a bounce is decided
    among a batch's letters, and ``Session.get`` or a savepoint flushed the whole batch
    there (5-6 ms a bounce in a backlog's profile). One upsert also settles a race
    with another instance recording the same address (its row is then renewed).
    """
    address = address.lower()
    conn = session.connection()
    table = _SUPPRESSIONS.c
    existed = conn.execute(select(table.address).where(table.address == address)).first()
    renewed: dict[str, Any] = {"reason": reason, "created_at": now}
    if letter_id is not None:
        renewed["letter_id"] = letter_id
    upsert = _dialect_insert(conn.dialect.name)(_SUPPRESSIONS).values(address=address, **renewed)
    conn.execute(upsert.on_conflict_do_update(index_elements=[table.address], set_=renewed))
    return existed is None


def _dialect_insert(dialect: str) -> Callable[[Table], Any]:
    """The backend's INSERT, which knows ``ON CONFLICT`` (SQLite and PostgreSQL spell it
    alike)."""
    if dialect == "postgresql":
        return postgresql.insert
    return sqlite.insert


_SUPPRESSIONS = cast(Table, Suppression.__table__)


# ----------------------------------------------------------------------- letter faults


def record_letter_fault(
    session: Session,
    mailbox: str,
    uidvalidity: int,
    uid: str,
    *,
    action: str,
    error: str,
    now: datetime,
    retry_after: Callable[[int], timedelta],
) -> LetterFault:
    """Note one more failure to fetch or file a letter; it rests until its next attempt.

    ``retry_after(attempts)`` is the pause after that many failures in a row.
    """
    fault = session.scalar(
        select(LetterFault).where(
            LetterFault.mailbox == mailbox,
            LetterFault.uidvalidity == uidvalidity,
            LetterFault.uid == uid,
        )
    )
    if fault is None:
        fault = LetterFault(mailbox=mailbox, uidvalidity=uidvalidity, uid=uid, attempts=0,
                            first_failed_at=now)
        session.add(fault)
    fault.attempts += 1
    fault.action, fault.error = action, error
    fault.next_attempt_at = now + retry_after(fault.attempts)
    session.flush()
    return fault


def clear_letter_faults(session: Session, mailbox: str, uidvalidity: int,
                        uids: Iterable[str]) -> None:
    """These letters were fetched or filed after all."""
    for chunk in _chunks(uids):
        session.execute(
            delete(LetterFault).where(
                LetterFault.mailbox == mailbox,
                LetterFault.uidvalidity == uidvalidity,
                LetterFault.uid.in_(chunk),
            )
        )


def letter_faults(session: Session, mailbox: str | None = None) -> list[LetterFault]:
    """Letters set aside (of one mailbox, or all), the longest-failing first."""
    query = select(LetterFault).order_by(LetterFault.first_failed_at, LetterFault.id)
    if mailbox is not None:
        query = query.where(LetterFault.mailbox == mailbox)
    return list(session.scalars(query))


def letter_fault_counts(session: Session) -> dict[str, int]:
    """action (fetch, file) -> letters set aside."""
    rows = session.execute(
        select(LetterFault.action, func.count()).group_by(LetterFault.action)
    )
    return {action: count for action, count in rows}


# ----------------------------------------------------------------------------- mailbox


def record_poll(
    session: Session,
    name: str,
    uidvalidity: int | None,
    at: datetime,
    error: str | None = None,
    backlog: int | None = None,
) -> None:
    """Remember a successful poll (and the folder's size then), or the last error."""
    state = session.get(MailboxState, name)
    if state is None:
        state = MailboxState(name=name)
        session.add(state)
    if error is None:
        state.uidvalidity = uidvalidity
        state.last_poll_at = at
        state.backlog = backlog
        state.in_hand_since = None  # a pass ended: no letter is in hand
    else:
        state.last_error = error
        state.last_error_at = at


def record_start(session: Session, name: str, at: datetime) -> None:
    """The daemon serving this mailbox started at ``at`` (`status` shows its uptime)."""
    state = session.get(MailboxState, name)
    if state is None:
        state = MailboxState(name=name)
        session.add(state)
    state.started_at = at


def clear_errors(session: Session, prefix: str) -> None:
    """Forget the recorded errors that begin with ``prefix`` (``"smtp: "``): that part
    works again, so `status` must not keep reporting it."""
    session.execute(
        update(MailboxState)
        .where(MailboxState.last_error.startswith(prefix, autoescape=True))
        .values(last_error=None, last_error_at=None)
    )


def note_in_hand(session: Session, name: str, since: datetime | None) -> None:
    """Record since when a letter has been in hand (None: done), for `mailroute status`."""
    state = session.get(MailboxState, name)
    if state is None:
        state = MailboxState(name=name)
        session.add(state)
    state.in_hand_since = since
