"""Prometheus metrics (prometheus-client), served on a loopback port when configured.

Counters are fed from what the daemon already learns (drain and delivery
reports, breaches, failures), so the pure core stays free of instrumentation.
Queue lengths are read from the database when Prometheus scrapes, so they are
right even after a restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mailroute.mail.outbox import DeliveryReport
from mailroute.mail.webhooks import WebhookReport
from mailroute.pipeline.intake import DrainReport
from mailroute.store import Store, alerts, webhooks
from mailroute.store import repository as repo


class Metrics:
    """The daemon's metrics, in a registry of their own (tests can make several)."""

    def __init__(self, store: Store | None = None) -> None:
        self.registry = CollectorRegistry()
        self.letters = Counter("mailroute_letters", "Letters handled, by mailbox and outcome",
                               ["mailbox", "outcome"], registry=self.registry)
        self.requests = Counter("mailroute_requests_created",
                                "Requests created, by mailbox and type",
                                ["mailbox", "request_type"], registry=self.registry)
        self.replies = Counter("mailroute_replies", "Reply delivery attempts, by result",
                               ["result"], registry=self.registry)
        self.webhooks = Counter("mailroute_webhook_deliveries",
                                "Webhook delivery attempts, by result", ["result"],
                                registry=self.registry)
        self.errors = Counter("mailroute_errors", "Failures by part (intake = IMAP, smtp, ...)",
                              ["part"], registry=self.registry)
        self.rejections = Counter("mailroute_smtp_rejections",
                                  "Replies refused with 5xx, by fault: desk (relay policy, "
                                  "content) or recipient (suppressed)", ["fault"],
                                  registry=self.registry)
        self.letter_faults = Counter("mailroute_letter_faults",
                                     "Letters the server would not serve (fetch) or move (file)",
                                     ["mailbox", "action"], registry=self.registry)
        self.retention = Counter("mailroute_retention_purged",
                                 "Removed by retention: letters, blobs, replies, requests",
                                 ["what"], registry=self.registry)
        self.breaches = Counter("mailroute_sla_breaches", "SLA breaches reported, by target",
                                ["target"], registry=self.registry)
        self.poll_seconds = Histogram("mailroute_poll_seconds", "Duration of one mailbox pass",
                                      ["mailbox"], registry=self.registry,
                                      buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        if store is not None:
            self.registry.register(QueueCollector(store))
        self._server: Any = None

    def observe_drain(self, report: DrainReport, seconds: float, mailbox: str = "") -> None:
        """One pass over ``mailbox`` (its label: its name, else its address)."""
        self.poll_seconds.labels(mailbox).observe(seconds)
        for outcome in report.outcomes:
            self.letters.labels(mailbox, outcome.state).inc()
            if outcome.state == "processed" and outcome.request_type:
                self.requests.labels(mailbox, outcome.request_type).inc()
        for action, count in (("fetch", report.unserved), ("file", report.refused)):
            if count:
                self.letter_faults.labels(mailbox, action).inc(count)

    def observe_delivery(self, report: DeliveryReport) -> None:
        for result, items in (("sent", report.sent), ("retried", report.retried),
                              ("failed", report.failed)):
            if items:
                self.replies.labels(result).inc(len(items))
        if report.desk_rejections:
            self.rejections.labels("desk").inc(len(report.desk_rejections))
        if report.suppressed:
            self.rejections.labels("recipient").inc(len(report.suppressed))

    def observe_webhooks(self, report: WebhookReport) -> None:
        for result, items in (("sent", report.sent), ("retried", report.retried),
                              ("failed", report.failed)):
            if items:
                self.webhooks.labels(result).inc(len(items))

    def observe_breaches(self, breaches: Iterable[tuple[str, str]]) -> None:
        for _request, target in breaches:
            self.breaches.labels(target).inc()

    def observe_retention(self, purged: dict[str, int]) -> None:
        for what, count in purged.items():
            if count:
                self.retention.labels(what).inc(count)

    def observe_error(self, part: str) -> None:
        self.errors.labels(part).inc()

    def serve(self, listen: str) -> None:
        """Serve /metrics on HOST:PORT (keep it on loopback; there is no authentication)."""
        host, _, port = listen.rpartition(":")
        self._server = start_http_server(int(port), addr=host.strip("[]"),
                                         registry=self.registry)

    def close(self) -> None:
        if isinstance(self._server, tuple):
            server, thread = self._server
            server.shutdown()
            server.server_close()
            thread.join(5)
        self._server = None


class QueueCollector(Collector):
    """Queue lengths straight from the database at scrape time."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        try:
            with self.store.transaction() as session:
                outbox = repo.outbox_counts(session)
                pending = repo.pending_count(session)
                quarantined = repo.quarantined_count(session)
                found = alerts.all_alerts(session)
                faults = repo.letter_fault_counts(session)
                hooks = webhooks.counts(session)
        except Exception:  # a scrape must not fail because the database is away
            return
        gauge = GaugeMetricFamily("mailroute_outbox", "Outbox rows by state", labels=["state"])
        for state in ("pending", "sent", "failed"):
            gauge.add_metric([state], outbox.get(state, 0))
        yield gauge
        yield GaugeMetricFamily("mailroute_letters_pending", "Saved letters not yet decided",
                                value=pending)
        yield GaugeMetricFamily("mailroute_quarantined", "Letters in quarantine",
                                value=quarantined)
        caps = CounterMetricFamily("mailroute_reply_caps_hit",
                                   "Automatic replies held back by a cap", labels=["cap"])
        for cap in alerts.CAPS:
            hits = sum(a.hits for a in found if a.key == cap)
            caps.add_metric([cap.partition(":")[2]], hits)
        yield caps
        yield GaugeMetricFamily("mailroute_alerts_open", "Open alerts (the desk must act)",
                                value=sum(1 for a in found
                                          if a.key not in alerts.CAPS and a.cleared_at is None))
        aside = GaugeMetricFamily("mailroute_letters_set_aside",
                                  "Letters waiting for their own retry: the server would not "
                                  "serve (fetch) or move (file) them", labels=["action"])
        for action in ("fetch", "file"):
            aside.add_metric([action], faults.get(action, 0))
        yield aside
        queued = GaugeMetricFamily("mailroute_webhook_queue", "Webhook deliveries by state",
                                   labels=["state"])
        for state in ("pending", "sent", "failed"):
            queued.add_metric([state], hooks.get(state, 0))
        yield queued
