"""Webhooks: events queued with the change, delivered signed to a real HTTP receiver.

The pipeline runs against a real database (SQLite and PostgreSQL) and a real SMTP sink;
deliveries go over real sockets to ``support.webhook_receiver``, which is down
(connection refused), then refusing (503), then up. The clock is the daemon's, moved
on by hand, so backoff costs no sleeping.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from support.configs import sample_letters, write_config
from support.smtp import SmtpSink
from support.webhook_receiver import WebhookReceiver

from mailroute import config as config_module
from mailroute.mail.webhooks import signature
from mailroute.ops.tickets import change_status
from mailroute.pipeline.escalations import escalate_breaches
from mailroute.service.daemon import Daemon
from mailroute.store import Store
from mailroute.store.models import WebhookDelivery

SECRET = "s3cret-for-the-tracker"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def maildir_with_samples(tmp_path: Path) -> Path:
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    arrived = int(time.time()) - 100
    for number, raw in enumerate(sample_letters()):
        path = maildir / "new" / f"{arrived + number}.{number}.test"
        path.write_bytes(raw)
        os.utime(path, (arrived + number, arrived + number))
    return maildir


def webhook_config(tmp_path: Path, sink: SmtpSink, database_url: str, url: str,
                   **hook: Any) -> config_module.Config:
    """A real config file with one [[webhooks]] entry, loaded as `run` loads it."""
    (tmp_path / "webhook.secret").write_text(SECRET + "\n", encoding="utf-8")
    path = write_config(tmp_path / "config.toml", account=None, sink=sink,
                        database_url=database_url, maildir=maildir_with_samples(tmp_path))
    settings = {"url": url, "secret_file": "webhook.secret", "retry_initial": 10.0,
                "retry_max": 60.0, "timeout": 5.0} | hook
    lines = ["[[webhooks]]", *(f"{key} = {json.dumps(value)}" for key, value in settings.items())]
    path.write_text(path.read_text("utf-8") + "\n".join(lines) + "\n", encoding="utf-8")
    return config_module.load(path, environ={})


@pytest.fixture
def stores() -> Iterator[Callable[[str], Store]]:
    """Upgraded stores, disposed of after the test (no connection left open)."""
    made: list[Store] = []

    def make(url: str) -> Store:
        store = Store(url)
        store.upgrade()
        made.append(store)
        return store

    yield make
    for store in made:
        store.dispose()


def deliveries(store: Store) -> list[WebhookDelivery]:
    with store.transaction() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def test_every_event_arrives_after_the_receiver_was_down(
    tmp_path: Path, smtp_sink: SmtpSink, database_url: str,
    stores: Callable[[str], Store],
) -> None:
    receiver = WebhookReceiver(SECRET)
    config = webhook_config(tmp_path, smtp_sink, database_url, receiver.url)
    store = stores(database_url)
    clock = Clock()
    daemon = Daemon(config, store, clock=clock)

    # Down: intake and replies go on; the first post is refused, the rest wait for it.
    report = daemon.run_once()
    assert len(report.drain.outcomes) == 6
    assert len(smtp_sink.received()) >= 4
    assert report.webhooks.sent == [] and len(report.webhooks.retried) == 1
    assert len(report.webhooks.deferred) == len(deliveries(store)) - 1
    assert "ConnectError" in (deliveries(store)[0].last_error or "")

    # An operator's status change and SLA breaches, by their own paths.
    assert change_status(store, "SD-000002", "in_progress", daemon.pipeline.calendar,
                         clock(), note="internal: looking") == ("new", "in_progress")
    breaches = escalate_breaches(store, config.workflow, daemon.pipeline.identity,
                                 clock() + timedelta(days=60))
    assert breaches

    # Refusing with 503: retried with backoff, nothing marked sent.
    receiver.start()
    receiver.refuse_with = 503
    clock.advance(61)
    report = daemon.send_webhooks()
    assert report.sent == [] and len(report.retried) == 1 and receiver.refused == 1
    rows = deliveries(store)
    assert any(row.last_error == "HTTP 503 Service Unavailable" for row in rows)
    assert all(row.state == "pending" for row in rows)

    # Up: everything arrives, signed.
    receiver.refuse_with = None
    for _ in range(5):
        clock.advance(61 + 60 * 60 * 24 * 61)  # past every breach's queueing time too
        daemon.send_webhooks()
    rows = deliveries(store)
    assert {row.state for row in rows} == {"sent"}
    assert receiver.bad_signatures == 0
    ids = {json.loads(row.payload)["id"] for row in rows}
    assert {item.delivery for item in receiver.received} == ids
    assert len(receiver.received) == len(ids)

    events = Counter(item.event for item in receiver.received)
    assert events["request.created"] == 4
    assert events["request.breached"] == len(breaches)
    status = [item.body for item in receiver.received if item.event == "request.status"]
    operator = [body for body in status if body.get("by") == "operator"]
    assert len(operator) == 1
    assert operator[0]["old"] == "new" and operator[0]["new"] == "in_progress"
    assert operator[0]["request"]["number"] == "SD-000002"
    assert operator[0]["request"]["status"] == "in_progress"
    assert "note" not in operator[0]  # an operator's note stays inside
    created = next(item.body for item in receiver.received
                   if item.event == "request.created"
                   and item.body["request"]["number"] == "SD-000001")
    assert created["request"]["priority"] == "critical"
    assert created["request"]["status"] == "new"
    assert created["occurred_at"].endswith("Z")
    assert created["request"]["resolution_due"] is not None
    breach = next(item.body for item in receiver.received if item.event == "request.breached")
    assert breach["target"] in ("first_response", "resolution") and breach["due"]


def test_a_post_repeated_after_a_crash_keeps_its_delivery_id(
    tmp_path: Path, smtp_sink: SmtpSink, sqlite_url: str,
    stores: Callable[[str], Store],
) -> None:
    """A crash after the receiver's 2xx and before the mark: posted again, same id."""
    with WebhookReceiver(SECRET) as receiver:
        receiver.start()
        config = webhook_config(tmp_path, smtp_sink, sqlite_url, receiver.url)
        store = stores(sqlite_url)
        clock = Clock()
        daemon = Daemon(config, store, clock=clock)
        daemon.run_once()
        first = len(receiver.received)
        assert first == len(deliveries(store)) >= 4
        # As if the process died before marking row 1 (its claim lapsed since).
        with store.transaction() as session:
            session.execute(update(WebhookDelivery).where(WebhookDelivery.id == 1).values(
                state="pending", sent_at=None, claimed_by="dead",
                claimed_until=clock() - timedelta(seconds=1)))
        assert daemon.send_webhooks().sent == [1]
        assert len(receiver.received) == first + 1
        again = receiver.received[-1]
        assert [item.delivery for item in receiver.received].count(again.delivery) == 2


