"""Delivering queued replies over SMTP (aiosmtplib): 4xx retried with backoff, 5xx failed.

A 5xx is the customer's fault only when it names the recipient (5.1.x at RCPT): then
the address is suppressed, for ``[replies] suppress_for``. Any other 5xx (policy,
content, refused at MAIL FROM or DATA, or one code refusing many recipients in one
run) is the desk's: the reply fails (``mailroute outbox retry`` sends it again), an
alert opens (status, metrics, one mail to the escalation address) and nobody is
suppressed. Suppressions wait for the end of the run, when it is known how many
recipients one code refused.

Each reply is claimed for a short lease before it is sent, so two instances
never send the same row at once, and a claim left by a crashed process expires.
A batch is claimed at once, but its replies go out one by one behind a server that
may be slow: so immediately before each reply is handed to SMTP its claim is renewed
from the clock of that moment, and only while it is still this run's (``claimed_by``).
A reply whose lease lapsed and that another instance claimed meanwhile is left to it.
Delivery is at-least-once: a crash after the server accepted a reply and before
it was marked sent means it is sent again after the lease; its Message-ID is the
same both times, so the recipient's client shows one letter. A database outage
in that moment is not a crash: the process remembers what was accepted and marks
it sent before it claims anything else. On SQLite, where a mark may wait for the
write lock while intake decides a batch, each accepted reply is first written down
in a journal file beside the database (``mail/accepted``), so a crash in that wait
sends nothing again: the next pass marks what the journal holds before it claims.
There, a claimed batch's replies are also marked together, at the batch's end
(``_JournaledMarks``), while the batch's claim still covers a send.

Elsewhere (PostgreSQL) each accepted reply is marked sent in its own commit at once,
before its SMTP session sends the next one, so a SIGKILL leaves at most one reply per
session accepted but unmarked. That commit also renews the claim on the reply the session
sends next (one transaction a reply, not two): nothing but the check for a stop comes
between it and that send, and after a reconnect the claim is renewed anew. That
bookkeeping is cheap: one database connection is kept for the whole run and each
write is one or two short Core ``UPDATE``s on it (no ORM session per reply), taking
the store's SQLite turn like every other transaction. An SMTP session serves the
whole run; a backlog may use up to ``sessions`` of them.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import format_datetime
from functools import cache
from typing import Any, TypeVar, cast

import aiosmtplib
from sqlalchemy import Connection, Select, Table, Update, bindparam, or_, select, update
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from mailroute import logs
from mailroute.config import RepliesConfig, SmtpConfig
from mailroute.core.addresses import counted_as
from mailroute.core.reply_policy import enhanced_status, rejection_names_recipient
from mailroute.errors import SmtpPermanentFailure, SmtpTemporaryFailure, TransientError
from mailroute.mail import oauth2
from mailroute.mail.accepted import Accepted, AcceptedJournal
from mailroute.mail.causes import in_words
from mailroute.mail.tls import tls_context
from mailroute.store import Store, alerts
from mailroute.store import repository as repo
from mailroute.store.alerts import AlertMail
from mailroute.store.models import OutboxItem, Request

# Replies claimed at a time by one SMTP session. A crash strands at most this many
# per session until their lease (``claim_timeout``) ends: 10 with one session, 40 with
# SESSIONS. Each session sends its batch one by one, each reply marked sent at once.
# (Claiming 25 or 50 at a time measured no faster once the SMTP session is kept.)
BATCH = 10
# SMTP sessions a run may open for a backlog (``deliver_due(..., sessions=)``): replies
# went out ~1.3-1.9x faster to a loopback server, ~2.6x to one taking 10 ms a message.
# But up to this many can be accepted and not yet marked at one moment, and a mark
# that has to wait (an SQLite turn held by intake) holds up the others' too: so only
# for passes where no other thread's transactions hold the marks up (``run --once``
# after its drain, and during it on PostgreSQL), not the daemon's outbox job.
SESSIONS = 4
# One code refusing this many different recipients in one run is the server's verdict on
# us (a broken recipient check, a block), not on each of them: nobody is suppressed.
MANY_RECIPIENTS = 3
# A session kept between passes (KeptSessions) idle longer than this is closed, not
# used: far below the five minutes RFC 5321 asks servers to wait for a command, so a
# kept session is not one the server is about to drop (a reply sent into that would
# wait for its retry).
KEPT_IDLE_SECONDS = 30.0
log = logs.get("mailroute.mail.outbox")
_T = TypeVar("_T")
_OUTBOX = cast(Table, OutboxItem.__table__)
_REQUESTS = cast(Table, Request.__table__)


@dataclass
class DeliveryReport:
    """What one outbox run did."""

    sent: list[int] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # claim lost to another instance
    # refused at RCPT with 5.1.x: suppressed at the end of the run, unless too many
    refused_recipients: list[tuple[Claimed, SmtpPermanentFailure]] = field(default_factory=list)
    # refused for the desk's reasons: (outbox id, error); an alert, nobody suppressed
    desk_rejections: list[tuple[int, str]] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)
    # temporary SMTP failures (no connection, login refused, 4xx, timeout), in order
    smtp_errors: list[str] = field(default_factory=list)

    @property
    def attempted(self) -> int:
        return len(self.sent) + len(self.retried) + len(self.failed)

    def add(self, other: DeliveryReport) -> None:
        """Count another run's replies in this report too."""
        self.sent += other.sent
        self.retried += other.retried
        self.failed += other.failed
        self.skipped += other.skipped
        self.refused_recipients += other.refused_recipients
        self.desk_rejections += other.desk_rejections
        self.suppressed += other.suppressed
        self.smtp_errors += other.smtp_errors


