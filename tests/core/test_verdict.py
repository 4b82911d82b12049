"""The pipeline as a whole: ignore results, missing items, reply kind, explain JSON."""

from __future__ import annotations

import pytest

from mailroute import config
from mailroute.core.verdict import STAGES, analyze, has_description
from mailroute.packaged import analysis_context
from tests.support.letter import DESK, letter

CONTEXT = analysis_context(config.Config())
SIGNATURE = "\n\nООО «Ромашка»\nрег. номер 800 123 456\n"


def test_a_complete_letter_is_acknowledged() -> None:
    result = analyze(letter("Добрый день!\nНе проводится документ, ошибка." + SIGNATURE), CONTEXT)
    assert (result.action, result.reply, result.missing) == ("ticket", "acknowledgement", ())
    assert result.queue == "first-line"


def test_ignored_letters_carry_nothing_but_the_reason_and_language() -> None:
    result = analyze(letter("Я в отпуске до 14 декабря." + SIGNATURE,
                            headers={"Auto-Submitted": "auto-replied"}), CONTEXT)
    assert result.as_dict() | {"reasons": []} == result.as_dict() | {
        "action": "ignore", "ignore_reason": "auto_reply", "request_type": None,
        "priority": None, "organization": None, "registration_number": None, "missing": [],
        "reply": "none", "language": "ru", "queue": None, "reasons": []}


def test_a_ticket_passes_every_listed_stage_in_order_and_no_other() -> None:
    """A worker shares its stage as an index into STAGES; one missing from it would be
    named only "analyze" when a letter overruns there."""
    told: list[str] = []
    analyze(letter("Не проводится документ, ошибка." + SIGNATURE), CONTEXT, told.append)
    assert tuple(told) == STAGES


def test_missing_items_in_spec_order() -> None:
    result = analyze(letter("Добрый день!\n\nС уважением,\nИван", subject=None), CONTEXT)
    assert result.missing == ("subject", "description", "organization", "registration_number")
    assert result.reply == "clarification"


@pytest.mark.parametrize("subject", ["", "   ", "Re:", "FW: ", "(без темы)", "(no subject)"])
def test_blank_subjects(subject: str) -> None:
    result = analyze(letter("Не проводится документ, ошибка." + SIGNATURE, subject=subject),
                     CONTEXT)
    assert result.missing == ("subject",)


def test_without_a_description_the_type_comes_from_the_subject() -> None:
    found = letter("Добрый день, во вложении." + SIGNATURE, subject="Ошибка в отчёте")
    result = analyze(found, CONTEXT)
    assert (result.request_type, result.missing) == ("incident", ("description",))
    found = letter("Добрый день!" + SIGNATURE, subject="Вопрос по отчётности")
    assert analyze(found, CONTEXT).request_type == "service_request"


@pytest.mark.parametrize(
    "own",
    ["во вложении.", "См. вложение", "Прошу помочь!", "Позвоните мне, пожалуйста.",
     "Повторно направляю, ответа пока не получили.", "Please see the attached screenshot.",
     "Прошу зарегистрировать обращение. Подробности во вложении.", "Срочно!!!",
     "Our registration number is 800 615 222. The company is Westbrook Analytics LLC."],
)
def test_words_that_state_no_request(own: str) -> None:
    assert not has_description(own)


@pytest.mark.parametrize(
    "own",
    ["Не работает печать накладных.", "Прошу выставить счёт.",
     "Ошибка при печати, скрин во вложении.", "How do I export the trial balance?"],
)
def test_short_requests_are_descriptions(own: str) -> None:
    assert has_description(own)


def test_a_covering_note_is_only_whole_words() -> None:
    """ "no response" inside "Ano response" is not a covering note: blanking it left
    one-letter stubs, and a request of real words counted as none."""
    assert has_description("Ano response, Uno response, Ono response.")
    assert not has_description("No response. Still no response.")


def test_explain_json_has_the_spec_fields_and_more() -> None:
    data = analyze(letter("Не проводится документ." + SIGNATURE, sender="Ivan@Client.ru"),
                   CONTEXT).as_dict()
    assert set(data) == {"action", "ignore_reason", "request_type", "priority", "organization",
                         "registration_number", "missing", "reply", "language", "queue",
                         "reasons", "message_id", "subject", "requester", "requester_header",
                         "confidence", "needs_review", "to_confirm"}
    assert data["requester"] == "ivan@client.ru"
    assert all(set(r) == {"rule", "sets", "detail"} for r in data["reasons"])  # type: ignore[union-attr]


