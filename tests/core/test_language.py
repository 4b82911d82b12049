"""ru / en of the customer's own words."""

from __future__ import annotations

from mailroute.core.language import detect


def test_russian_with_english_product_names_is_russian() -> None:
    text = "Не работает интеграция с Power BI: connector выдаёт Authentication failed"
    assert detect(text) == "ru"


def test_english_with_a_russian_error_message_is_english() -> None:
    text = 'Problem name: backup job failed on srv-1c-01, "ИБ заблокирована: есть активные сеансы"'
    assert detect(text) == "en"


def test_falls_back_to_subject_then_whole_text_then_default() -> None:
    assert detect("", "Invoice copy please", "Добрый день") == "en"
    assert detect("", None, "Добрый день, пришлите счёт") == "ru"
    assert detect("", "", "", default="en") == "en"
