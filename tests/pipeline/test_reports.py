"""Reports from a real database (SQLite and PostgreSQL): facts, figures, the report mail.

Rows are inserted through the models, as the daemon would leave them: requests with
their status events and escalations; the report is then loaded, built and queued.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from mailroute.config import SlaConfig
from mailroute.core.business_calendar import BusinessCalendar
from mailroute.core.compose import Identity
from mailroute.core.report import Report
from mailroute.pipeline.reports import (
    build_report,
    load_facts,
    period_for_days,
    previous_period,
    queue_report_mail,
    sla_targets,
)
from mailroute.store import Store
from mailroute.store.models import Escalation, OutboxItem, Request, RequestEvent

MSK = ZoneInfo("Europe/Moscow")
CALENDAR = BusinessCalendar()
START = datetime(2026, 11, 16, tzinfo=MSK)  # Monday
END = datetime(2026, 11, 23, tzinfo=MSK)
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=MSK)
IDENTITY = Identity("servicedesk@example.com", "ServiceDesk")


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=MSK)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.upgrade()
    yield store
    store.dispose()


def add_request(session: Session, number: int, created: datetime, **fields: Any) -> Request:
    values: dict[str, Any] = {
        "number": f"SD-{number:06d}",
        "status": "new",
        "request_type": "incident",
        "priority": "normal",
        "queue": "1c",
        "organization": "ООО «Ромашка»",
        "requester": f"user{number}@customer.example",
        "language": "ru",
        "missing": [],
        "reasons": [],
        "created_at": created,
        "updated_at": created,
        "clarifications": 0,
    }
    values.update(fields)
    request = Request(**values)
    session.add(request)
    session.flush()
    return request


def add_status(session: Session, request: Request, when: datetime, old: str, new: str) -> None:
    detail = {"old": old, "new": new}
    session.add(RequestEvent(request_id=request.id, at=when, kind="status", detail=detail))


def add_breach(session: Session, request: Request, kind: str, due: datetime) -> None:
    session.add(Escalation(request_id=request.id, kind=kind, due=due, noticed_at=due))


def seed(store: Store) -> None:
    """A week of the desk, plus requests just outside it."""
    with store.transaction() as session:
        # Answered in 2 h, resolved in 6 h (Monday 10:00 -> Tuesday 08:00 closed -> 10:00).
        answered = add_request(
            session,
            1,
            at(16, 10),
            status="resolved",
            first_response_due=at(16, 14),
            first_response_at=at(16, 12),
            resolution_due=at(19, 10),
            resolved_at=at(17, 12),
        )
        add_status(session, answered, at(16, 12), "new", "in_progress")
        add_status(session, answered, at(17, 12), "in_progress", "resolved")
        # Created Friday waiting for details, complete Monday 11:00, answered at 12:00.
        clarified = add_request(
            session,
            2,
            at(13, 17),
            priority="critical",
            request_type="service_request",
            organization="<script>alert(1)</script>",
            status="in_progress",
            first_response_due=at(16, 12),
            first_response_at=at(16, 12),
        )
        add_status(session, clarified, at(16, 11), "awaiting_customer", "new")
        add_status(session, clarified, at(16, 12), "new", "in_progress")
        # Created last week, never answered; the escalation job noticed it on Monday.
        late = add_request(session, 3, at(13, 15), first_response_due=at(16, 11))
        add_breach(session, late, "first_response", at(16, 11))
        # Closed long before the period: not loaded at all.
        old = add_request(
            session,
            4,
            at(2, 10),
            status="closed",
            first_response_at=at(2, 11),
            resolved_at=at(2, 12),
            closed_at=at(3, 12),
        )
        add_status(session, old, at(2, 11), "new", "in_progress")
        add_status(session, old, at(3, 12), "in_progress", "closed")
        # Created after the period (before now): not in this report.
        add_request(session, 5, at(23, 8), request_type="change_request")
        # Created in the period, still waiting for details.
        add_request(session, 6, at(20, 16), status="awaiting_customer", priority="low")


def test_load_facts_reads_what_the_report_needs(store: Store) -> None:
    seed(store)
    facts = {f.number: f for f in load_facts(store, START, END, NOW)}

    assert sorted(facts) == ["SD-000001", "SD-000002", "SD-000003", "SD-000006"]
    assert facts["SD-000001"].clock_start == at(16, 10)
    assert facts["SD-000001"].resolved_at == at(17, 12)
    assert [c.new for c in facts["SD-000001"].status_changes] == ["in_progress", "resolved"]
    assert facts["SD-000002"].clock_start == at(16, 11)  # when the details were complete
    assert facts["SD-000003"].breaches[0].kind == "first_response"
    assert facts["SD-000003"].breaches[0].due == at(16, 11)
    assert facts["SD-000006"].clock_start is None
    assert facts["SD-000002"].organization == "<script>alert(1)</script>"


def test_build_report_figures(store: Store) -> None:
    seed(store)
    report = build_report(store, CALENDAR, START, END, NOW, targets=sla_targets(SlaConfig()))

    assert report.complete
    assert report.created == 2  # SD-000002 was created the Friday before
    assert dict(report.by_type) == {
        "incident": 2,
        "service_request": 0,
        "change_request": 0,
        "improvement": 0,
    }
    assert dict(report.by_priority) == {"critical": 0, "normal": 1, "low": 1}
    assert dict(report.by_status) == {
        "new": 0,
        "awaiting_customer": 1,
        "in_progress": 0,
        "resolved": 1,
        "closed": 0,
    }
    first = report.first_response
    assert first.overall.times.count == 2
    assert first.overall.times.median == pytest.approx(1.5)  # 2 h and 1 h
    assert first.overall.times.p90 == pytest.approx(2.0)
    assert (first.overall.met, first.overall.missed) == (2, 1)
    assert report.resolution.overall.times.median == pytest.approx(10.0)  # 8 h + 2 h
    assert report.resolution.by_priority[1].target == 24.0
    assert report.breach_count == 1
    assert report.breaches[0].number == "SD-000003"
    assert report.open_at_end == 3  # SD-000002, SD-000003, SD-000006
    assert [line.number for line in report.oldest_open] == ["SD-000003", "SD-000002", "SD-000006"]


def test_load_facts_takes_three_queries_whatever_the_number_of_requests(store: Store) -> None:
    with store.transaction() as session:
        for number in range(1, 41):
            request = add_request(session, number, at(16, 10) + timedelta(minutes=number))
            add_status(session, request, at(17, 10), "new", "in_progress")
            add_breach(session, request, "first_response", at(16, 18))
    selects: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        facts = load_facts(store, START, END, NOW)
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    assert len(facts) == 40
    assert all(len(f.status_changes) == 1 and len(f.breaches) == 1 for f in facts)
    assert len(selects) == 3


def test_queue_report_mail_queues_one_multipart_row_per_recipient(store: Store) -> None:
    seed(store)
    report = build_report(store, CALENDAR, START, END, NOW)
    recipients = ["boss@example.com", " ", "Team@Example.com", "team@example.com"]

    assert queue_report_mail(store, report, IDENTITY, recipients, NOW) == 2

    with store.transaction() as session:
        rows = session.scalars(select(OutboxItem).order_by(OutboxItem.id)).all()
    assert [row.recipient for row in rows] == ["boss@example.com", "Team@Example.com"]
    for row in rows:
        assert row.kind == "report"
        assert row.state == "pending"
        assert row.request_id is None
        assert row.not_before == NOW
        assert row.subject == "ServiceDesk report 2026-11-16 – 2026-11-22"
        check_report_message(row.raw, row.recipient, row.message_id)
    assert rows[0].message_id != rows[1].message_id


def check_report_message(raw: bytes, recipient: str, message_id: str) -> None:
    message = message_from_bytes(raw, policy=default)
    assert isinstance(message, EmailMessage)
    assert message.get_content_type() == "multipart/alternative"
    plain, page = message.iter_parts()
    assert plain.get_content_type() == "text/plain"
    assert page.get_content_type() == "text/html"
    assert plain.get_content_charset() == page.get_content_charset() == "utf-8"
    assert "SLA breaches" in plain.get_content()
    html = page.get_content()
    assert "<svg" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>" not in html
    assert message["Subject"] == "ServiceDesk report 2026-11-16 – 2026-11-22"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Mailroute-Kind"] == "report"
    assert message["To"] == recipient
    assert message["Message-ID"] == message_id
    assert message["From"].addresses[0].addr_spec == IDENTITY.address


def test_queue_report_mail_twice_queues_once(store: Store) -> None:
    report = build_report(store, CALENDAR, START, END, NOW)
    assert queue_report_mail(store, report, IDENTITY, ["boss@example.com"], NOW) == 1
    later = NOW + timedelta(minutes=5)
    assert queue_report_mail(store, report, IDENTITY, ["boss@example.com"], later) == 0
    with store.transaction() as session:
        assert len(session.scalars(select(OutboxItem)).all()) == 1


def test_a_report_so_far_can_be_queued_again_later(store: Store) -> None:
    early = build_report(store, CALENDAR, START, END, at(18, 12))
    later = build_report(store, CALENDAR, START, END, at(19, 12))
    assert queue_report_mail(store, early, IDENTITY, ["boss@example.com"], at(18, 12)) == 1
    assert queue_report_mail(store, later, IDENTITY, ["boss@example.com"], at(19, 12)) == 1


def test_queue_report_mail_refuses_a_header_injection(store: Store) -> None:
    report = build_report(store, CALENDAR, START, END, NOW)
    with pytest.raises(ValueError):
        queue_report_mail(store, report, IDENTITY, ["boss@example.com\r\nBcc: x@y"], NOW)
    with store.transaction() as session:
        assert session.scalars(select(OutboxItem)).all() == []


def test_an_empty_database_gives_an_empty_report(store: Store) -> None:
    report: Report = build_report(store, CALENDAR, START, END, NOW)
    assert report.created == 0
    assert report.first_response.overall.times.median is None
    assert queue_report_mail(store, report, IDENTITY, ["boss@example.com"], NOW) == 1


# --------------------------------------------------------------------------- periods


def local(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=MSK)


def test_previous_day_in_the_desk_zone() -> None:
    # 22:30 UTC on the 16th is 01:30 on the 17th in Moscow: yesterday is the 16th.
    now = datetime(2026, 11, 16, 22, 30, tzinfo=ZoneInfo("UTC"))
    assert previous_period(now, "daily", CALENDAR) == (local(2026, 11, 16), local(2026, 11, 17))
    start, _ = previous_period(now, "daily", CALENDAR)
    assert start.tzinfo == MSK


def test_previous_iso_week() -> None:
    wednesday = local(2026, 11, 25) + timedelta(hours=15)
    expected = (local(2026, 11, 16), local(2026, 11, 23))
    assert previous_period(wednesday, "weekly", CALENDAR) == expected
    monday_morning = local(2026, 11, 23) + timedelta(seconds=1)
    assert previous_period(monday_morning, "weekly", CALENDAR) == expected
    sunday_night = local(2026, 11, 22) + timedelta(hours=23, minutes=59)
    assert previous_period(sunday_night, "weekly", CALENDAR) == (
        local(2026, 11, 9),
        local(2026, 11, 16),
    )


def test_previous_week_across_new_year() -> None:
    now = local(2027, 1, 6) + timedelta(hours=9)
    start, end = previous_period(now, "weekly", CALENDAR)
    assert (start, end) == (local(2026, 12, 28), local(2027, 1, 4))
    assert start.isocalendar()[:2] == (2026, 53)


def test_previous_month() -> None:
    assert previous_period(local(2026, 12, 1), "monthly", CALENDAR) == (
        local(2026, 11, 1),
        local(2026, 12, 1),
    )
    assert previous_period(local(2027, 1, 15), "monthly", CALENDAR) == (
        local(2026, 12, 1),
        local(2027, 1, 1),
    )
    leap = previous_period(local(2024, 3, 10), "monthly", CALENDAR)
    assert leap[1] - leap[0] == timedelta(days=29)
    # 1 March 00:30 in Moscow is still 28 February in UTC: the month is February's.
    now = datetime(2026, 2, 28, 21, 30, tzinfo=ZoneInfo("UTC"))
    assert previous_period(now, "monthly", CALENDAR) == (local(2026, 2, 1), local(2026, 3, 1))


def test_unknown_schedule() -> None:
    with pytest.raises(ValueError):
        previous_period(NOW, "hourly", CALENDAR)  # type: ignore[arg-type]


def test_period_for_days_includes_both_days() -> None:
    assert period_for_days(date(2026, 11, 16), date(2026, 11, 22), CALENDAR) == (START, END)
    with pytest.raises(ValueError):
        period_for_days(date(2026, 11, 22), date(2026, 11, 16), CALENDAR)


def test_the_report_compares_with_the_previous_week_and_groups_by_tier(store: Store) -> None:
    with store.transaction() as session:
        # The week before: answered late, a gold customer's.
        add_request(
            session,
            10,
            at(10, 10),
            tier="gold",
            first_response_due=at(10, 12),
            first_response_at=at(10, 15),
            status="in_progress",
        )
        # The week before, answered in an hour and closed then: loaded for the comparison.
        add_request(
            session,
            13,
            at(12, 10),
            first_response_due=at(12, 12),
            first_response_at=at(12, 11),
            resolved_at=at(12, 12),
            closed_at=at(12, 12),
            status="closed",
        )
        # The week before and never answered: still awaiting, a breach in progress now.
        add_request(session, 11, at(11, 10), first_response_due=at(11, 12))
        add_request(
            session,
            12,
            at(17, 10),
            tier="gold",
            first_response_due=at(17, 14),
            first_response_at=at(17, 11),
            status="in_progress",
        )
    result = build_report(store, CALENDAR, START, END, NOW)
    assert (result.previous.first_day, result.previous.last_day) == (
        date(2026, 11, 9),
        date(2026, 11, 15),
    )
    assert (result.previous.created, result.previous.breaches) == (3, 2)
    assert result.previous.first_response_median == pytest.approx(3.0)  # 5 h and 1 h
    assert result.open_at_start == 2
    assert (result.awaiting_first_response, result.overdue_first_response) == (1, 1)
    assert result.breach_count == 0  # decided the week before
    tiers = {row.name: row for row in result.tiers}
    assert (tiers["gold"].created, tiers["gold"].first_response.met) == (1, 1)