@dataclass(frozen=True)
class Claimed:
    """A reply taken from the outbox for this run."""

    id: int
    sender: str
    recipient: str
    raw: bytes
    message_id: str
    request: str | None
    attempts: int
    created_at: datetime


def deliver_due(
    store: Store, smtp: SmtpConfig, replies: RepliesConfig, now: datetime, sessions: int = 1,
    alert_mail: AlertMail | None = None,
) -> DeliveryReport:
    """Send every reply that is due now; blocks until done (runs its own event loop).

    ``sessions``: SMTP connections to use at most when a backlog is due (see SESSIONS);
    one keeps at most one reply accepted and not yet marked sent at any moment.
    ``alert_mail``: where a relay refusing replies for the desk's reasons is reported.
    """
    return asyncio.run(deliver_due_async(store, smtp, replies, now, sessions, alert_mail))


async def deliver_due_async(
    store: Store, smtp: SmtpConfig, replies: RepliesConfig, now: datetime, sessions: int = 1,
    alert_mail: AlertMail | None = None, kept: KeptSessions | None = None,
) -> DeliveryReport:
    """:func:`deliver_due` in the caller's event loop. ``kept``: SMTP sessions to take
    and leave open for the loop's next pass (otherwise each pass opens its own and
    closes them)."""
    report = DeliveryReport()
    books = _Books(store)
    try:
        _ACCEPTED.record(books)
        _record_journaled(books)
        lease = _Lease.start(now, replies, smtp)
        try:
            await _Delivery(books, smtp, replies, now, report, max(sessions, 1), lease,
                            kept).run()
        finally:
            _settle_rejections(store, report, now, alert_mail)
            _settle_outage(store, report, now, f"{smtp.host}:{smtp.effective_port()}")
        return report
    finally:
        if books.journal is not None:
            books.journal.finish()
        books.close()


def _record_journaled(books: _Books) -> None:
    """Mark sent, where still pending, the replies earlier passes wrote down as
    accepted and did not mark (see ``mail/accepted``); raises TransientError while
    the database cannot be told (the journals stay for the next pass)."""
    if books.journal is None:
        return
    for path, entries in books.journal.left():
        recorded = sum(_mark_sent_if_pending(books, entry) for entry in entries)
        log.info("replies recorded as sent from a journal", journal=path.name,
                 accepted=len(entries), recorded=recorded)


def _mark_sent_if_pending(books: _Books, entry: Accepted) -> bool:
    params = {"item_id": entry.outbox_id, "v_sent_at": entry.sent_at,
              "v_attempts": entry.attempts}
    statement = _journaled_mark_statement()
    return bool(books.run(lambda conn: conn.execute(statement, params).rowcount,
                          one_statement=True))


@cache
def _journaled_mark_statement() -> Update:
    table = _OUTBOX.c
    return (
        update(_OUTBOX)
        .where(table.id == bindparam("item_id"), table.state == "pending")
        .values(state="sent", claimed_until=None, last_error=None,
                sent_at=bindparam("v_sent_at", type_=table.sent_at.type),
                attempts=bindparam("v_attempts", type_=table.attempts.type))
    )


def _settle_rejections(
    store: Store, report: DeliveryReport, now: datetime, alert_mail: AlertMail | None
) -> None:
    """Suppress the recipients the server said do not exist, unless one code refused
    many of them (then it is the server's problem); alert on the desk's rejections;
    clear the alert once a run delivers without any."""
    by_code: dict[tuple[int, str], list[tuple[Claimed, SmtpPermanentFailure]]] = {}
    for item, exc in report.refused_recipients:
        by_code.setdefault((exc.code, exc.status), []).append((item, exc))
    to_suppress: list[tuple[Claimed, SmtpPermanentFailure]] = []
    for (code, status), refused in by_code.items():
        if len({counted_as(item.recipient) for item, _ in refused}) >= MANY_RECIPIENTS:
            report.desk_rejections += [
                (item.id, f"{exc} ({len(refused)} recipients refused with {code} {status} "
                 "in one run: the server's problem, not theirs)") for item, exc in refused]
        else:
            to_suppress += refused
    if not (to_suppress or report.desk_rejections or report.sent):
        return
    with store.transaction() as session:
        for item, exc in to_suppress:
            if repo.suppress(session, item.recipient, f"SMTP refused: {exc}", now):
                report.suppressed.append(item.recipient.lower())
                log.warning("address suppressed", to=item.recipient, outbox=item.id,
                            reason=f"SMTP {exc.stage} {exc.code} {exc.status}".strip())
        if report.desk_rejections:
            _, error = report.desk_rejections[-1]
            detail = (f"the SMTP relay refuses replies: {error}; "
                      f"{len(report.desk_rejections)} failed in the last run")
            alerts.raise_alert(session, alerts.SMTP_RELAY, detail, now, alert_mail,
                               hits=len(report.desk_rejections))
        elif report.sent:
            alerts.clear_alert(session, alerts.SMTP_RELAY, now)
        if report.sent:
            alerts.clear_alert(session, alerts.SMTP_DOWN, now)