def test_a_live_claim_is_left_to_its_holder(
    tmp_path: Path, smtp_sink: SmtpSink, sqlite_url: str,
    stores: Callable[[str], Store],
) -> None:
    with WebhookReceiver(SECRET) as receiver:
        receiver.start()
        config = webhook_config(tmp_path, smtp_sink, sqlite_url, receiver.url)
        store = stores(sqlite_url)
        clock = Clock()
        daemon = Daemon(config, store, clock=clock)
        daemon.run_once(send=False)
        with store.transaction() as session:
            session.execute(update(WebhookDelivery).values(
                claimed_by="other", claimed_until=clock() + timedelta(minutes=5)))
        assert daemon.send_webhooks().sent == []
        assert receiver.received == []
        clock.advance(301)
        assert len(daemon.send_webhooks().sent) == len(deliveries(store))


def test_gone_fails_at_once_and_an_old_event_is_given_up(
    tmp_path: Path, smtp_sink: SmtpSink, sqlite_url: str,
    stores: Callable[[str], Store],
) -> None:
    with WebhookReceiver(SECRET) as receiver:
        receiver.start()
        receiver.refuse_with = 410
        config = webhook_config(tmp_path, smtp_sink, sqlite_url, receiver.url,
                                give_up_hours=1.0)
        store = stores(sqlite_url)
        clock = Clock()
        daemon = Daemon(config, store, clock=clock)
        daemon.run_once(send=False)
        report = daemon.send_webhooks()  # each event is refused on its own, at once
        assert report.failed == [row.id for row in deliveries(store)] and report.retried == []
        assert all("410" in (row.last_error or "") for row in deliveries(store))

        receiver.refuse_with = 500
        change_status(store, "SD-000001", "resolved", daemon.pipeline.calendar, clock())
        for _ in range(3):
            report = daemon.send_webhooks()
            assert len(report.retried) == 1
            clock.advance(61)
        latest = deliveries(store)[-1]
        assert latest.state == "pending" and latest.attempts == 3
        clock.advance(3600)
        assert daemon.send_webhooks().failed == [latest.id]
        latest = deliveries(store)[-1]
        assert latest.state == "failed"
        assert (latest.last_error or "").startswith("gave up after 4 attempts: HTTP 500")


