"""Delivering queued webhook events over HTTP (httpx): signed, retried, at least once.

Rows come from ``webhook_deliveries`` (queued by ``mailroute.store.webhooks`` in the
transaction of the change). As with the reply outbox, a batch is claimed for a lease
(``claimed_by``/``claimed_until``) so two instances never post the same row at once,
and the claim on each row is renewed from the clock of that moment just before its
POST; a claim left by a crashed process lapses and another run takes the row. A crash
between the receiver's 2xx and the mark posts the event again: receivers deduplicate
by ``X-Mailroute-Delivery`` (the payload's ``id``).

Each POST carries ``X-Mailroute-Timestamp`` (unix seconds) and
``X-Mailroute-Signature: sha256=HEX``, HEX being HMAC-SHA256 of ``"{timestamp}.{body}"``
under the webhook's secret. A 2xx is delivered; 410 Gone fails at once (the receiver
wants no more); anything else, a timeout or no connection is retried with
exponential backoff until ``give_up_hours`` after the event, then failed. After one
failure a URL gets no more posts in this run: its other rows wait until the failed
one's next attempt, so a receiver that is down costs one timeout a run, not one per
event, and events to it keep roughly their order.

This runs in a scheduled job of its own (never in the intake loop): a slow or dead
receiver delays only other webhooks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, Table, or_, select, update

from mailroute import logs
from mailroute.config import WebhookConfig
from mailroute.store import Store
from mailroute.store.models import WebhookDelivery

if TYPE_CHECKING:
    import httpx

BATCH = 20  # rows claimed at a time; a crash strands at most these until their lease ends
GONE = 410
USER_AGENT = "mailroute-webhooks"
log = logs.get("mailroute.mail.webhooks")
_TABLE = cast(Table, WebhookDelivery.__table__)


@dataclass
class WebhookReport:
    """What one delivery run did (row ids)."""

    sent: list[int] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    deferred: list[int] = field(default_factory=list)  # its URL failed earlier this run
    skipped: list[int] = field(default_factory=list)  # claim lapsed and another took it
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Claimed:
    id: int
    url: str
    event: str
    payload: str
    attempts: int
    created_at: datetime


@dataclass(frozen=True)
class _Lease:
    """This run's claims: owner, length, and a clock that ages with the wall clock."""

    owner: str
    length: timedelta
    began: datetime
    began_monotonic: float

    def clock(self) -> datetime:
        return self.began + timedelta(seconds=time.monotonic() - self.began_monotonic)


def signature(secret: str, timestamp: str, body: str) -> str:
    """The ``X-Mailroute-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def headers(hook: WebhookConfig, event: str, body: str, timestamp: str) -> dict[str, str]:
    """The headers of one POST (the delivery id is the payload's ``id``)."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Mailroute-Event": event,
        "X-Mailroute-Delivery": str(json.loads(body)["id"]),
        "X-Mailroute-Timestamp": timestamp,
        "X-Mailroute-Signature": signature(hook.secret.get_secret_value(), timestamp, body),
    }


def deliver_due(
    store: Store, hooks: Sequence[WebhookConfig], now: datetime,
    transport: httpx.BaseTransport | None = None,
) -> WebhookReport:
    """POST every delivery that is due at ``now``; blocks until done.

    ``transport``: httpx's, for tests that must not open sockets (none do yet).
    """
    import httpx  # here: a daemon without webhooks never needs it (0.13 s of start-up)

    run = _Run(store, {hook.url: hook for hook in hooks}, now, _lease(hooks, now))
    with httpx.Client(follow_redirects=False, transport=transport) as client:
        while True:
            claimed = run.claim()
            for item in claimed:
                run.deliver(client, item)
            if len(claimed) < BATCH:
                return run.report


def _lease(hooks: Sequence[WebhookConfig], now: datetime) -> _Lease:
    """Long enough to outlast one POST (bounded by its timeout) with room to spare."""
    seconds = max(60.0, 3 * max((hook.timeout for hook in hooks), default=10.0))
    return _Lease(uuid.uuid4().hex, timedelta(seconds=seconds), now, time.monotonic())