def _settle_outage(store: Store, report: DeliveryReport, now: datetime, where: str) -> None:
    """Open the ``smtp-down`` alert when a run sent nothing and met only temporary
    failures; clear it once a reply is accepted.

    Such replies are only retried later, so without the alert `status` stayed healthy
    for as long as their backoff lasted while SMTP was away. No mail is queued for it:
    it would go through the very server that is failing.
    """
    if report.sent or not report.smtp_errors:
        return  # a reply accepted clears it, in _settle_rejections
    detail = f"SMTP {where} is failing: {report.smtp_errors[-1]}"
    with store.transaction() as session:
        alerts.raise_alert(session, alerts.SMTP_DOWN, detail, now,
                           hits=len(report.smtp_errors))


@dataclass
class _Delivery:
    """One outbox run: SMTP sessions that each claim a batch and send it, one by one.

    The first session claims; each that claims a full batch (a backlog) opens one
    more, up to ``limit``. The first error stops them all after the reply in hand
    (nothing is cancelled mid-send: a reply the server took is always marked or
    remembered), and is raised when they have stopped.
    """

    books: _Books
    smtp: SmtpConfig
    replies: RepliesConfig
    now: datetime
    report: DeliveryReport
    limit: int
    lease: _Lease
    kept: KeptSessions | None = None
    sessions: int = 0
    error: Exception | None = None

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            self._open(group)
        if self.error is not None:
            raise self.error

    def _open(self, group: asyncio.TaskGroup) -> None:
        self.sessions += 1
        group.create_task(self._session(group))

    @property
    def stopping(self) -> bool:
        return self.error is not None

    async def _session(self, group: asyncio.TaskGroup) -> None:
        session = await self.kept.take() if self.kept is not None else _Session(self.smtp)
        failed = False
        try:
            while not self.stopping:
                clock = self.lease.clock()
                claimed = _claim(self.books, self.now, self.lease.length, BATCH,
                                 self.lease.owner, clock)
                if len(claimed) == BATCH and self.sessions < self.limit:
                    self._open(group)
                if claimed:
                    await _send_claimed(self.books, session, self.replies, claimed, self.now,
                                        self.report, lambda: self.stopping, self.lease,
                                        clock + self.lease.length)
                if len(claimed) < BATCH:
                    return
        except Exception as exc:  # raised by run() once the other sessions stopped
            failed = True
            if self.error is None:
                self.error = exc
        finally:
            if self.kept is not None and not failed:
                self.kept.leave(session)
            else:
                await session.close()


@dataclass(frozen=True)
class _Lease:
    """This run's claims: who holds them, for how long, and the clock that ages them.

    The clock is the run's ``now`` moved on by the time elapsed since the run began,
    so a slow server ages a lease exactly as it ages the wall clock, while tests may
    still pass any ``now``. A renewed lease must outlast the send it covers (bounded
    by twice ``[smtp] timeout``), so it is never shorter than three timeouts.
    """

    owner: str
    length: timedelta
    began: datetime
    began_monotonic: float
    shortest: timedelta = timedelta(0)  # what must be left of a claim for one send

    @classmethod
    def start(cls, now: datetime, replies: RepliesConfig, smtp: SmtpConfig) -> _Lease:
        seconds = max(replies.claim_timeout, 3 * smtp.timeout)
        return cls(uuid.uuid4().hex, timedelta(seconds=seconds), now, time.monotonic(),
                   timedelta(seconds=3 * smtp.timeout))

    def clock(self) -> datetime:
        return self.began + timedelta(seconds=time.monotonic() - self.began_monotonic)

    def covers(self, until: datetime | None) -> bool:
        """Whether a claim held until ``until`` still covers a send begun now."""
        return until is not None and until - self.clock() >= self.shortest


def claim_due(
    store: Store, now: datetime, lease: timedelta, limit: int = BATCH
) -> list[Claimed]:
    """Lease the due replies to this process; others skip them until the lease ends."""
    books = _Books(store)
    try:
        return _claim(books, now, lease, limit, uuid.uuid4().hex, now)
    finally:
        books.close()


def _claim(
    books: _Books, now: datetime, lease: timedelta, limit: int, owner: str, clock: datetime
) -> list[Claimed]:
    """Due replies (due by the run's ``now``) whose claim is free at ``clock``."""
    params = {"now": now, "clock": clock, "until": clock + lease, "owner": owner}
    if not books.store.is_sqlite:
        rows = books.run(lambda conn: conn.execute(_claiming(limit), params).all(),
                         one_statement=True)
        return [_claimed(row) for row in rows]

    def claim(conn: Connection) -> list[Claimed]:
        rows = conn.execute(_claimable(limit), params).all()
        if rows:
            conn.execute(
                update(_OUTBOX)
                .where(_OUTBOX.c.id.in_([row.id for row in rows]))
                .values(claimed_until=params["until"], claimed_by=owner)
            )
        return [_claimed(row) for row in rows]

    return books.run(claim)


# What a claim reads of each row, beside its request's number (``Claimed``'s fields).
_CLAIMED_COLUMNS = ("id", "sender", "recipient", "raw", "message_id", "attempts", "created_at")


def _claimed(row: Any) -> Claimed:
    return Claimed(id=row.id, sender=row.sender, recipient=row.recipient, raw=row.raw,
                   message_id=row.message_id, request=row.number, attempts=row.attempts,
                   created_at=row.created_at)


def _due_and_free() -> tuple[Any, ...]:
    """The outbox rows a claim may take: due by ``:now``, unclaimed or lapsed at ``:clock``."""
    outbox = _OUTBOX.c
    return (
        outbox.state == "pending",
        outbox.not_before <= bindparam("now", type_=outbox.not_before.type),
        or_(outbox.claimed_until.is_(None),
            outbox.claimed_until <= bindparam("clock", type_=outbox.claimed_until.type)),
    )


