"""Machine mail: own address, bounces, auto-replies, bulk, and their order."""

from __future__ import annotations

import pytest

from mailroute.core.machine_mail import check, machine_reason
from tests.support.letter import DESK, letter

OWN = frozenset({DESK, "support@example.com"})


def test_a_persons_letter_is_not_machine_mail() -> None:
    assert machine_reason(letter("Не работает печать."), OWN) is None


@pytest.mark.parametrize("sender", ["servicedesk@example.com", "SUPPORT@example.com"])
def test_own_address(sender: str) -> None:
    assert machine_reason(letter(sender=sender), OWN) == "own_address"


def test_our_own_reply_coming_back_by_its_header() -> None:
    found = letter(headers={"X-Mailroute-Request": "SD-2026-000001"})
    assert machine_reason(found, OWN) == "own_address"


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"content_type": "multipart/report"}, "loops:multipart-report"),
        ({"sender": "MAILER-DAEMON@mx.client.ru"}, "loops:mailer-daemon"),
        ({"sender": "postmaster@client.ru"}, "loops:mailer-daemon"),
        ({"return_path": ""}, "loops:empty-return-path"),
        ({"headers": {"X-Failed-Recipients": "a@b.ru"}}, "loops:failed-recipients"),
        ({"subject": "Undelivered Mail Returned to Sender"}, "loops:bounce-subject"),
        ({"subject": "Недоставленное сообщение: Обращение"}, "loops:bounce-subject"),
    ],
)
def test_bounce(kwargs: dict[str, object], rule: str) -> None:
    verdict = check(letter(**kwargs), OWN)  # type: ignore[arg-type]
    assert verdict is not None
    assert (verdict.reason, verdict.rule) == ("bounce", rule)


def test_a_forwarded_bounce_with_a_question_is_a_persons_letter() -> None:
    assert machine_reason(letter(subject="Fwd: Undelivered Mail Returned to Sender"), OWN) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"headers": {"Auto-Submitted": "auto-replied"}},
        {"headers": {"Auto-Submitted": "auto-generated"}},
        {"headers": {"X-Autoreply": "yes"}},
        {"headers": {"X-Autorespond": "Иван в отпуске"}},
        {"headers": {"Precedence": "auto_reply"}},
        {"subject": "Автоответ: Ответ на обращение SD-1"},
        {"subject": "Automatic reply: Request SD-1"},
        {"subject": "Out of Office: Re: Request"},
        {"subject": "RE: Out of office"},
    ],
)
def test_auto_reply(kwargs: dict[str, object]) -> None:
    assert machine_reason(letter(**kwargs), OWN) == "auto_reply"  # type: ignore[arg-type]


def test_auto_submitted_no_is_a_person() -> None:
    assert machine_reason(letter(headers={"Auto-Submitted": "no"}), OWN) is None


@pytest.mark.parametrize(
    "headers",
    [
        {"Precedence": "bulk"},
        {"Precedence": "junk"},
        {"Precedence": "list"},
        {"List-Id": "<club.lists.example.org>"},
        {"List-Unsubscribe": "<https://news.example.net/u>"},
    ],
)
def test_bulk(headers: dict[str, str]) -> None:
    assert machine_reason(letter(headers=headers), OWN) == "bulk"


def test_precedence_first_class_is_not_bulk() -> None:
    assert machine_reason(letter(headers={"Precedence": "first-class"}), OWN) is None


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"sender": DESK, "return_path": "", "headers": {"Precedence": "bulk"}}, "own_address"),
        ({"content_type": "multipart/report", "headers": {"Auto-Submitted": "auto-replied"}},
         "bounce"),
        ({"headers": {"Auto-Submitted": "auto-generated", "List-Id": "<x>"}}, "auto_reply"),
    ],
)
def test_first_reason_in_spec_order_wins(kwargs: dict[str, object], reason: str) -> None:
    assert machine_reason(letter(**kwargs), OWN) == reason  # type: ignore[arg-type]


def test_verdict_names_the_evidence() -> None:
    verdict = check(letter(headers={"Auto-Submitted": "auto-replied"}), OWN)
    assert verdict is not None
    assert verdict.rule == "loops:auto-submitted"
    assert "auto-replied" in verdict.detail
