"""The period report, pure: facts built by hand, figures in business hours, the renderers.

The calendar is the default desk's: Moscow, 10:00-18:00 on working days of the Russian
production calendar. In November 2026 Tuesday the 3rd is a shortened pre-holiday day
(closes at 17:00) and Wednesday the 4th (National Unity Day) is a holiday.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_compose import check_wire_format, rfc2047_mailboxes

from mailroute.core.business_calendar import BusinessCalendar
from mailroute.core.compose import Identity
from mailroute.core.report import (
    Breach,
    Report,
    RequestFacts,
    StatusChange,
    clock_hours,
    clock_start_from,
    compose_report,
    make_report,
    median,
    outcome,
    percentile,
    render_html,
    render_json,
    render_text,
    report_subject,
    status_at,
)
from mailroute.core.sla import Targets

MSK = ZoneInfo("Europe/Moscow")
CALENDAR = BusinessCalendar()
START = datetime(2026, 11, 2, tzinfo=MSK)  # Monday
END = datetime(2026, 11, 16, tzinfo=MSK)  # two full weeks
WEEK_END = datetime(2026, 11, 9, tzinfo=MSK)
TARGETS = {
    "critical": Targets(timedelta(hours=1), timedelta(hours=8)),
    "normal": Targets(timedelta(hours=4), timedelta(hours=24)),
    "low": Targets(timedelta(hours=8), None),
}


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=MSK)


def request(number: int, created: datetime, **fields: Any) -> RequestFacts:
    values: dict[str, Any] = {
        "number": f"SD-{number:06d}",
        "request_type": "incident",
        "priority": "normal",
        "organization": "ООО «Ромашка»",
        "queue": "1c",
        "status": "new",
        "created_at": created,
        "clock_start": created,
    }
    values.update(fields)
    return RequestFacts(**values)


def report(facts: list[RequestFacts], **options: Any) -> Report:
    options.setdefault("targets", TARGETS)
    return make_report(facts, START, END, CALENDAR, **options)


# --------------------------------------------------------------------------- times


def test_response_times_are_business_hours_across_a_weekend_and_a_holiday() -> None:
    facts = [
        # Friday 16:00 -> Monday 11:00: 2 h on Friday, 1 h on Monday.
        request(1, at(6, 16), first_response_at=at(9, 11), status="in_progress"),
        # Tuesday 16:00 (short day, closes 17:00) -> Thursday 13:30 over the holiday: 1 + 3.5.
        request(2, at(3, 16), first_response_at=at(5, 13, 30), status="in_progress"),
        # Monday 10:00 -> 10:30.
        request(3, at(2, 10), first_response_at=at(2, 10, 30), priority="critical"),
        # Monday 17:00 -> Tuesday 10:00: one hour.
        request(4, at(9, 17), first_response_at=at(10, 10), status="in_progress"),
    ]
    figures = report(facts).first_response

    assert figures.overall.times.count == 4
    assert figures.overall.times.median == pytest.approx(2.0)  # (1 + 3) / 2
    assert figures.overall.times.p90 == pytest.approx(4.5)  # nearest rank: 4th of 4
    rows = {row.priority: row for row in figures.by_priority}
    assert [row.priority for row in figures.by_priority] == ["critical", "normal", "low"]
    assert rows["critical"].times.median == pytest.approx(0.5)
    assert rows["normal"].times.median == pytest.approx(3.0)
    assert rows["normal"].times.p90 == pytest.approx(4.5)
    assert rows["low"].times.count == 0
    assert rows["low"].times.median is None
    assert rows["normal"].target == 4.0
    assert rows["low"].target == 8.0


def test_resolution_time_counts_from_the_clock_start_not_from_creation() -> None:
    # Created Friday 11:00 waiting for details; complete Monday 10:00; resolved Monday 15:00.
    changes = (StatusChange(at(9, 10), "awaiting_customer", "new"),)
    facts = request(
        1,
        at(6, 11),
        clock_start=at(9, 10),
        status="resolved",
        first_response_at=at(9, 12),
        resolved_at=at(9, 15),
        status_changes=(*changes, StatusChange(at(9, 15), "new", "resolved")),
    )
    figures = report([facts])
    assert figures.first_response.overall.times.median == pytest.approx(2.0)
    assert figures.resolution.overall.times.median == pytest.approx(5.0)
    assert figures.resolution.by_priority[1].target == 24.0


def test_time_waiting_for_the_customer_is_left_out() -> None:
    changes = (
        StatusChange(at(2, 11), "new", "awaiting_customer"),
        StatusChange(at(3, 12), "awaiting_customer", "new"),  # 7 h + 2 h paused
    )
    facts = request(1, at(2, 10), first_response_at=at(3, 13), status_changes=changes)
    assert clock_hours(facts, at(3, 13), CALENDAR) == pytest.approx(11 - 9)
    assert report([facts]).first_response.overall.times.median == pytest.approx(2.0)


def test_only_responses_given_in_the_period_are_timed() -> None:
    facts = [
        request(1, at(30, 17, month=10), first_response_at=at(2, 11)),  # created before
        request(2, at(13, 17), first_response_at=at(16, 11)),  # answered after the period
        request(3, at(5, 10), clock_start=None, status="awaiting_customer"),  # clock not started
    ]
    times = report(facts).first_response.overall.times
    assert times.count == 1
    assert times.median == pytest.approx(2.0)  # Fri 17:00 -> Mon 11:00 is 1 + 1


def test_clock_start_from_the_status_history() -> None:
    complete = at(2, 10)
    assert clock_start_from(complete, "new", []) == complete
    assert clock_start_from(complete, "awaiting_customer", []) is None
    supplied = [StatusChange(at(3, 12), "awaiting_customer", "new")]
    assert clock_start_from(complete, "awaiting_customer", supplied) == at(3, 12)


def test_median_and_nearest_rank_percentile() -> None:
    assert median([]) is None
    assert median([5.0]) == 5.0
    assert median([1.0, 9.0, 2.0]) == 2.0
    assert median([1.0, 2.0, 3.0, 10.0]) == 2.5
    assert percentile([], 90) is None
    assert percentile([7.0], 90) == 7.0
    assert percentile([float(i) for i in range(1, 11)], 90) == 9.0
    assert percentile([float(i) for i in range(1, 21)], 90) == 18.0
    assert percentile([float(i) for i in range(1, 12)], 90) == 10.0  # ceil(9.9) = 10th
    assert percentile([3.0, 1.0, 2.0], 100) == 3.0
    with pytest.raises(ValueError):
        percentile([1.0], 0)


@given(st.lists(st.floats(0, 1000, allow_nan=False), min_size=1), st.integers(1, 100))
def test_percentile_is_an_observed_value_with_p_percent_at_or_below(
    values: list[float], p: int
) -> None:
    result = percentile(values, p)
    assert result in values
    at_or_below = sum(1 for value in values if value <= result)
    below = sum(1 for value in values if value < result)
    assert at_or_below >= p / 100 * len(values)
    assert below < p / 100 * len(values)


# --------------------------------------------------------------------------- counts


def test_counts_of_requests_created_in_the_period() -> None:
    facts = [
        request(1, at(2, 11), request_type="incident", priority="critical", queue="1c"),
        request(2, at(3, 11), request_type="service_request", queue="network"),
        request(3, at(5, 11), request_type="service_request", queue=None, status="closed"),
        request(4, at(13, 23), request_type="change_request", organization=None),
        request(5, at(1, 23), request_type="incident"),  # Sunday before the period
        request(6, at(16, 0), request_type="incident"),  # the first moment after it
    ]
    result = report(facts)
    assert result.created == 4
    assert dict(result.by_type) == {
        "incident": 1,
        "service_request": 2,
        "change_request": 1,
        "improvement": 0,
    }
    assert dict(result.by_priority) == {"critical": 1, "normal": 3, "low": 0}
    assert result.by_queue == (("1c", 2), (None, 1), ("network", 1))
    assert dict(result.by_status) == {
        "new": 3,
        "awaiting_customer": 0,
        "in_progress": 0,
        "resolved": 0,
        "closed": 1,
    }
    assert len(result.daily) == 14
    assert result.daily[0].day == date(2026, 11, 2)
    assert result.daily[-1].day == date(2026, 11, 15)
    assert [d.count for d in result.daily[:5]] == [1, 1, 0, 1, 0]
    assert [d.working for d in result.daily[:7]] == [True, True, False, True, True, False, False]


def test_requests_by_mailbox_only_when_several_were_used() -> None:
    one = report([request(1, at(2, 11), mailbox="desk"), request(2, at(3, 11), mailbox="desk")])
    assert one.by_mailbox == ()
    assert "by mailbox" not in render_text(one)
    several = report([request(1, at(2, 11), mailbox="desk"), request(2, at(3, 11), mailbox="mail"),
                      request(3, at(4, 11), mailbox="mail")])
    assert several.by_mailbox == (("mail", 2), ("desk", 1))
    text = render_text(several)
    assert "Created by mailbox" in text and "mail" in text.split("Created by mailbox")[1]
    assert json.loads(render_json(several))["created"]["by_mailbox"] == [
        {"name": "mail", "count": 2}, {"name": "desk", "count": 1}]
    assert "By mailbox" in render_html(several)


def test_top_organizations_and_the_rest_as_other() -> None:
    names = ["Alpha", "Alpha", "Alpha", "Beta", "Beta", "Gamma", "Delta", None]
    facts = [request(i, at(2, 11), organization=name) for i, name in enumerate(names)]
    result = report(facts, top_organizations=2)
    assert result.by_organization == (("Alpha", 3), ("Beta", 2))
    assert result.other_organizations == 3


def test_open_at_the_end_of_the_period_from_the_status_history() -> None:
    facts = [
        # Created before, resolved only after the period: open at its end.
        request(
            1,
            at(28, 12, month=10),
            status="resolved",
            resolved_at=at(17, 12),
            status_changes=(StatusChange(at(17, 12), "new", "resolved"),),
        ),
        # Resolved inside the period.
        request(
            2,
            at(3, 12),
            status="resolved",
            resolved_at=at(5, 12),
            status_changes=(StatusChange(at(5, 12), "new", "resolved"),),
        ),
        # Waiting for the customer at the end: open too.
        request(3, at(13, 12), status="awaiting_customer", clock_start=None),
        request(4, at(16, 12)),  # created after the period
    ]
    result = report(facts)
    assert result.open_at_end == 2
    assert [line.number for line in result.oldest_open] == ["SD-000001", "SD-000003"]
    assert result.oldest_open[0].status == "new"
    assert dict(result.open_by_priority)["normal"] == 2
    assert status_at(facts[0], END) == "new"
    assert status_at(facts[0], at(18, 0)) == "resolved"
    assert status_at(facts[3], END) is None


# --------------------------------------------------------------------------- SLA


def test_breaches_and_the_share_of_targets_met() -> None:
    due = at(2, 14)
    facts = [
        request(1, at(2, 10), first_response_due=due, first_response_at=at(2, 12)),  # met
        # Late without an escalation row (the job had not run yet): missed all the same.
        request(2, at(2, 10), first_response_due=due, first_response_at=at(2, 15)),
        # Recorded escalation.
        request(
            3,
            at(3, 10),
            first_response_due=at(3, 14),
            first_response_at=at(5, 11),
            breaches=(Breach("first_response", at(3, 14)),),
        ),
        request(4, at(5, 10), first_response_due=at(5, 14)),  # never answered, past due
        request(5, at(13, 16), first_response_due=at(16, 12)),  # due after the period
        # Due passed while waiting for the customer: the pause moves it, no breach.
        request(
            6,
            at(5, 10),
            first_response_due=at(5, 11),
            status="awaiting_customer",
            status_changes=(StatusChange(at(5, 10, 30), "new", "awaiting_customer"),),
        ),
        request(7, at(5, 10), priority="low"),  # no target at all
        # Breached in the previous period: not this period's breach.
        request(
            8,
            at(29, 10, month=10),
            first_response_due=at(30, 10, month=10),
            breaches=(Breach("first_response", at(30, 10, month=10)),),
        ),
        # Critical, resolution missed by a recorded escalation.
        request(
            9,
            at(9, 10),
            priority="critical",
            first_response_due=at(9, 11),
            first_response_at=at(9, 10, 30),
            resolution_due=at(9, 18),
            resolved_at=at(10, 12),
            status="resolved",
            breaches=(Breach("resolution", at(9, 18)),),
        ),
    ]
    result = report(facts)
    first = result.first_response
    assert (first.overall.met, first.overall.missed) == (2, 3)
    assert first.overall.share_met == pytest.approx(0.4)
    rows = {row.priority: row for row in first.by_priority}
    assert (rows["normal"].met, rows["normal"].missed) == (1, 3)
    assert (rows["critical"].met, rows["critical"].missed) == (1, 0)
    assert rows["low"].share_met is None
    resolution = result.resolution
    assert (resolution.overall.met, resolution.overall.missed) == (0, 1)
    assert result.breach_count == 4
    assert [(line.number, line.kind) for line in result.breaches] == [
        ("SD-000002", "first_response"),
        ("SD-000003", "first_response"),
        ("SD-000004", "first_response"),
        ("SD-000009", "resolution"),
    ]
    assert result.breaches[0].late == pytest.approx(1.0)
    assert result.breaches[-1].late == pytest.approx(2.0)  # Mon 18:00 -> Tue 12:00


def test_a_target_is_decided_once_at_its_earliest_breach() -> None:
    facts = request(
        1,
        at(2, 10),
        first_response_due=at(6, 10),  # moved by a pause after the first breach
        first_response_at=at(5, 10),
        breaches=(Breach("first_response", at(3, 10)),),
    )
    assert outcome(facts, "first_response", END) == ("missed", at(3, 10))
    on_time = request(2, at(2, 10), first_response_due=at(3, 10), first_response_at=at(2, 11))
    assert outcome(on_time, "first_response", END) == ("met", at(2, 11))
    assert outcome(on_time, "resolution", END) is None


def test_an_unfinished_period_is_reported_so_far() -> None:
    facts = [request(1, at(2, 10), first_response_due=at(5, 12))]
    now = at(5, 11)
    result = report(facts, now=now)
    assert not result.complete
    assert result.as_of == now
    assert result.first_response.overall.missed == 0  # not due yet at now
    assert "so far" in report_subject(result)
    assert report(facts).first_response.overall.missed == 1


# --------------------------------------------------------------------------- empty


def test_an_empty_period_renders_without_figures() -> None:
    result = report([])
    assert result.created == 0
    assert result.first_response.overall.times.median is None
    assert result.first_response.overall.times.p90 is None
    assert result.first_response.overall.share_met is None
    assert result.breach_count == 0
    assert result.open_at_end == 0
    assert [d.count for d in result.daily] == [0] * 14
    assert "Created" in render_text(result)
    data = json.loads(render_json(result))
    assert data["first_response"]["all"]["median_hours"] is None
    assert data["first_response"]["all"]["met_share"] is None
    assert "<svg" in render_html(result)


def test_a_period_must_have_a_length() -> None:
    with pytest.raises(ValueError):
        make_report([], END, START, CALENDAR)


# --------------------------------------------------------------------------- renderers


HOSTILE = "<script>alert('x')</script> & \"Co\""


def sample() -> Report:
    facts = [
        request(
            1,
            at(2, 10),
            organization=HOSTILE,
            first_response_due=at(2, 14),
            first_response_at=at(2, 12),
            resolution_due=at(5, 18),
            resolved_at=at(3, 15, 20),
            status="resolved",
        ),
        request(2, at(3, 11), first_response_due=at(3, 15), priority="critical"),
        request(3, at(6, 16), request_type="<img src=x onerror=alert(1)>", queue="<b>q</b>"),
        request(4, at(9, 10), first_response_at=at(9, 10, 20), first_response_due=at(9, 14)),
    ]
    return report(facts)


def test_html_is_self_contained_escapes_everything_and_draws_svg() -> None:
    page = render_html(sample())
    assert page.startswith("<!DOCTYPE html>")
    assert "<svg" in page
    assert "<script" not in page.lower()
    assert "<img" not in page
    assert "<b>q</b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;Co&quot;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched
    assert "<link" not in page
    assert "Requests created" in page
    assert "SLA breaches" in page


def test_html_tags_are_balanced() -> None:
    page = render_html(sample())
    for tag in ("svg", "table", "tr", "td", "text", "div", "h2"):
        opened = len(re.findall(rf"<{tag}[\s>]", page))
        assert opened == page.count(f"</{tag}>"), tag


def test_json_round_trips_with_iso_dates_and_rounded_hours() -> None:
    result = sample()
    data = json.loads(render_json(result))
    assert render_json(result) == render_json(result)
    assert list(data) == sorted(data)
    assert data["period"]["first_day"] == "2026-11-02"
    assert data["period"]["last_day"] == "2026-11-15"
    assert datetime.fromisoformat(data["period"]["start"]) == START
    assert datetime.fromisoformat(data["period"]["end"]) == END
    assert data["created"]["total"] == 4
    assert {"name": HOSTILE, "count": 1} in data["created"]["by_organization"]
    resolution = data["resolution"]["all"]
    assert resolution["median_hours"] == 13.33  # Mon 10:00 -> Tue 15:20 is 8 h + 5 h 20
    assert data["first_response"]["all"]["met_share"] == pytest.approx(2 / 3, abs=1e-4)
    assert date.fromisoformat(data["created"]["daily"][2]["date"]) == date(2026, 11, 4)
    assert data["created"]["daily"][2]["working_day"] is False
    breach = data["breaches"]["requests"][0]
    assert breach["number"] == "SD-000002"
    assert datetime.fromisoformat(breach["due"]) == at(3, 15)


def test_text_has_the_headline_numbers_aligned() -> None:
    text = render_text(sample())
    assert text.startswith("ServiceDesk report 2026-11-02 – 2026-11-15 (Europe/Moscow)")
    assert re.search(r"^Created\s+4$", text, re.M)
    assert re.search(r"^SLA breaches\s+1$", text, re.M)
    assert "median 1.2 h, 90th percentile 2.0 h (2 requests)" in text  # 2 h and 20 min
    assert re.search(r"^First response SLA\s+67% met \(2 of 3\)$", text, re.M)
    table = [line for line in text.splitlines() if line.startswith("  all ")]
    assert len(table) == 2
    header = next(line for line in text.splitlines() if line.strip().startswith("priority"))
    assert len(header) == len(table[0])


def test_report_mail_is_multipart_alternative_and_machine_marked() -> None:
    result = sample()
    draft = compose_report(
        result, Identity("desk@example.com", "Service\r\nDesk"), "boss@example.com", "<r@x>"
    )
    message = message_from_bytes(draft.raw, policy=default)
    assert isinstance(message, EmailMessage)
    assert message.get_content_type() == "multipart/alternative"
    plain, page = message.iter_parts()
    assert plain.get_content_type() == "text/plain"
    assert page.get_content_type() == "text/html"
    assert "Created" in plain.get_content()
    assert "<svg" in page.get_content()
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Mailroute-Kind"] == "report"
    assert message["Subject"] == "ServiceDesk report 2026-11-02 – 2026-11-15"
    assert draft.subject == message["Subject"]
    assert draft.kind == "report"
    assert "\n" not in str(message["From"])


def test_report_mail_is_written_by_the_reply_writer() -> None:
    """The report mail's bytes come from compose's one writer: folded and encoded like a
    reply, the desk's name inert, Content-Language kept (EmailMessage's set_content()
    dropped it), and the same report gives the same bytes (no random boundary)."""
    identity = Identity("desk@example.com", "=?utf-8?q?=0D=0ABcc:_x@y?= Служба поддержки")
    draft = compose_report(sample(), identity, "boss@example.com", "<r@x>")
    check_wire_format(draft.raw)
    message = message_from_bytes(draft.raw, policy=default)
    assert rfc2047_mailboxes(draft.raw, "From") == [
        ("= ?utf-8?q?=0D=0ABcc:_x@y?= Служба поддержки", "desk@example.com")
    ]
    assert message["Content-Language"] == "en"
    assert message["X-Auto-Response-Suppress"] == "All"
    assert message["MIME-Version"] == "1.0"
    plain, page = message.iter_parts()
    assert plain.get_content().replace("\r\n", "\n") == render_text(sample())
    assert page.get_content().replace("\r\n", "\n") == render_html(sample())
    assert compose_report(sample(), identity, "boss@example.com", "<r@x>") == draft


def test_subject_of_a_single_day() -> None:
    day = make_report([], START, START + timedelta(days=1), CALENDAR)
    assert report_subject(day) == "ServiceDesk report 2026-11-02"


def test_a_long_period_is_charted_per_week() -> None:
    year = make_report(
        [request(1, at(2, 10)), request(2, at(3, 10))],
        datetime(2026, 1, 1, tzinfo=MSK),
        datetime(2027, 1, 1, tzinfo=MSK),
        CALENDAR,
    )
    assert len(year.daily) == 365
    page = render_html(year)
    assert "Created per week" in page
    assert page.count("<rect") < 200
    assert "Created per day" in render_html(report([]))


# --------------------------------------------------------------------------- the truth


def test_awaiting_a_first_response_and_breaches_still_in_progress() -> None:
    facts = [
        # Adopted backlog: breached in October, never answered, still new: in progress now.
        request(
            1,
            at(28, 12, month=10),
            first_response_due=at(28, 16, month=10),
            breaches=(Breach("first_response", at(28, 16, month=10)),),
        ),
        request(2, at(3, 10), first_response_at=at(3, 11), status="in_progress"),  # answered
        request(3, at(5, 10), status="awaiting_customer", clock_start=None),  # customer owes
        request(4, at(13, 17), first_response_due=at(16, 12), status="in_progress"),  # not due
        # Answered, resolution overdue and still open.
        request(
            5,
            at(9, 10),
            first_response_at=at(9, 11),
            resolution_due=at(10, 10),
            status="in_progress",
        ),
        # Answered only after the period: awaiting at its end, and late.
        request(6, at(12, 10), first_response_due=at(12, 14), first_response_at=at(17, 10)),
    ]
    result = report(facts)
    assert result.awaiting_first_response == 3  # 1, 4 and 6
    assert result.overdue_first_response == 2  # 1 and 6
    assert result.overdue_resolution == 1  # 5
    assert result.breaches_in_progress == 3
    assert result.breach_count == 2  # 5 and 6 were decided in the period; 1 in October


def test_sla_per_organization_and_per_tier() -> None:
    facts = [
        request(
            1,
            at(2, 10),
            organization="Alpha",
            tier="gold",
            first_response_due=at(2, 12),
            first_response_at=at(2, 11),
        ),
        request(
            2,
            at(2, 10),
            organization="Alpha",
            tier="gold",
            first_response_due=at(2, 12),
            first_response_at=at(2, 13),
        ),
        request(
            3,
            at(3, 10),
            organization="Beta",
            tier=None,
            first_response_due=at(3, 12),
            first_response_at=at(3, 14),
            resolution_due=at(5, 12),
            resolved_at=at(5, 11),
            status="resolved",
        ),
    ]
    result = report(facts)
    alpha, beta = result.organizations
    assert (alpha.name, alpha.created, alpha.breaches) == ("Alpha", 2, 1)
    assert (alpha.first_response.met, alpha.first_response.missed) == (1, 1)
    assert alpha.first_response.times.median == pytest.approx(2.0)  # (1 + 3) / 2
    assert (beta.resolution.met, beta.resolution.missed) == (1, 0)
    assert beta.resolution.times.median == pytest.approx(
        8.0
    )  # Tue 10-17 (short day), Wed holiday, Thu 10-11
    tiers = {row.name: row for row in result.tiers}
    assert set(tiers) == {"gold", None}
    assert (tiers["gold"].first_response.met, tiers["gold"].first_response.missed) == (1, 1)
    assert tiers[None].first_response.missed == 1


def test_ties_among_organizations_go_to_breaches_then_critical_then_volume_then_name() -> None:
    facts = [
        *(request(i, at(2, 11), organization="Many") for i in range(1, 4)),
        request(4, at(2, 11), organization="Critical", priority="critical"),
        request(5, at(2, 11), organization="Breached", first_response_due=at(2, 12)),
        request(6, at(2, 11), organization="Zeta"),
        request(7, at(2, 11), organization="Eta"),
    ]
    result = report(facts, top_organizations=4)
    assert [name for name, _ in result.by_organization] == ["Breached", "Critical", "Many", "Eta"]
    assert [row.name for row in result.organizations] == ["Breached", "Critical", "Many", "Eta"]
    assert result.other_organizations == 1


def test_the_change_against_the_previous_period_of_the_same_length() -> None:
    facts = [
        # The week before (2-8 Nov): two requests, one breach, first responses 1 h and 3 h.
        request(1, at(2, 10), first_response_due=at(2, 12), first_response_at=at(2, 11)),
        request(2, at(3, 10), first_response_due=at(3, 12), first_response_at=at(3, 13)),
        # This week (9-15 Nov): one request answered in half an hour.
        request(3, at(9, 10), first_response_due=at(9, 12), first_response_at=at(9, 10, 30)),
    ]
    result = make_report(facts, WEEK_END, END, CALENDAR)
    previous = result.previous
    assert (previous.first_day, previous.last_day) == (date(2026, 11, 2), date(2026, 11, 8))
    assert (previous.created, previous.breaches) == (2, 1)
    assert previous.first_response_median == pytest.approx(2.0)
    assert previous.open_at_end == 2
    assert (result.summary.created, result.summary.breaches) == (1, 0)
    assert result.summary.first_response_median == pytest.approx(0.5)


def test_open_requests_at_the_start_at_the_end_and_per_day() -> None:
    facts = [
        request(1, at(30, 12, month=10)),  # open throughout
        request(
            2,
            at(28, 12, month=10),
            status="resolved",
            status_changes=(StatusChange(at(4, 12), "new", "resolved"),),
        ),
        request(
            3,
            at(5, 12),
            status="in_progress",
            status_changes=(
                StatusChange(at(6, 12), "new", "resolved"),
                StatusChange(at(9, 12), "resolved", "in_progress"),  # reopened
            ),
        ),
    ]
    result = report(facts)
    assert result.open_at_start == 2
    assert result.open_at_end == 2
    assert [d.open for d in result.daily[:9]] == [2, 2, 1, 2, 1, 1, 1, 2, 2]
    moments = [
        datetime.combine(d.day + timedelta(days=1), datetime.min.time(), MSK) for d in result.daily
    ]
    brute = [sum(1 for f in facts if status_at(f, m) in ("new", "in_progress")) for m in moments]
    assert [d.open for d in result.daily] == brute
    so_far = report(facts, now=at(5, 15))
    assert [d.open for d in so_far.daily[:5]] == [2, 2, 1, 2, None]


def test_text_json_and_html_show_the_new_figures_alike() -> None:
    result = sample()
    text, data, page = render_text(result), json.loads(render_json(result)), render_html(result)
    assert re.search(r"^Awaiting first response\s+2 \(1 overdue\)$", text, re.M)
    assert re.search(r"^Breaches in progress\s+1 \(overdue, still open\)$", text, re.M)
    assert "Against the previous period (2026-10-19 – 2026-11-01)" in text
    assert re.search(r"^  Created\s+4\s+0\s+\+4$", text, re.M)
    assert "SLA by organization" in text and "SLA by tier" in text
    assert re.search(r"^  2026-11-06\s+1\s+2$", text, re.M)  # created 1, open 2 at its end
    assert data["awaiting_first_response"] == {"total": 2, "overdue": 1, "resolution_overdue": 0}
    assert data["breaches"]["in_progress"] == 1
    assert data["previous_period"]["first_day"] == "2026-10-19"
    assert data["previous_period"]["created"] == 0
    assert data["open_at_start"] == 0
    assert data["created"]["daily"][4]["open_at_end_of_day"] == 2
    assert [row["name"] for row in data["organizations"]] == ["ООО «Ромашка»", HOSTILE]
    assert data["organizations"][0]["breaches"] == 1
    assert data["tiers"][0]["first_response"]["missed"] == 1
    assert "Awaiting first response" in page and "Breaches in progress" in page
    assert "SLA by organization" in page and "SLA by tier" in page
    assert "Against the previous period" in page
    assert "<polyline" in page
    assert page.count("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;") >= 2  # both tables