@cache
def _claimable(limit: int) -> Select[Any]:
    """SQLite: the rows to claim with their request's number, read in the claim's
    transaction (SQLite's one writer at a time keeps another run from reading them too)."""
    outbox = _OUTBOX.c
    return (
        select(*(outbox[name] for name in _CLAIMED_COLUMNS), _REQUESTS.c.number)
        .select_from(_OUTBOX.outerjoin(_REQUESTS, outbox.request_id == _REQUESTS.c.id))
        .where(*_due_and_free())
        .order_by(outbox.not_before, outbox.id)
        .limit(limit)
    )


@cache
def _claiming(limit: int) -> Select[Any]:
    """PostgreSQL: a claim as one statement, in autocommit: the rows are picked with
    ``FOR UPDATE SKIP LOCKED`` (another run's claim in flight is passed over, not waited
    for), leased in a data-modifying WITH and returned with their request's number, in
    order. BEGIN, SELECT, UPDATE and COMMIT were four round trips a claim of ten replies."""
    outbox = _OUTBOX.c
    picked = (
        select(outbox.id).where(*_due_and_free())
        .order_by(outbox.not_before, outbox.id).limit(limit)
        .with_for_update(skip_locked=True)
        .cte("picked")
    )
    leased = (
        update(_OUTBOX)
        .where(outbox.id.in_(select(picked.c.id)))
        .values(claimed_until=bindparam("until", type_=outbox.claimed_until.type),
                claimed_by=bindparam("owner", type_=outbox.claimed_by.type))
        .returning(*(outbox[name] for name in _CLAIMED_COLUMNS), outbox.request_id,
                   outbox.not_before)
        .cte("leased")
    )
    return (
        select(*(leased.c[name] for name in _CLAIMED_COLUMNS), _REQUESTS.c.number)
        .select_from(leased.outerjoin(_REQUESTS, leased.c.request_id == _REQUESTS.c.id))
        .order_by(leased.c.not_before, leased.c.id)
    )


class KeptSessions:
    """SMTP sessions left open between the passes of one event loop (the outbox process
    of ``run --once``, which runs a pass after each batch intake files).

    Each such pass opened its sessions and closed them again: 148 connections for 1,821
    replies in a 2,000-letter backlog on PostgreSQL, each a TCP handshake, a greeting,
    EHLO (and STARTTLS, a login) and QUIT on both sides. A kept session whose server
    closed it meanwhile is opened again when it is next used (``_Session.open``), as
    within a pass. :meth:`close` ends them all with QUIT.
    """

    def __init__(self, smtp: SmtpConfig) -> None:
        self.smtp = smtp
        self._idle: list[tuple[_Session, float]] = []  # and when it was left
        self.opened = 0  # connections made by the sessions handed out (logged at the end)

    async def take(self) -> _Session:
        while self._idle:
            session, left = self._idle.pop()
            if time.monotonic() - left <= KEPT_IDLE_SECONDS:
                return session
            await session.close()
        return _Session(self.smtp, self)

    def leave(self, session: _Session) -> None:
        self._idle.append((session, time.monotonic()))

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for session, _left in idle:
            await session.close()


class _Session:
    """The run's SMTP connection: opened when first needed, and again after it broke."""

    def __init__(self, smtp: SmtpConfig, kept: KeptSessions | None = None) -> None:
        self.smtp = smtp
        self._kept = kept
        self._client: aiosmtplib.SMTP | None = None

    async def open(self) -> aiosmtplib.SMTP:
        if self._client is not None and not self._client.is_connected:
            self._client = None
        if self._client is None:
            self._client = await _connect(self.smtp)
            if self._kept is not None:
                self._kept.opened += 1
        return self._client

    def drop(self) -> None:
        """Forget a connection in an unknown state (a send timed out or broke off)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _quit(client)


async def _send_claimed(
    books: _Books,
    session: _Session,
    replies: RepliesConfig,
    claimed: Sequence[Claimed],
    now: datetime,
    report: DeliveryReport,
    stopping: Callable[[], bool],
    lease: _Lease,
    until: datetime | None = None,
) -> None:
    """Send a claimed batch (held until ``until``). With a journal (SQLite), the batch's
    marks wait for its end (``_JournaledMarks``) while its claim still covers a send:
    on one machine's clock nobody else can take a claim before it lapses. Once it does
    not, the replies accepted so far are marked, and each reply's claim is renewed
    before it is sent, as without a journal: an accepted reply is never left pending
    under a claim that lapsed (another instance would send it again)."""
    marks = _JournaledMarks(books, report) if books.journal is not None else None
    renewed: dict[int, bool] = {}  # renewed by the previous reply's mark: whether ours
    used: aiosmtplib.SMTP | None = None
    try:
        for index, item in enumerate(claimed):
            if stopping():
                return  # the rest of the batch waits for its lease
            try:
                client = await session.open()
            except SmtpTemporaryFailure as exc:  # the rest of the batch waits for its retry
                report.smtp_errors.append(str(exc))
                for waiting in claimed[index:]:
                    if _renew(books, waiting, lease):
                        _record_retry(books, replies, waiting, now, str(exc), report)
                return
            # The renewal the previous reply's mark made is as fresh as one made now only
            # when nothing came between (the same connection: no reconnect waited).
            ours = renewed.pop(item.id, None) if client is used else None
            if ours is None:
                if marks is not None and lease.covers(until):
                    ours = True
                else:  # the batch's claim runs short: its accepted replies marked first
                    if marks is not None:
                        marks.record()
                    ours = _renew(books, item, lease)
            if not ours:  # the lease lapsed and another took the reply
                report.skipped.append(item.id)
                log.info("reply left to another instance", msgid=item.message_id,
                         outbox=item.id, request=item.request,
                         reason="claim lapsed and was taken")
                continue
            following = claimed[index + 1] if index + 1 < len(claimed) else None
            renewed = await _send_one(books, session, replies, client, item, now, report,
                                      following, lease, marks)
            used = client
    finally:
        if marks is not None:
            marks.record()


def _renew(books: _Books, item: Claimed, lease: _Lease) -> bool:
    """Extend this run's claim on ``item`` from this moment; False when it is not ours.

    One conditional UPDATE: on PostgreSQL it waits for, then re-reads, a row another
    instance is claiming, and on SQLite writers take turns, so exactly one of two
    instances racing for a lapsed claim finds it theirs.
    """
    statement, params = _renewal(item, lease)
    renewed = books.run(lambda conn: conn.execute(statement, params).rowcount,
                        one_statement=True)
    return bool(renewed)


_Statement = tuple[Update, dict[str, Any]]


def _renewal(item: Claimed, lease: _Lease) -> _Statement:
    """The renewal of this run's claim on ``item`` from this moment (built once)."""
    return _renewal_statement(), {"r_id": item.id, "r_owner": lease.owner,
                                  "r_until": lease.clock() + lease.length}


