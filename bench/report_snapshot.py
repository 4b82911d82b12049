"""Period reports rendered from fixed data: proof that a refactor of the report changed nothing.

A change that only moves the report code must not change a single character of what a reader
sees. This builds a seeded set of requests (every type, priority, status and queue, pauses,
recorded breaches, organizations with markup and non-Latin names, requests with no clock
start), makes reports of several periods from it (a day, a week, two weeks, a month, a year
charted per week, a period not over yet, with and without targets, a short organization list)
and takes, for each, the text, JSON and HTML renderings and the report mail as a reader
decodes it (its headers' values and both parts' content; the mail's bytes are not compared,
only what it carries). It either writes that to a file or compares it with a file written
before the change:

    python bench/report_snapshot.py --out /tmp/report-before.txt      # on the old tree
    python bench/report_snapshot.py --compare /tmp/report-before.txt  # on the new tree

It prints the number of reports, a SHA-256 of the whole output, and with --compare the first
lines that differ; it exits 1 when anything differs.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any
from zoneinfo import ZoneInfo

import snapshots

from mailroute.core.business_calendar import BusinessCalendar
from mailroute.core.compose import Identity
from mailroute.core.report import (
    Breach,
    RequestFacts,
    StatusChange,
    compose_report,
    make_report,
    render_html,
    render_json,
    render_text,
)
from mailroute.core.sla import Targets

MSK = ZoneInfo("Europe/Moscow")
CALENDAR = BusinessCalendar()
SEED = 12
REQUESTS = 600
FIRST = datetime(2026, 1, 5, 9, 0, tzinfo=MSK)
TYPES = ("incident", "service_request", "change_request", "improvement")
PRIORITIES = ("critical", "normal", "low", "urgent")  # "urgent": one the report does not know
QUEUES = ("1c", "erp", "hr", None)
ORGANIZATIONS = (
    "ООО «Ромашка»", "АО «Вектор»", "<script>alert(1)</script>", "Smith & Sons \"Ltd\"",
    "ИП Иванов", "Example Ltd", None, "", "ЗАО «Очень длинное название организации, которое "
    "не помещается ни в одну колонку таблицы отчёта»", *(f"Org {n:02d}" for n in range(14)),
)
TARGETS = {
    "critical": Targets(timedelta(hours=1), timedelta(hours=8)),
    "normal": Targets(timedelta(hours=4), timedelta(hours=24)),
    "low": Targets(timedelta(hours=8), None),
}
IDENTITY = Identity("desk@example.com", "Служба поддержки")
MAIL_HEADERS = ("From", "To", "Subject", "Message-ID", "Auto-Submitted",
                "X-Auto-Response-Suppress", "X-Mailroute-Kind", "Content-Language")


def facts(rng: random.Random) -> list[RequestFacts]:
    """REQUESTS requests created over a year, each with a plausible history."""
    return [one_request(rng, number) for number in range(1, REQUESTS + 1)]


def one_request(rng: random.Random, number: int) -> RequestFacts:
    created = FIRST + timedelta(minutes=rng.randrange(0, 365 * 24 * 60))
    changes, status, clock_start = _history(rng, created)
    first_response = _maybe(rng, created, 0.8, 30)
    resolved = _maybe(rng, first_response, 0.6, 120) if first_response else None
    return RequestFacts(
        number=f"SD-{number:06d}",
        request_type=rng.choice(TYPES),
        priority=rng.choice(PRIORITIES),
        organization=rng.choice(ORGANIZATIONS),
        queue=rng.choice(QUEUES),
        status=status,
        created_at=created,
        clock_start=clock_start,
        first_response_at=first_response,
        resolved_at=resolved,
        first_response_due=_maybe(rng, created, 0.9, 3),
        resolution_due=_maybe(rng, created, 0.7, 20),
        breaches=_breaches(rng, created),
        status_changes=changes,
    )


def _history(
    rng: random.Random, created: datetime
) -> tuple[tuple[StatusChange, ...], str, datetime | None]:
    """Status changes oldest first, the status now, and when the SLA clock started."""
    status = rng.choice(("new", "new", "awaiting_customer"))
    clock_start = None if status == "awaiting_customer" else created
    changes = []
    moment = created
    for _ in range(rng.randrange(0, 5)):
        moment += timedelta(hours=rng.randrange(1, 96))
        new = rng.choice(("new", "awaiting_customer", "in_progress", "resolved", "closed"))
        if new == status:
            continue
        changes.append(StatusChange(moment, status, new))
        if clock_start is None:
            clock_start = moment
        status = new
    return tuple(changes), status, clock_start


def _maybe(rng: random.Random, after: datetime, chance: float, days: int) -> datetime | None:
    if rng.random() >= chance:
        return None
    return after + timedelta(minutes=rng.randrange(1, days * 24 * 60))


def _breaches(rng: random.Random, created: datetime) -> tuple[Breach, ...]:
    if rng.random() >= 0.15:
        return ()
    kind = rng.choice(("first_response", "resolution"))
    return (Breach(kind, created + timedelta(hours=rng.randrange(1, 200))),)


def periods() -> list[tuple[str, datetime, datetime, dict[str, Any]]]:
    """(name, start, end, options of make_report) of every report taken."""
    def day(month: int, number: int) -> datetime:
        return datetime(2026, month, number, tzinfo=MSK)

    return [
        ("day", day(3, 10), day(3, 11), {"targets": TARGETS}),
        ("week", day(11, 16), day(11, 23), {"targets": TARGETS}),
        ("week-no-targets", day(11, 16), day(11, 23), {}),
        ("two-weeks", day(11, 2), day(11, 16), {"targets": TARGETS}),
        ("holiday-week", day(12, 28), datetime(2027, 1, 11, tzinfo=MSK), {"targets": TARGETS}),
        ("month", day(6, 1), day(7, 1), {"targets": TARGETS, "top_organizations": 3,
                                          "oldest_open": 4}),
        ("year", day(1, 1), datetime(2027, 1, 1, tzinfo=MSK), {"targets": TARGETS}),
        ("so-far", day(11, 16), day(11, 23),
         {"targets": TARGETS, "now": datetime(2026, 11, 19, 14, 30, tzinfo=MSK)}),
        ("before-anything", datetime(2025, 3, 1, tzinfo=MSK), datetime(2025, 3, 8, tzinfo=MSK),
         {"targets": TARGETS}),
    ]


def snapshot() -> list[str]:
    """Every rendering of every period, each block headed by its name."""
    everything = facts(random.Random(SEED))
    blocks: list[str] = []
    for name, start, end, options in periods():
        report = make_report(everything, start, end, CALENDAR, **options)
        message_id = f"<report.{name}@example.com>"
        draft = compose_report(report, IDENTITY, "Boss <boss@example.com>", message_id)
        blocks += [
            f"=== {name} text", render_text(report),
            f"=== {name} json", render_json(report),
            f"=== {name} html", render_html(report),
            f"=== {name} mail", *mail_as_read(draft.raw),
            f"=== {name} draft {draft.kind} {draft.sender} {draft.recipient} "
            f"{draft.subject} {draft.message_id}",
        ]
    return blocks


def mail_as_read(raw: bytes) -> list[str]:
    """What a mail reader shows of the report mail: header values, then each part decoded."""
    message = message_from_bytes(raw, policy=default)
    assert isinstance(message, EmailMessage)
    lines = [f"{name}: {message[name]}" for name in MAIL_HEADERS]
    lines.append(f"type: {message.get_content_type()}")
    for part in message.iter_parts():
        assert isinstance(part, EmailMessage)
        lines.append(f"--- {part.get_content_type()} charset={part.get_content_charset()}")
        lines.append(part.get_content().replace("\r\n", "\n"))
    return lines


def main() -> int:
    return snapshots.run(__doc__.split("\n\n")[0], "report", snapshot,
                         count=lambda lines: len(periods()))


if __name__ == "__main__":
    raise SystemExit(main())
