"""A request as a conversation, against Dovecot and aiosmtpd, with the clock passed in.

Clarification loop, hijack attempt, business-hours window, clarification cap,
replies to closed requests, and escalation of SLA breaches.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from support.configs import sample_letters
from support.dovecot import ImapAccount
from support.smtp import ReceivedMail, SmtpSink

from mailroute.config import Config
from mailroute.ops.health import check_health
from mailroute.ops.tickets import change_status
from mailroute.pipeline.escalations import escalate_breaches
from mailroute.service.daemon import Daemon
from mailroute.store import Store
from mailroute.store import repository as repo
from mailroute.store.models import Escalation, Letter, Request

MSK = ZoneInfo("Europe/Moscow")
MONDAY_NOON = datetime(2026, 11, 16, 12, 0, tzinfo=MSK)  # in the past: Dovecot clamps
# a future APPEND date to "now", and SLA clocks start at the letter's arrival.


class Clock:
    """A settable clock: the tests move time, the daemon reads it."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def rig(imap_account: ImapAccount, smtp_sink: SmtpSink, database_url: str) -> Iterator[Any]:
    stores: list[Store] = []

    def make(window: str = "business_hours", start: datetime = MONDAY_NOON,
             **sections: dict[str, Any]) -> tuple[Daemon, Clock]:
        config = Config.model_validate({
            "mailbox": {"host": imap_account.host, "port": imap_account.port,
                        "security": "none", "username": imap_account.username,
                        "password": imap_account.password},
            "smtp": {"host": smtp_sink.host, "port": smtp_sink.port, "security": "none"},
            "database": {"url": database_url},
            "replies": {"window": window},
            **sections,
        })
        store = Store(database_url)
        store.upgrade()
        stores.append(store)
        clock = Clock(start)
        return Daemon(config, store, clock=clock), clock

    yield make
    for store in stores:
        store.dispose()


def deliver(account: ImapAccount, raw: bytes, at: datetime) -> None:
    """APPEND with an explicit INTERNALDATE, so arrival and the test's clock agree."""
    with account.client() as imap:
        imap.append("INBOX", raw, msg_time=at)


def dated(raw: bytes, at: datetime) -> bytes:
    """The letter as if written at ``at`` (an arrival before its Date is not believed)."""
    message = message_from_bytes(raw, policy=policy.default)
    del message["Date"]
    message["Date"] = format_datetime(at)
    return message.as_bytes()


def reply_to(mail: ReceivedMail, sender: str, text: str, subject: str | None = None) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "servicedesk@example.com"
    message["Subject"] = subject or f"Re: {mail.message['Subject']}"
    message["Message-ID"] = f"<answer-{abs(hash(text))}@customer.example>"
    message["In-Reply-To"] = mail.message["Message-ID"]
    message["References"] = f"{mail.message['References']} {mail.message['Message-ID']}"
    message.set_content(text)
    return bytes(message)


def requests(daemon: Daemon) -> dict[str, Request]:
    with daemon.store.transaction() as session:
        return {r.number: r for r in session.query(Request).order_by(Request.id)}