@cache
def _renewal_statement() -> Update:
    table = _OUTBOX.c
    return (
        update(_OUTBOX)
        .where(table.id == bindparam("r_id"), table.state == "pending",
               table.claimed_by == bindparam("r_owner"))
        .values(claimed_until=bindparam("r_until", type_=table.claimed_until.type))
    )


async def _send_one(
    books: _Books,
    session: _Session,
    replies: RepliesConfig,
    client: aiosmtplib.SMTP,
    item: Claimed,
    now: datetime,
    report: DeliveryReport,
    following: Claimed | None = None,
    lease: _Lease | None = None,
    marks: _JournaledMarks | None = None,
) -> dict[int, bool]:
    """Send ``item`` and record the outcome. Once it is accepted, the mark's transaction
    also renews the claim on ``following`` (the reply this session sends next, at once):
    what it returns, by id, is whether that claim is still this run's. With ``marks``
    (SQLite), an accepted reply is written down in the journal and marked later."""
    message = b"Date: " + format_datetime(now).encode() + b"\r\n" + item.raw
    try:
        await _sendmail(client, session.smtp, item.sender, item.recipient, message)
    except SmtpPermanentFailure as exc:
        _record_failure(books, item, now, str(exc), report)
        if rejection_names_recipient(exc.stage, exc.code, exc.status):
            report.refused_recipients.append((item, exc))
        else:
            report.desk_rejections.append((item.id, str(exc)))
    except SmtpTemporaryFailure as exc:
        if not client.is_connected:
            session.drop()
        report.smtp_errors.append(str(exc))
        _record_retry(books, replies, item, now, str(exc), report)
    except TimeoutError:
        session.drop()
        report.smtp_errors.append("SMTP send timed out")
        _record_retry(books, replies, item, now, "SMTP send timed out", report)
    else:
        if marks is not None:
            marks.add(item, now)
            return {}
        return _record_sent(books, item, now, report, following, lease)
    return {}


class _JournaledMarks:
    """SQLite: the replies of one claimed batch, each written down in the journal the
    moment the server accepts it (``mail/accepted``), then marked sent together, in one
    transaction, when the batch ends.

    A mark on SQLite waits for intake's write lock; one transaction a batch instead of
    one a reply is what lets the outbox process keep up with a drain. The journal keeps
    the promise a mark per reply kept: a crash before the batch's mark sends none of its
    accepted replies again. "reply sent" is logged once the mark is committed.
    """

    def __init__(self, books: _Books, report: DeliveryReport) -> None:
        assert books.journal is not None
        self.books, self.journal, self.report = books, books.journal, report
        self.accepted: list[tuple[Claimed, datetime]] = []

    def add(self, item: Claimed, now: datetime) -> None:
        self.journal.write(Accepted(item.id, now, item.attempts + 1))
        self.accepted.append((item, now))

    def record(self) -> None:
        accepted, self.accepted = self.accepted, []
        if not accepted:
            return
        try:
            _mark_all_sent(self.books, accepted)
        except TransientError:
            for item, now in accepted:
                _ACCEPTED.remember(self.books, item, now)
            log.warning("replies sent, not recorded yet", outbox=[i.id for i, _ in accepted],
                        reason="database unavailable")
            raise  # ends this run; the journal holds them for the next pass
        for item, _now in accepted:
            self.journal.marked(item.id)
            self.report.sent.append(item.id)
            log.info("reply sent", msgid=item.message_id, request=item.request,
                     outbox=item.id, to=item.recipient, attempt=item.attempts + 1)


