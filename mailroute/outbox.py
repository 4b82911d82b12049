"""Delivering queued replies over SMTP (aiosmtplib): 4xx retried with backoff, 5xx failed.

Each reply is claimed for a short lease before it is sent, so two instances
never send the same row at once, and a claim left by a crashed process expires.
Delivery is at-least-once: a crash after the server accepted a reply and before
it was marked sent means it is sent again after the lease; its Message-ID is the
same both times, so the recipient's client shows one letter. A database outage
in that moment is not a crash: the process remembers what was accepted and marks
it sent before it claims anything else.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import format_datetime

import aiosmtplib
from sqlalchemy import or_, select, update

from mailroute import logs, oauth2
from mailroute.config import RepliesConfig, SmtpConfig
from mailroute.errors import SmtpPermanentFailure, SmtpTemporaryFailure, TransientError
from mailroute.store import Store
from mailroute.store import repository as repo
from mailroute.store.models import OutboxItem, Request
from mailroute.tls import tls_context

BATCH = 10  # replies claimed at a time: a crash strands at most this many for a lease
log = logs.get("mailroute.outbox")


@dataclass
class DeliveryReport:
    """What one outbox run did."""

    sent: list[int] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)

    @property
    def attempted(self) -> int:
        return len(self.sent) + len(self.retried) + len(self.failed)


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
    store: Store, smtp: SmtpConfig, replies: RepliesConfig, now: datetime
) -> DeliveryReport:
    """Send every reply that is due now; blocks until done (runs its own event loop)."""
    return asyncio.run(deliver_due_async(store, smtp, replies, now))


async def deliver_due_async(
    store: Store, smtp: SmtpConfig, replies: RepliesConfig, now: datetime
) -> DeliveryReport:
    report = DeliveryReport()
    _ACCEPTED.record(store)
    while True:
        claimed = claim_due(store, now, timedelta(seconds=replies.claim_timeout))
        if not claimed:
            return report
        await _send_claimed(store, smtp, replies, claimed, now, report)
        if len(claimed) < BATCH:
            return report


def claim_due(
    store: Store, now: datetime, lease: timedelta, limit: int = BATCH
) -> list[Claimed]:
    """Lease the due replies to this process; others skip them until the lease ends."""
    with store.transaction() as session:
        query = (
            select(OutboxItem, Request.number)
            .outerjoin(Request, OutboxItem.request_id == Request.id)
            .where(
                OutboxItem.state == "pending",
                OutboxItem.not_before <= now,
                or_(OutboxItem.claimed_until.is_(None), OutboxItem.claimed_until <= now),
            )
            .order_by(OutboxItem.not_before, OutboxItem.id)
            .limit(limit)
        )
        if not store.is_sqlite:
            query = query.with_for_update(skip_locked=True, of=OutboxItem)
        rows = session.execute(query).all()
        for item, _number in rows:
            item.claimed_until = now + lease
        return [
            Claimed(
                id=item.id,
                sender=item.sender,
                recipient=item.recipient,
                raw=item.raw,
                message_id=item.message_id,
                request=number,
                attempts=item.attempts,
                created_at=item.created_at,
            )
            for item, number in rows
        ]


async def _send_claimed(
    store: Store,
    smtp: SmtpConfig,
    replies: RepliesConfig,
    claimed: Sequence[Claimed],
    now: datetime,
    report: DeliveryReport,
) -> None:
    try:
        client = await _connect(smtp)
    except SmtpTemporaryFailure as exc:
        for item in claimed:
            _record_retry(store, replies, item, now, str(exc), report)
        return
    try:
        for item in claimed:
            await _send_one(store, smtp, replies, client, item, now, report)
    finally:
        await _quit(client)


async def _send_one(
    store: Store,
    smtp: SmtpConfig,
    replies: RepliesConfig,
    client: aiosmtplib.SMTP,
    item: Claimed,
    now: datetime,
    report: DeliveryReport,
) -> None:
    message = b"Date: " + format_datetime(now).encode() + b"\r\n" + item.raw
    try:
        await asyncio.wait_for(
            _sendmail(client, item.sender, item.recipient, message), smtp.timeout * 2
        )
    except SmtpPermanentFailure as exc:
        _record_failure(store, item, now, str(exc), report, permanent=True)
    except SmtpTemporaryFailure as exc:
        _record_retry(store, replies, item, now, str(exc), report)
    except TimeoutError:
        _record_retry(store, replies, item, now, "SMTP send timed out", report)
    else:
        _record_sent(store, item, now, report)


def check_reachable(smtp: SmtpConfig) -> None:
    """Connect (and log in) once; raises SmtpTemporaryFailure when SMTP is unreachable."""

    async def probe() -> None:
        await _quit(await _connect(smtp))

    asyncio.run(probe())


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
    try:
        await asyncio.wait_for(client.connect(), smtp.timeout * 2)
        if smtp.auth == "xoauth2" and smtp.oauth2_token_command:
            await _login_xoauth2(client, smtp, oauth2.shared(smtp.oauth2_token_command))
        elif smtp.username:
            await client.login(smtp.username, smtp.password.get_secret_value())
    except SmtpTemporaryFailure:
        await _quit(client)
        raise
    except aiosmtplib.SMTPAuthenticationError as exc:
        await _quit(client)
        raise SmtpTemporaryFailure(f"SMTP login refused: {exc.code} {exc.message}") from exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        await _quit(client)
        raise SmtpTemporaryFailure(f"cannot connect to SMTP {smtp.host}: {exc}") from exc
    return client


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


async def _sendmail(client: aiosmtplib.SMTP, sender: str, recipient: str, raw: bytes) -> None:
    try:
        await client.sendmail(sender, [recipient], raw)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        code = min((r.code for r in exc.recipients), default=451)
        raise _by_code(code, "; ".join(f"{r.code} {r.message}" for r in exc.recipients)) from exc
    except aiosmtplib.SMTPResponseException as exc:
        raise _by_code(exc.code, f"{exc.code} {exc.message}") from exc
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise SmtpTemporaryFailure(f"SMTP connection failed: {exc}") from exc


def _by_code(code: int, text: str) -> SmtpTemporaryFailure | SmtpPermanentFailure:
    if 500 <= code < 600:
        return SmtpPermanentFailure(text)
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


class _Accepted:
    """Replies the SMTP server accepted while the database could not be told.

    Without this, a database outage in the moment between the server's 250 and
    the update left the reply pending, and it went out again after its lease.
    Kept per database URL, as a process may hold several stores (tests do).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[str, int], tuple[datetime, int]] = {}

    def remember(self, store: Store, item: Claimed, now: datetime) -> None:
        with self._lock:
            self._items[(store.url, item.id)] = (now, item.attempts + 1)

    def record(self, store: Store) -> None:
        """Mark sent what was accepted earlier; raises TransientError while it cannot."""
        with self._lock:
            waiting = {key: value for key, value in self._items.items() if key[0] == store.url}
        for key, (sent_at, attempts) in waiting.items():
            _mark_sent(store, key[1], sent_at, attempts)
            with self._lock:
                self._items.pop(key, None)
            log.info("reply recorded as sent", outbox=key[1], sent_at=sent_at.isoformat())