def test_subscriptions_choose_the_events(
    tmp_path: Path, smtp_sink: SmtpSink, sqlite_url: str,
    stores: Callable[[str], Store],
) -> None:
    config = webhook_config(tmp_path, smtp_sink, sqlite_url, "http://127.0.0.1:9/x",
                            events=["request.status"])
    store = stores(sqlite_url)
    daemon = Daemon(config, store, clock=Clock())
    daemon.run_once(send=False)
    assert {row.event for row in deliveries(store)} <= {"request.status"}
    change_status(store, "SD-000001", "resolved", daemon.pipeline.calendar, Clock()())
    assert deliveries(store)[-1].event == "request.status"
    assert json.loads(deliveries(store)[-1].payload)["new"] == "resolved"


def test_no_webhooks_no_rows(
    tmp_path: Path, smtp_sink: SmtpSink, sqlite_url: str, stores: Callable[[str], Store]
) -> None:
    path = write_config(tmp_path / "config.toml", account=None, sink=smtp_sink,
                        database_url=sqlite_url, maildir=maildir_with_samples(tmp_path))
    store = stores(sqlite_url)
    daemon = Daemon(config_module.load(path, environ={}), store)
    report = daemon.run_once()
    assert len(report.drain.outcomes) == 6
    assert deliveries(store) == [] and report.webhooks.sent == []


def test_signature_is_hmac_over_timestamp_and_body() -> None:
    body = '{"event":"request.created","id":"x"}'
    expected = hmac.new(b"key", b"1700000000." + body.encode(), hashlib.sha256).hexdigest()
    assert signature("key", "1700000000", body) == f"sha256={expected}"


def test_a_status_changed_through_the_daemons_console_is_an_event(
    tmp_path: Path, smtp_sink: SmtpSink, sqlite_url: str, stores: Callable[[str], Store]
) -> None:
    """The console has a store (and engine) of its own: it must queue events too."""
    import httpx
    from support.services import free_port

    from mailroute.web.tokens import create_token

    config = webhook_config(tmp_path, smtp_sink, sqlite_url, "http://127.0.0.1:9/x")
    config.web.listen = f"127.0.0.1:{free_port()}"
    store = stores(sqlite_url)
    daemon = Daemon(config, store, clock=Clock())
    daemon.run_once(send=False)
    token = create_token(store, "tracker", "operator", Clock()())
    before = len(deliveries(store))
    console = daemon._start_console()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                answer = httpx.post(
                    f"http://{config.web.listen}/api/v1/requests/SD-000001/status",
                    json={"status": "in_progress"},
                    headers={"Authorization": f"Bearer {token}"}, timeout=5)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        console.stop()
        if daemon._console_store is not None:
            daemon._console_store.dispose()
    assert answer.status_code == 200, answer.text
    rows = deliveries(store)
    assert len(rows) == before + 1
    body = json.loads(rows[-1].payload)
    assert (body["event"], body["new"], body["by"]) == ("request.status", "in_progress",
                                                        "api:tracker")