def _mark_all_sent(books: _Books, accepted: Sequence[tuple[Claimed, datetime]]) -> None:
    """Mark these replies sent, in one transaction (one executemany)."""
    values = {"state": "sent", "claimed_until": None, "last_error": None}
    statement = _update_statement(tuple(sorted([*values, "sent_at", "attempts"])))
    params = [{"item_id": item.id, "v_sent_at": sent_at, "v_attempts": item.attempts + 1,
               **{f"v_{name}": value for name, value in values.items()}}
              for item, sent_at in accepted]
    books.run(lambda conn: conn.execute(statement, params))


def check_reachable(smtp: SmtpConfig) -> None:
    """Connect (and log in) once; raises SmtpTemporaryFailure when SMTP is unreachable."""

    async def probe() -> None:
        await _quit(await _connect(smtp))

    asyncio.run(probe())


# Long enough for the loop to finish closing a dropped socket; only failures pay it.
_SETTLE = 0.05


async def _connect(smtp: SmtpConfig) -> aiosmtplib.SMTP:
    context = tls_context(smtp.tls_verify, smtp.ca_file) if smtp.security != "none" else None
    client = aiosmtplib.SMTP(
        hostname=smtp.host,
        port=smtp.effective_port(),
        use_tls=smtp.security == "ssl",
        start_tls=smtp.security == "starttls",  # explicit: never silently skip STARTTLS
        tls_context=context,
        timeout=smtp.timeout,
    )
    where = f"{smtp.host}:{smtp.effective_port()}"
    try:
        # One deadline for connect, greeting, STARTTLS and login together: the client's
        # own timeout is per read, and a server dripping a byte at a time never trips it.
        async with asyncio.timeout(smtp.timeout):
            await _open(client, smtp)
    except SmtpTemporaryFailure:
        await _abandon(client)
        raise
    except aiosmtplib.SMTPAuthenticationError as exc:
        await _abandon(client)
        raise SmtpTemporaryFailure(
            f"SMTP {where} refused the login for {smtp.username}: {exc.code} {exc.message}"
            " (check [smtp] username and password)"
        ) from exc
    except TimeoutError as exc:
        client.close()  # no QUIT: a server this slow would hold us for its answer too
        await asyncio.sleep(_SETTLE)
        raise SmtpTemporaryFailure(
            f"cannot connect to SMTP {where}: no greeting and login within {smtp.timeout:g} s"
            " (check that it is an SMTP server and [smtp] security matches its port)"
        ) from exc
    except (aiosmtplib.SMTPException, OSError) as exc:
        await _abandon(client)
        raise SmtpTemporaryFailure(
            f"cannot connect to SMTP {where}: {in_words(exc)}"
            " (check [smtp] host, port and security)"
        ) from exc
    return client


async def _open(client: aiosmtplib.SMTP, smtp: SmtpConfig) -> None:
    await client.connect()
    if smtp.auth == "xoauth2" and smtp.oauth2_token_command:
        await _login_xoauth2(client, smtp, oauth2.shared(smtp.oauth2_token_command))
    elif smtp.username:
        await client.login(smtp.username, smtp.password.get_secret_value())


async def _abandon(client: aiosmtplib.SMTP) -> None:
    """Close a connection that failed to open, socket included.

    After a failed STARTTLS handshake the library has already dropped its transport,
    which the event loop closes on its next turns; a run that ends at once (the usual
    case after a connection failure) would leave that socket to the garbage collector.
    """
    await _quit(client)
    await asyncio.sleep(_SETTLE)


async def _login_xoauth2(
    client: aiosmtplib.SMTP, smtp: SmtpConfig, tokens: oauth2.TokenSource
) -> None:
    """AUTH XOAUTH2 with the command's token; a refused token is forgotten, never reused.

    aiosmtplib's ``auth_xoauth2`` answers the 334 error challenge (base64 JSON, as
    Gmail and Microsoft send on a bad token) with an empty line and raises on the
    final 535, whose text names no token.
    """
    if client.last_ehlo_response is None:  # reset by STARTTLS
        await client.ehlo()
    if "xoauth2" not in client.server_auth_methods:
        offered = " ".join(client.server_auth_methods).upper() or "no AUTH"
        raise SmtpTemporaryFailure(
            f"SMTP {smtp.host} does not offer AUTH XOAUTH2 (offers: {offered})"
        )
    try:
        token = await asyncio.to_thread(tokens.token)  # the command may take seconds
    except oauth2.TokenCommandFailed as exc:
        raise SmtpTemporaryFailure(f"SMTP XOAUTH2 token for {smtp.username}: {exc}") from exc
    try:
        await client.auth_xoauth2(smtp.username, token)
    except aiosmtplib.SMTPAuthenticationError as exc:
        tokens.invalidate(token)
        raise SmtpTemporaryFailure(
            f"SMTP XOAUTH2 login refused for {smtp.username}: {exc.code} {exc.message}"
        ) from exc


async def _sendmail(
    client: aiosmtplib.SMTP, smtp: SmtpConfig, sender: str, recipient: str, raw: bytes
) -> None:
    """One message on an open session, under one deadline of two ``[smtp] timeout``s for
    MAIL, RCPT and DATA together (TimeoutError past it). The client's own timeout for each
    answer would also cost a waiter and a timer per answer, four a reply: 0.21 M of the
    client's 1.7 M instructions a reply (bench/smtp_client.py), for no guard the deadline
    lacks."""
    # The deadline outside the try: TimeoutError is an OSError, which the last clause
    # would take for a broken connection.
    async with asyncio.timeout(smtp.timeout * 2):
        try:
            await client.sendmail(sender, [recipient], raw, timeout=None)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            code = min((r.code for r in exc.recipients), default=451)
            message = "; ".join(r.message for r in exc.recipients)
            raise _by_code("RCPT", code, message) from exc
        except aiosmtplib.SMTPSenderRefused as exc:
            raise _by_code("MAIL", exc.code, exc.message) from exc
        except aiosmtplib.SMTPDataError as exc:
            raise _by_code("DATA", exc.code, exc.message) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise _by_code("session", exc.code, exc.message) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise SmtpTemporaryFailure(f"SMTP connection failed: {exc}") from exc