_ACCEPTED = _Accepted()


def _mark_sent(store: Store, item_id: int, sent_at: datetime, attempts: int) -> None:
    _update(store, item_id, state="sent", sent_at=sent_at, claimed_until=None,
            attempts=attempts, last_error=None)


def _record_sent(store: Store, item: Claimed, now: datetime, report: DeliveryReport) -> None:
    try:
        _mark_sent(store, item.id, now, item.attempts + 1)
    except TransientError:
        _ACCEPTED.remember(store, item, now)
        log.warning("reply sent, not recorded yet", msgid=item.message_id, outbox=item.id,
                    request=item.request, reason="database unavailable")
        raise  # ends this run; the other claimed replies wait for their lease
    report.sent.append(item.id)
    log.info("reply sent", msgid=item.message_id, request=item.request, outbox=item.id,
             to=item.recipient, attempt=item.attempts + 1)


def _record_retry(
    store: Store,
    replies: RepliesConfig,
    item: Claimed,
    now: datetime,
    error: str,
    report: DeliveryReport,
) -> None:
    attempts = item.attempts + 1
    if now - item.created_at > timedelta(hours=replies.retry_deadline_hours):
        _record_failure(store, item, now, f"gave up after {attempts} attempts: {error}", report)
        return
    delay = backoff(attempts, replies)
    _update(store, item.id, attempts=attempts, last_error=error, claimed_until=None,
            not_before=now + delay)
    report.retried.append(item.id)
    log.warning("reply retry", msgid=item.message_id, request=item.request, outbox=item.id,
                attempt=attempts, retry_in=int(delay.total_seconds()), error=error)


def _record_failure(
    store: Store,
    item: Claimed,
    now: datetime,
    error: str,
    report: DeliveryReport,
    permanent: bool = False,
) -> None:
    _update(store, item.id, state="failed", attempts=item.attempts + 1, last_error=error,
            claimed_until=None)
    if permanent:  # the server says the address does not exist: do not write to it again
        with store.transaction() as session:
            repo.suppress(session, item.recipient, f"SMTP refused: {error}", now)
    report.failed.append(item.id)
    log.error("reply failed", msgid=item.message_id, request=item.request, outbox=item.id,
              to=item.recipient, error=error)


def _update(store: Store, item_id: int, **values: object) -> None:
    with store.transaction() as session:
        session.execute(update(OutboxItem).where(OutboxItem.id == item_id).values(**values))