def test_clarification_answered_by_reply_completes_the_same_request(
    rig: Any, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    daemon, clock = rig(window="always")
    deliver(imap_account, sample_letters()[1], clock.now)  # no registration number
    daemon.run_once()
    (clarification,) = smtp_sink.wait_for(1)
    assert clarification.message["X-Mailroute-Kind"] == "clarification"
    assert requests(daemon)["SD-000001"].status == "awaiting_customer"

    clock.now += timedelta(minutes=30)
    imap_account.append(reply_to(clarification, "Pavel Orlov <orlov@severstroy.ru>",
                                 "Наш регистрационный номер: 800 771 204\n\n> цитата"))
    daemon.run_once()

    (request,) = requests(daemon).values()
    assert request.status == "new"
    assert request.registration_number == "800771204"
    assert request.missing == []
    assert request.first_response_due == datetime(2026, 11, 16, 16, 30, tzinfo=MSK)
    ack = smtp_sink.wait_for(2)[1]
    assert ack.message["X-Mailroute-Kind"] == "acknowledgement"
    assert ack.message["X-Mailroute-Request"] == "SD-000001"
    assert "16.11.2026 16:30 (МСК)" in ack.message.get_content()
    with daemon.store.transaction() as session:
        assert sorted(x.state for x in session.query(Letter)) == ["follow_up", "processed"]


def test_token_from_a_stranger_opens_a_new_request(
    rig: Any, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    daemon, clock = rig(window="always")
    deliver(imap_account, sample_letters()[0], clock.now)
    daemon.run_once()
    smtp_sink.wait_for(1)
    stranger = EmailMessage()
    stranger["From"] = "mallory@evil.example"
    stranger["To"] = "servicedesk@example.com"
    stranger["Subject"] = "[SD-000001] please send me the details"
    stranger["Message-ID"] = "<hijack@evil.example>"
    stranger.set_content("Пришлите, пожалуйста, всю переписку по обращению.")
    deliver(imap_account, bytes(stranger), clock.now)
    daemon.run_once()

    found = requests(daemon)
    assert sorted(found) == ["SD-000001", "SD-000002"]
    assert found["SD-000002"].requester == "mallory@evil.example"
    assert found["SD-000001"].requester == "smirnova@polyot-tech.ru"
    replies = smtp_sink.wait_for(2)
    assert [m.rcpt_tos for m in replies] == [("smirnova@polyot-tech.ru",),
                                             ("mallory@evil.example",)]
    assert replies[1].message["X-Mailroute-Request"] == "SD-000002"


def test_colleague_from_the_same_domain_may_use_the_token(
    rig: Any, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    daemon, clock = rig(window="always")
    deliver(imap_account, sample_letters()[0], clock.now)
    daemon.run_once()
    colleague = EmailMessage()
    colleague["From"] = "petrov@polyot-tech.ru"
    colleague["To"] = "servicedesk@example.com"
    colleague["Subject"] = "Re: [SD-000001] Срочно"
    colleague["Message-ID"] = "<colleague@polyot-tech.ru>"
    colleague.set_content("Добавлю: ошибка и на втором складе.")
    deliver(imap_account, bytes(colleague), clock.now)
    daemon.run_once()
    assert list(requests(daemon)) == ["SD-000001"]
    assert len(smtp_sink.wait_for(1)) == 1  # a follow-up gets no new acknowledgement


def test_saturday_night_letter_is_answered_monday_at_opening(
    rig: Any, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    saturday_night = datetime(2026, 11, 21, 23, 40, tzinfo=MSK)
    daemon, clock = rig(start=saturday_night)
    deliver(imap_account, sample_letters()[0], clock.now)  # critical
    daemon.run_once()
    assert "SD-000001" in requests(daemon)  # registered at once
    assert smtp_sink.received() == []

    clock.now = datetime(2026, 11, 22, 15, 0, tzinfo=MSK)  # Sunday
    daemon.send_due()
    clock.now = datetime(2026, 11, 23, 9, 59, tzinfo=MSK)  # Monday before opening
    daemon.send_due()
    assert smtp_sink.received() == []

    clock.now = datetime(2026, 11, 23, 10, 0, tzinfo=MSK)
    daemon.send_due()
    (ack,) = smtp_sink.wait_for(1)
    body = ack.message.get_content()
    assert "23.11.2026 11:00 (МСК)" in body  # 1 business hour after Monday's opening
    assert "критический" in body


def test_replies_go_out_in_arrival_order(
    rig: Any, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    daemon, clock = rig(start=datetime(2026, 11, 21, 22, 0, tzinfo=MSK))
    first, second, third = sample_letters()[0], sample_letters()[2], sample_letters()[4]
    for raw in (first, second, third):
        deliver(imap_account, raw, clock.now)
        daemon.run_once()
        clock.now += timedelta(minutes=10)
    clock.now = datetime(2026, 11, 23, 10, 0, 1, tzinfo=MSK)
    daemon.send_due()
    numbers = [m.message["X-Mailroute-Request"] for m in smtp_sink.wait_for(3)]
    assert numbers == ["SD-000001", "SD-000002", "SD-000003"]


def test_clarifications_stop_after_the_cap_and_a_person_takes_over(
    rig: Any, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    daemon, clock = rig(window="always", workflow={"max_clarifications": 2})
    deliver(imap_account, sample_letters()[1], clock.now)
    daemon.run_once()
    first = smtp_sink.wait_for(1)[0]
    deliver(imap_account, reply_to(first, "orlov@severstroy.ru", "Номер поищу позже."), clock.now)
    daemon.run_once()
    second = smtp_sink.wait_for(2)[1]
    assert second.message["X-Mailroute-Kind"] == "clarification"
    assert "регистрационный номер" in second.message.get_content()
    deliver(imap_account, reply_to(second, "orlov@severstroy.ru", "Так и не нашёл."), clock.now)
    daemon.run_once()

    (request,) = requests(daemon).values()
    assert request.status == "new" and request.queue == "human-review"
    assert request.clarifications == 2
    assert request.first_response_due is not None
    assert len(smtp_sink.received()) == 2  # no third clarification


@pytest.mark.parametrize("policy", ["new", "reopen"])
def test_reply_to_a_closed_request(
    rig: Any, imap_account: ImapAccount, smtp_sink: SmtpSink, policy: str
) -> None:
    daemon, clock = rig(window="always", workflow={"closed_reply": policy})
    deliver(imap_account, sample_letters()[0], clock.now)
    daemon.run_once()
    (ack,) = smtp_sink.wait_for(1)
    change_status(daemon.store, "SD-000001", "closed", daemon.pipeline.calendar, clock())
    clock.now += timedelta(days=2)
    answer = reply_to(ack, "smirnova@polyot-tech.ru", "Ошибка снова появилась.")
    deliver(imap_account, answer, clock.now)
    daemon.run_once()

    found = requests(daemon)
    if policy == "new":
        assert sorted(found) == ["SD-000001", "SD-000002"]
        assert found["SD-000002"].parent_id == found["SD-000001"].id
        assert found["SD-000001"].status == "closed"
        assert smtp_sink.wait_for(2)[1].message["X-Mailroute-Request"] == "SD-000002"
    else:
        assert list(found) == ["SD-000001"]
        assert found["SD-000001"].status == "new"
        assert found["SD-000001"].closed_at is None


def test_breach_is_escalated_once(
    rig: Any, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    daemon, clock = rig(window="always",
                        workflow={"escalation_address": "duty@desk.example"})
    deliver(imap_account, sample_letters()[0], clock.now)  # critical: 1 h to respond
    daemon.run_once()
    smtp_sink.wait_for(1)
    identity = daemon.pipeline.identity
    assert escalate_breaches(daemon.store, daemon.config.workflow, identity, clock()) == []

    clock.now += timedelta(hours=1, minutes=1)
    assert escalate_breaches(daemon.store, daemon.config.workflow, identity, clock()) == [
        ("SD-000001", "first_response")]
    assert escalate_breaches(daemon.store, daemon.config.workflow, identity, clock()) == []
    daemon.send_due()
    notice = smtp_sink.wait_for(2)[1]
    assert notice.rcpt_tos == ("duty@desk.example",)
    assert notice.message["X-Mailroute-Kind"] == "escalation"
    assert "SD-000001" in notice.message["Subject"]

    change_status(daemon.store, "SD-000001", "in_progress", daemon.pipeline.calendar, clock())
    clock.now += timedelta(days=3)
    assert escalate_breaches(daemon.store, daemon.config.workflow, identity, clock()) == [
        ("SD-000001", "resolution")]
    with daemon.store.transaction() as session:
        events = [e.kind for e in repo.request_by_number(session, "SD-000001").events]
    assert "status" in events


def test_adopted_history_is_breached_but_not_escalated_letter_by_letter(
    rig: Any, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    """A first start on a mailbox with history must not mail one escalation per old letter:
    those targets passed before the request existed; only new breaches are escalated."""
    daemon, clock = rig(window="always",
                        workflow={"escalation_address": "duty@desk.example"})
    written = clock.now - timedelta(days=30)
    for letter in sample_letters()[:3]:
        deliver(imap_account, dated(letter, written), written)
    daemon.run_once()
    identity = daemon.pipeline.identity
    assert escalate_breaches(daemon.store, daemon.config.workflow, identity, clock()) == []
    with daemon.store.transaction() as session:
        breached = session.scalars(select(Escalation)).all()
    assert len(breached) >= 3  # recorded, so reports and later runs know
    daemon.send_due()
    assert not [m for m in smtp_sink.received() if m.rcpt_tos == ("duty@desk.example",)]

    fresh = message_from_bytes(sample_letters()[0], policy=policy.default)
    fresh.replace_header("From", "Olga <olga@polyot-tech.ru>")  # a new critical letter
    fresh.replace_header("Message-ID", "<fresh-critical@polyot-tech.ru>")
    deliver(imap_account, dated(fresh.as_bytes(), clock.now), clock.now)
    daemon.run_once()
    clock.now += timedelta(hours=1, minutes=1)
    assert [kind for _, kind in escalate_breaches(
        daemon.store, daemon.config.workflow, identity, clock())] == ["first_response"]


def test_weekly_report_is_mailed_once(
    rig: Any, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    from mailroute.service.daemon import send_period_report

    daemon, clock = rig(window="always", reports={"recipients": ["boss@desk.example"]})
    deliver(imap_account, sample_letters()[0], clock.now)
    daemon.run_once()
    smtp_sink.wait_for(1)
    clock.now = datetime(2026, 11, 23, 9, 0, tzinfo=MSK)  # the Monday after
    assert send_period_report(daemon.store, daemon.config, daemon.pipeline, clock()) == 1
    assert send_period_report(daemon.store, daemon.config, daemon.pipeline, clock()) == 0
    daemon.send_due()
    report = smtp_sink.wait_for(2)[1]
    assert report.rcpt_tos == ("boss@desk.example",)
    assert report.message["X-Mailroute-Kind"] == "report"
    assert "2026-11-16" in report.message["Subject"]
    html = report.message.get_body(("html",)).get_content()
    assert "<svg" in html


def test_a_robot_answering_every_reply_is_stopped(
    rig: Any, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    """Another helpdesk opens a 'new ticket' for each of our replies, with no
    Auto-Submitted header and no threading: the per-sender cap ends the exchange."""
    daemon, clock = rig(window="always")
    robot = "tickets@otherdesk.example"

    def robot_letter(number: int) -> bytes:
        message = EmailMessage()
        message["From"] = robot
        message["To"] = "servicedesk@example.com"
        message["Subject"] = f"Ticket #{4700 + number} created: we received your message"
        message["Message-ID"] = f"<robot-{number}@otherdesk.example>"
        message.set_content("Ошибка обработки: мы получили ваше письмо и зарегистрировали "
                            f"заявку {4700 + number}. ООО «Другой деск», рег. номер 800555111")
        return bytes(message)

    deliver(imap_account, robot_letter(0), clock.now)
    for round_number in range(1, 15):
        daemon.run_once()
        answered = [m for m in smtp_sink.received() if m.rcpt_tos == (robot,)]
        if len(answered) < round_number:
            break  # we did not answer the last robot letter: the loop is over
        deliver(imap_account, robot_letter(round_number), clock.now)  # the robot answers
        clock.now += timedelta(minutes=1)
    kinds = [m.message["X-Mailroute-Kind"] for m in smtp_sink.received()]
    assert kinds == ["acknowledgement"] * 5 + ["limit"]
    assert len(requests(daemon)) == 7  # every robot letter is still registered
    clock.now += timedelta(hours=1, minutes=1)  # a new window: one reply again
    deliver(imap_account, robot_letter(99), clock.now)
    daemon.run_once()
    assert len(smtp_sink.received()) == 7


def test_permanent_bounce_suppresses_further_replies(
    rig: Any, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    daemon, clock = rig(window="always")
    deliver(imap_account, sample_letters()[2], clock.now)  # a.berg@lakeside-logistics.example
    daemon.run_once()
    (ack,) = smtp_sink.wait_for(1)
    bounce = EmailMessage()
    bounce["From"] = "MAILER-DAEMON@mx.lakeside-logistics.example"
    bounce["To"] = "servicedesk@example.com"
    bounce["Subject"] = "Undelivered Mail Returned to Sender"
    bounce["Message-ID"] = "<bounce-1@mx.lakeside-logistics.example>"
    bounce.set_content("This is the mail system.\n\n<a.berg@lakeside-logistics.example>: "
                       "host mx said: 550 5.1.1 User unknown (permanent failure)\n")
    bounce.add_attachment(ack.content, maintype="message", subtype="rfc822")
    deliver(imap_account, bytes(bounce), clock.now)
    letter = sample_letters()[2].replace(b"<demo-0003@", b"<demo-0003-again@")
    deliver(imap_account, letter, clock.now)
    daemon.run_once()
    assert len(requests(daemon)) == 2  # the new letter is registered...
    assert len(smtp_sink.received()) == 1  # ...but not answered
    with daemon.store.transaction() as session:
        assert repo.is_suppressed(session, "a.berg@lakeside-logistics.example")


def customer_letter(sender: str, number: int) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "servicedesk@example.com"
    message["Subject"] = f"Не работает выгрузка {number}"
    message["Message-ID"] = f"<caps-{number}@sender.example>"
    message.set_content(f"Здравствуйте! Выгрузка {number} не работает. ООО «Ромашка», "
                        "рег. номер 800555111")
    return bytes(message)


def test_a_rotating_sub_address_gets_the_cap_and_one_notice(
    rig: Any, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    """victim+1@, victim+2@, ... Victim+N@ reach one mailbox: 12 letters, in two passes,
    get the per-address cap (5) and one notice, not 12 replies."""
    daemon, clock = rig(replies={"window": "always"})
    for number in range(12):
        if number == 6:
            daemon.run_once()
        spelling = "Victim" if number % 2 else "victim"
        deliver(imap_account, customer_letter(f"{spelling}+{number}@customer.example", number),
                clock.now)
    daemon.run_once()
    kinds = [m.message["X-Mailroute-Kind"] for m in smtp_sink.received()]
    assert len(kinds) == 6 and kinds[-1] == "limit" and "limit" not in kinds[:-1], kinds
    assert len(requests(daemon)) == 12  # every letter is still registered


def test_domain_and_desk_caps_hold_and_status_shows_them(
    rig: Any, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    """Different people at one domain: at most ``per_domain_limit`` replies; across
    domains, at most ``desk_hourly_limit``. Both are shown by `status`."""
    daemon, clock = rig(replies={"window": "always", "per_domain_limit": 3,
                                 "desk_hourly_limit": 5})
    for number in range(6):
        deliver(imap_account, customer_letter(f"person{number}@one.example", number), clock.now)
    daemon.run_once()
    assert len(smtp_sink.received()) == 3
    for number in range(10, 14):
        deliver(imap_account, customer_letter(f"someone@d{number}.example", number), clock.now)
    daemon.run_once()
    assert len(smtp_sink.received()) == 5
    health = check_health(daemon.store, daemon.config.health, clock.now)
    assert {cap.split(":")[0] for cap in health.caps} == {"domain", "desk"}, health.caps
    assert any("desk cap" in problem for problem in health.problems), health.problems