def _by_code(
    stage: str, code: int, message: str
) -> SmtpTemporaryFailure | SmtpPermanentFailure:
    text = f"{code} {message} (at {stage})"
    if 500 <= code < 600:
        return SmtpPermanentFailure(text, stage, code, enhanced_status(message))
    return SmtpTemporaryFailure(text)


async def _quit(client: aiosmtplib.SMTP) -> None:
    try:
        if client.is_connected:
            await asyncio.wait_for(client.quit(), 5)
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        client.close()


# ---------------------------------------------------------------------- bookkeeping


def backoff(attempts: int, replies: RepliesConfig) -> timedelta:
    """Exponential delay after the n-th failed attempt, capped at ``retry_max``."""
    seconds = replies.retry_initial * (2 ** max(attempts - 1, 0))
    return timedelta(seconds=min(seconds, replies.retry_max))


class _Books:
    """The outbox rows of one run: one connection kept for the run, a short transaction per write.

    The contract is ``Store.transaction``'s: an OperationalError surfaces as
    TransientError, and on SQLite every transaction first waits for its turn among
    the process's transactions (``Store.turn``), so intake committing back to back
    cannot keep a reply the SMTP server accepted unmarked. What it saves per reply is
    the ORM session, its flush and the pool checkout with its pre-ping; on PostgreSQL
    a write of one statement also runs in autocommit mode (one round trip instead
    of BEGIN, UPDATE, COMMIT; a lone statement is atomic either way). A connection
    the server dropped while it sat idle (PostgreSQL restarted during an SMTP
    exchange) is replaced once and the write run again, as that pre-ping would have
    done; every write here may run twice (claims and marks set values, add nothing).

    Its commits do not wait for the disk (``_LAZY``: SQLite ``synchronous = NORMAL``,
    PostgreSQL ``synchronous_commit = off``): they only ever record what happened to a
    reply, and a power cut that loses the last of them (never a crash of mailroute or
    of the database server, whose commits are then complete) means at most that a
    reply is sent again, with its Message-ID, which delivery is at-least-once already.
    The rows themselves are written by intake, whose commits wait for the disk. The
    setting is the connection's own and is put back before the connection goes back
    to the pool (a connection that cannot be put back is discarded).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.url = store.url
        self.journal = AcceptedJournal.for_url(store.url)  # SQLite: see mail/accepted
        self._conn: Connection | None = None
        self._autocommit = False

    def run(self, work: Callable[[Connection], _T], *, one_statement: bool = False) -> _T:
        """``work`` in one transaction of its own, committed when it returns.

        ``one_statement``: ``work`` executes a single statement (autocommit allowed).
        """
        autocommit = one_statement and not self.store.is_sqlite
        with self.store.turn():  # the same turn-taking as Store.transaction
            try:
                return self._run(work, autocommit)
            except OperationalError as exc:
                raise TransientError(f"database unavailable: {exc.orig or exc}") from exc

    def _run(self, work: Callable[[Connection], _T], autocommit: bool) -> _T:
        kept = self._conn is not None
        try:
            return self._transaction(work, autocommit)
        except OperationalError as exc:
            self.close()
            if not (kept and exc.connection_invalidated):
                raise
        return self._transaction(work, autocommit)

    def _transaction(self, work: Callable[[Connection], _T], autocommit: bool) -> _T:
        if self._conn is None:
            self._conn = self.store.engine.connect()
            self._autocommit = False
            _set_durability(self._conn, lazy=True)
        conn = self._conn
        if autocommit != self._autocommit:  # a local switch in the driver, no round trip
            level = "AUTOCOMMIT" if autocommit else conn.default_isolation_level
            conn.execution_options(isolation_level=level)
            self._autocommit = autocommit
        with conn.begin():
            return work(conn)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if self._autocommit:
                conn.execution_options(isolation_level=conn.default_isolation_level)
            _set_durability(conn, lazy=False)
        except SQLAlchemyError:  # never back to the pool with lazy commits
            with suppress(SQLAlchemyError):
                conn.invalidate()
        with suppress(SQLAlchemyError):  # the database may be what failed; the pool copes
            conn.close()


def _set_durability(conn: Connection, lazy: bool) -> None:
    """Commits on ``conn`` that wait for the disk (the default) or not (see _Books)."""
    if conn.dialect.name == "sqlite":
        # outside any transaction: straight to the driver, which is in autocommit mode
        conn.connection.driver_connection.execute(  # type: ignore[union-attr]
            f"PRAGMA synchronous={'NORMAL' if lazy else 'FULL'}")
    elif conn.dialect.name == "postgresql":
        with conn.begin():
            conn.exec_driver_sql("SET synchronous_commit TO off" if lazy
                                 else "RESET synchronous_commit")


class _Accepted:
    """Replies the SMTP server accepted while the database could not be told.

    Without this, a database outage in the moment between the server's 250 and
    the update left the reply pending, and it went out again after its lease.
    Kept per database URL, as a process may hold several stores (tests do).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[str, int], tuple[datetime, int]] = {}

    def remember(self, books: _Books, item: Claimed, now: datetime) -> None:
        with self._lock:
            self._items[(books.url, item.id)] = (now, item.attempts + 1)

    def record(self, books: _Books) -> None:
        """Mark sent what was accepted earlier; raises TransientError while it cannot."""
        with self._lock:
            waiting = {key: value for key, value in self._items.items() if key[0] == books.url}
        for key, (sent_at, attempts) in waiting.items():
            _mark_sent(books, key[1], sent_at, attempts)
            with self._lock:
                self._items.pop(key, None)
            log.info("reply recorded as sent", outbox=key[1], sent_at=sent_at.isoformat())