@dataclass
class _Run:
    store: Store
    hooks: dict[str, WebhookConfig]
    now: datetime
    lease: _Lease
    report: WebhookReport = field(default_factory=WebhookReport)
    waiting: dict[str, datetime] = field(default_factory=dict)  # URL -> its next attempt

    def claim(self) -> list[_Claimed]:
        """Due rows whose claim is free, leased to this run."""
        table, clock = _TABLE.c, self.lease.clock()
        query = (
            select(table.id, table.url, table.event, table.payload, table.attempts,
                   table.created_at)
            .where(table.state == "pending", table.not_before <= self.now,
                   or_(table.claimed_until.is_(None), table.claimed_until <= clock))
            .order_by(table.not_before, table.id)
            .limit(BATCH)
        )
        if not self.store.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        with self.store.transaction() as session:
            rows = session.execute(query).all()
            if rows:
                session.execute(
                    update(_TABLE).where(table.id.in_([row.id for row in rows]))
                    .values(claimed_until=clock + self.lease.length,
                            claimed_by=self.lease.owner)
                )
        return [_Claimed(row.id, row.url, row.event, row.payload, row.attempts,
                         row.created_at) for row in rows]

    def deliver(self, client: httpx.Client, item: _Claimed) -> None:
        hook = self.hooks.get(item.url)
        if hook is None:
            self._fail(item, "no [[webhooks]] entry has this url any more")
            return
        if item.url in self.waiting:
            self._set(item, not_before=self.waiting[item.url], claimed_until=None)
            self.report.deferred.append(item.id)
            return
        if not self._renew(item):
            self.report.skipped.append(item.id)
            return
        code, error = _post(client, hook, item)
        if error is None:
            self._sent(item)
        elif code == GONE:
            self._fail(item, f"{error}: the receiver wants no more events")
        else:
            self._retry(hook, item, error)

    def _renew(self, item: _Claimed) -> bool:
        """Extend this run's claim from this moment; False when it is no longer ours."""
        return self._set(item, claimed_until=self.lease.clock() + self.lease.length)

    def _sent(self, item: _Claimed) -> None:
        statement = (
            update(_TABLE).where(_TABLE.c.id == item.id, _TABLE.c.state == "pending")
            .values(state="sent", sent_at=self.lease.clock(), attempts=item.attempts + 1,
                    claimed_until=None, last_error=None)
        )
        with self.store.transaction() as session:
            session.execute(statement)
        self.report.sent.append(item.id)
        log.info("webhook sent", url=item.url, kind=item.event, delivery=item.id,
                 attempt=item.attempts + 1)

    def _retry(self, hook: WebhookConfig, item: _Claimed, error: str) -> None:
        attempts = item.attempts + 1
        self.report.errors.append(error)
        if self.now - item.created_at > timedelta(hours=hook.give_up_hours):
            self._fail(item, f"gave up after {attempts} attempts: {error}")
            return
        delay = backoff(attempts, hook)
        self.waiting[item.url] = self.now + delay
        self._set(item, attempts=attempts, last_error=error, claimed_until=None,
                  not_before=self.now + delay)
        self.report.retried.append(item.id)
        log.warning("webhook retry", url=item.url, kind=item.event, delivery=item.id,
                    attempt=attempts, retry_in=int(delay.total_seconds()), error=error)

    def _fail(self, item: _Claimed, error: str) -> None:
        self._set(item, state="failed", attempts=item.attempts + 1, last_error=error,
                  claimed_until=None)
        self.report.failed.append(item.id)
        log.error("webhook failed", url=item.url, kind=item.event, delivery=item.id,
                  error=error)

    def _set(self, item: _Claimed, **values: Any) -> bool:
        """Update ``item`` while it is pending and this run's; True when it was."""
        table = _TABLE.c
        statement = (
            update(_TABLE)
            .where(table.id == item.id, table.state == "pending",
                   table.claimed_by == self.lease.owner)
            .values(**values)
        )
        with self.store.transaction() as session:
            return bool(cast(CursorResult[Any], session.execute(statement)).rowcount)


def _post(
    client: httpx.Client, hook: WebhookConfig, item: _Claimed
) -> tuple[int | None, str | None]:
    """POST one event: the HTTP status (None without an answer), and what went wrong
    (None when the receiver took it with a 2xx)."""
    import httpx

    timestamp = str(int(time.time()))
    try:
        response = client.post(hook.url, content=item.payload.encode(),
                               headers=headers(hook, item.event, item.payload, timestamp),
                               timeout=hook.timeout)
    except httpx.TimeoutException:
        return None, f"no answer within {hook.timeout:g} s"
    except (httpx.HTTPError, OSError) as exc:
        return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code} {response.reason_phrase}".strip()


def backoff(attempts: int, hook: WebhookConfig) -> timedelta:
    """Exponential delay after the n-th failed attempt, capped at ``retry_max``."""
    seconds = hook.retry_initial * (2 ** max(attempts - 1, 0))
    return timedelta(seconds=min(seconds, hook.retry_max))