def test_quoted_history_decides_nothing() -> None:
    text = ("Добрый день!\nСпасибо, посмотрим.\n\n16.11.2026 10:15, ServiceDesk пишет:\n"
            "> СРОЧНО! Ошибка у всех пользователей. ООО «Вендор», рег. номер 800 000 001\n")
    result = analyze(letter(text, subject="Re: Обращение", to=()), CONTEXT)
    assert result.organization is None and result.registration_number is None
    assert result.priority == "normal"


def test_the_desks_display_name_marks_the_vendor() -> None:
    from mailroute.core.letter import Address

    to = (Address("ServiceDesk ООО «Вендор Софт»", DESK),)
    text = "Не проводится документ.\n\nООО «Вендор Софт»\nрег. номер 800 123 456"
    assert analyze(letter(text, to=to), CONTEXT).organization is None


# --------------------------------------------------------------------------- confidence


def explain(text: str, subject: str = "Отчёт") -> dict[str, object]:
    return analyze(letter(text, subject=subject), CONTEXT).as_dict()


def test_a_marker_and_a_signed_letter_are_sure() -> None:
    data = explain("Не проводится документ, выдаёт ошибку «Неверный период»." + SIGNATURE,
                   subject="Инцидент: не проводится документ")
    assert data["confidence"] == {"request_type": 1.0, "organization": 0.9,
                                  "registration_number": 1.0}
    assert data["needs_review"] is False


def test_a_close_vote_needs_review() -> None:
    """"Не проводится" against "подскажите как быть?": 3.5 votes to 3 is a guess."""
    data = explain("Не проводится документ, подскажите как быть?" + SIGNATURE)
    assert data["needs_review"] is True
    confidence = data["confidence"]
    assert isinstance(confidence, dict) and confidence["request_type"] < 0.7
    assert any(r["rule"] == "review:doubt" and "close vote" in r["detail"]  # type: ignore[index]
               for r in data["reasons"])  # type: ignore[attr-defined]


def test_an_organization_only_inside_a_sentence_is_doubtful() -> None:
    data = explain("После обновления отчёт для ООО «Ромашка» выдаёт ошибку «Неверный период» "
                   "при каждом запуске. Прошу помочь разобраться."
                   "\n\nИван\nрег. номер 800 123 456\n")
    assert data["organization"] == "ООО «Ромашка»"
    confidence = data["confidence"]
    assert isinstance(confidence, dict) and confidence["organization"] < 0.5
    assert data["needs_review"] is True
    assert data["to_confirm"] == ["organization"]  # the reply asks the customer to confirm


def test_two_different_registration_numbers_are_doubtful() -> None:
    data = explain("После обновления отчёт выдаёт ошибку «Неверный период». Второй рег. номер "
                   "800 999 111 — тоже наш." + SIGNATURE)
    confidence = data["confidence"]
    assert isinstance(confidence, dict) and confidence["registration_number"] < 0.5
    assert data["needs_review"] is True
    assert data["to_confirm"] == ["registration_number"]


def test_an_ignored_letter_has_no_confidence() -> None:
    data = analyze(letter("Я в отпуске", subject="Автоответ: отчёт"), CONTEXT).as_dict()
    assert data["confidence"] == {} and data["needs_review"] is False
    assert data["to_confirm"] == []


def test_a_request_in_doubt_goes_to_the_review_queue_and_is_still_acknowledged() -> None:
    routed = config.Config.model_validate({"routing": {"review_queue": "review"}})
    close = letter("Не проводится документ, подскажите как быть?" + SIGNATURE, subject="Отчёт")
    analysis = analyze(close, analysis_context(routed))
    assert analysis.needs_review and analysis.queue == "review"
    assert analysis.reply == "acknowledgement"
    sure = letter("Не проводится документ, выдаёт ошибку «Неверный период»." + SIGNATURE,
                  subject="Инцидент: документ")
    assert analyze(sure, analysis_context(routed)).queue == "first-line"
    assert analyze(close, CONTEXT).queue == "first-line"  # no review queue configured