_ACCEPTED = _Accepted()


def _mark_sent(
    books: _Books, item_id: int, sent_at: datetime, attempts: int,
    then: _Statement | None = None,
) -> bool | None:
    return _update(books, item_id, then=then, state="sent", sent_at=sent_at,
                   claimed_until=None, attempts=attempts, last_error=None)


def _record_sent(
    books: _Books, item: Claimed, now: datetime, report: DeliveryReport,
    following: Claimed | None = None, lease: _Lease | None = None,
) -> dict[int, bool]:
    """Mark ``item`` sent; with ``following``, that commit also renews its claim (one
    transaction instead of two): the result says, by id, whether it is still ours."""
    renewal = _renewal(following, lease) if following is not None and lease else None
    if books.journal is not None:  # before the mark, which may wait for SQLite's lock
        books.journal.write(Accepted(item.id, now, item.attempts + 1))
    try:
        ours = _mark_sent(books, item.id, now, item.attempts + 1, then=renewal)
    except TransientError:
        _ACCEPTED.remember(books, item, now)
        log.warning("reply sent, not recorded yet", msgid=item.message_id, outbox=item.id,
                    request=item.request, reason="database unavailable")
        raise  # ends this run; the other claimed replies wait for their lease
    if books.journal is not None:
        books.journal.marked(item.id)
    report.sent.append(item.id)
    log.info("reply sent", msgid=item.message_id, request=item.request, outbox=item.id,
             to=item.recipient, attempt=item.attempts + 1)
    return {following.id: ours} if following is not None and ours is not None else {}


def _record_retry(
    books: _Books,
    replies: RepliesConfig,
    item: Claimed,
    now: datetime,
    error: str,
    report: DeliveryReport,
) -> None:
    attempts = item.attempts + 1
    if now - item.created_at > timedelta(hours=replies.retry_deadline_hours):
        _record_failure(books, item, now, f"gave up after {attempts} attempts: {error}", report)
        return
    delay = backoff(attempts, replies)
    _update(books, item.id, attempts=attempts, last_error=error, claimed_until=None,
            not_before=now + delay)
    report.retried.append(item.id)
    log.warning("reply retry", msgid=item.message_id, request=item.request, outbox=item.id,
                attempt=attempts, retry_in=int(delay.total_seconds()), error=error)


def _record_failure(
    books: _Books, item: Claimed, now: datetime, error: str, report: DeliveryReport
) -> None:
    _update(books, item.id, state="failed", attempts=item.attempts + 1, last_error=error,
            claimed_until=None)
    report.failed.append(item.id)
    log.error("reply failed", msgid=item.message_id, request=item.request, outbox=item.id,
              to=item.recipient, error=error)


def _update(
    books: _Books, item_id: int, *, then: _Statement | None = None, **values: object
) -> bool | None:
    """``UPDATE outbox SET ... WHERE id = :id``, committed at once (its own transaction).

    ``then``: a second statement for the same transaction (the renewal of the next
    reply's claim); the result is whether it changed a row (None without one).
    """
    statement = _update_statement(tuple(sorted(values)))
    params: dict[str, Any] = {f"v_{name}": value for name, value in values.items()}
    params["item_id"] = item_id
    if then is None:
        books.run(lambda conn: conn.execute(statement, params), one_statement=True)
        return None
    second, its_params = then
    if not books.store.is_sqlite:  # one round trip instead of BEGIN, UPDATE, UPDATE, COMMIT
        both = _update_and_renew(tuple(sorted(values)))
        merged = {**params, **its_params}
        return bool(books.run(lambda conn: conn.execute(both, merged).rowcount,
                              one_statement=True))

    def work(conn: Connection) -> bool:
        conn.execute(statement, params)
        return bool(conn.execute(second, its_params).rowcount)

    return books.run(work)


@cache
def _update_and_renew(columns: tuple[str, ...]) -> Update:
    """PostgreSQL: the update of ``columns`` (a mark) and the renewal of the next claim
    as one statement, the first in a WITH. A data-modifying WITH runs to completion
    whether or not it is read, in the same snapshot and atomically with the rest, as the
    two statements did in one transaction; the rows differ, and the row count is the
    renewal's. Each round trip of a reply's mark cost the outbox ~50 µs of CPU."""
    first = _update_statement(columns).returning(_OUTBOX.c.id).cte("marked")
    return _renewal_statement().add_cte(first)


@cache
def _update_statement(columns: tuple[str, ...]) -> Update:
    """One statement per set of columns, built once (bind names must differ from columns)."""
    table = _OUTBOX.c
    return (
        update(_OUTBOX)
        .where(table.id == bindparam("item_id"))
        .values({table[name]: bindparam(f"v_{name}", type_=table[name].type) for name in columns})
    )
