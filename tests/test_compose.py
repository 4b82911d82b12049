"""Reply drafts: threading headers, loop-safety headers, language, no header injection."""

from __future__ import annotations

from datetime import datetime
from email import message_from_bytes, policy
from pathlib import Path
from zoneinfo import ZoneInfo

from mailroute.compose import Identity, ReplyFacts, Templates, Thread, compose, one_line

IDENTITY = Identity("servicedesk@example.com", "ServiceDesk")


def facts(**overrides: object) -> ReplyFacts:
    values: dict[str, object] = {
        "number": "SD-000042", "request_type": "incident", "priority": "critical",
        "language": "ru", "subject": "Не открывается база",
        "hours": "по рабочим дням с 10:00 до 18:00 (МСК)",
    }
    return ReplyFacts(**(values | overrides))  # type: ignore[arg-type]


def render(kind: str, reply_facts: ReplyFacts, thread: Thread | None = None,
           templates: Templates | None = None):
    thread = thread or Thread("client@customer.example", "Иван", "<orig@customer.example>",
                              ("<older@customer.example>",))
    draft = compose(kind, reply_facts, thread, IDENTITY, templates or Templates.load(),
                    "<reply-1@example.com>")
    return draft, message_from_bytes(draft.raw, policy=policy.default)


def test_acknowledgement_headers() -> None:
    draft, message = render("acknowledgement", facts())
    assert message["Subject"].startswith("[SD-000042] ")
    assert message["In-Reply-To"] == "<orig@customer.example>"
    assert message["References"] == "<older@customer.example> <orig@customer.example>"
    assert message["Message-ID"] == "<reply-1@example.com>"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["X-Auto-Response-Suppress"] == "All"
    assert message["X-Mailroute-Kind"] == "acknowledgement"
    assert message["X-Mailroute-Request"] == "SD-000042"
    assert message["To"].addresses[0].addr_spec == "client@customer.example"
    assert "Date" not in message  # stamped when actually sent
    assert draft.recipient == "client@customer.example"


def test_acknowledgement_body_in_russian() -> None:
    due = datetime(2026, 11, 23, 11, 0, tzinfo=ZoneInfo("Europe/Moscow"))
    _, message = render("acknowledgement", facts(first_response_due=due))
    body = message.get_content()
    assert "SD-000042" in body
    assert "Инцидент" in body and "критический" in body
    assert "23.11.2026 11:00 (МСК)" in body
    assert "10:00 до 18:00" in body
    assert "ответьте на это письмо" in body


def test_clarification_names_each_missing_item_in_english() -> None:
    _, message = render("clarification", facts(
        language="en", missing=("organization", "registration_number"),
        unknown_registration="123"))
    body = message.get_content()
    assert "legal form" in body
    assert "registration number from your licence agreement" in body
    assert "123 is not in our registry" in body
    assert "subject for your message" not in body


def test_header_injection_is_flattened() -> None:
    evil = "Hi\r\nBcc: victim@example.org\r\n\r\nbody"
    _, message = render("acknowledgement", facts(subject=evil),
                        Thread("x@customer.example", "Eve\r\nBcc: a@b.c", None, ()))
    assert message["Bcc"] is None
    assert "\n" not in message["Subject"]
    assert "Bcc: victim@example.org" in message["Subject"]  # kept as harmless text
    assert message["In-Reply-To"] is None


def test_template_override_and_no_code_execution(tmp_path: Path) -> None:
    (tmp_path / "acknowledgement.ru.txt").write_text(
        "Subject: [$number] Принято\n\nНомер $number. ${__import__('os')} $unknown\n",
        encoding="utf-8",
    )
    _, message = render("acknowledgement", facts(), templates=Templates.load(str(tmp_path)))
    assert message["Subject"] == "[SD-000042] Принято"
    body = message.get_content()
    assert "Номер SD-000042." in body
    assert "${__import__('os')}" in body and "$unknown" in body


def test_one_line() -> None:
    assert one_line("a\r\nb\tc\u2028d") == "a b c d"
    assert len(one_line("x" * 500)) == 150
