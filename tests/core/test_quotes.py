"""Splitting a letter into greeting, own words, signature and quoted history."""

from __future__ import annotations

import pytest

from mailroute.core.quotes import split

NEW = "Не проводится документ реализации, выходит ошибка."


# --------------------------------------------------------------------------- history


@pytest.mark.parametrize(
    "history",
    [
        "> Здравствуйте!\n> Укажите регистрационный номер.",
        "От: ServiceDesk <servicedesk@example.com>\nОтправлено: 16 ноября 2026 г. 9:00\n"
        "Кому: Иван\nТема: Обращение\n\nЗдравствуйте!",
        "From: Kevin Brown <kevin@partner.com>\nSent: Tuesday, November 17, 2026 6:40 PM\n"
        "To: Peter\nSubject: Re: test\n\nHello",
        "________________________________\nFrom: A <a@b.com>\nSent: Monday\nTo: B\n\nHello",
        "-----Original Message-----\nFrom: A\nSent: Monday\n\nHello",
        "-----Исходное сообщение-----\nОт: А\nОтправлено: понедельник\n\nТекст",
        "-------- Пересылаемое сообщение --------\n16.11.2026, 10:00, \"Банк\" <b@bank.ru>:\nТекст",
        "---------- Forwarded message ---------\nFrom: A <a@b.com>\nDate: Mon\n\nText",
        "-------- Forwarded Message --------\nSubject: x\nDate: y\nFrom: z\n\nText",
        "Begin forwarded message:\n\nFrom: A <a@b.com>\nSubject: x\n\nText",
        "On Mon, 16 Nov 2026 at 10:15, ServiceDesk <servicedesk@example.com> wrote:\n> Hello",
        "On Tue, Nov 17, 2026 at 4:12 PM Service Desk <\nservicedesk@example.com> wrote:\n\n> Hi",
        "16.11.2026 10:15, ServiceDesk пишет:\n> Здравствуйте!",
        '18.11.2026, 10:15, "Иванова Мария" <ivanova@agro.ru>:\nМария пишет без кавычек',
        "Понедельник, 16 ноября 2026, 10:15 +03:00 от ServiceDesk <servicedesk@example.com>:\n"
        ">Здравствуйте!",
        "пн, 16 нояб. 2026 г. в 14:05, ServiceDesk <servicedesk@example.com>:\n\n> Текст",
        "> 2 дек. 2026 г., в 18:15, ServiceDesk <servicedesk@example.com> написал(а):\n>\n> Текст",
        "Тема: \tЧеки\nДата: \tTue, 11 Mar 2025 18:02:44 +0300\nОт: \tИгорь <i@x.ru>\nТекст",
    ],
)
def test_history_is_set_aside(history: str) -> None:
    parts = split(f"Добрый день!\n\n{NEW}\n\n{history}\n")
    assert parts.own == NEW
    assert parts.quoted.strip()
    assert "Текст" not in parts.own and "Hello" not in parts.own


def test_words_below_a_quote_are_own() -> None:
    text = "16.11.2026 10:15, ServiceDesk пишет:\n> Укажите номер.\n\nРег. номер 800 265 409.\n"
    parts = split(text)
    assert "800 265 409" in parts.own + parts.signature
    assert "Укажите" in parts.quoted


def test_attribution_without_quote_marks_ends_the_own_text() -> None:
    text = f"{NEW}\n\n18.11.2026, 10:15, \"Мария\" <m@agro.ru>:\nВ ООО «Агро» отчёт пустой\n"
    parts = split(text)
    assert "Агро" in parts.quoted and "Агро" not in parts.own


def test_a_header_word_in_the_text_is_not_a_header_block() -> None:
    text = "Тема: не закрывается месяц.\nПри закрытии выходит ошибка, подробности ниже.\n"
    assert "Тема" in split(text).own


# --------------------------------------------------------------------------- greeting


@pytest.mark.parametrize(
    "greeting",
    [
        "Добрый день!",
        "Здравствуйте,",
        "Доброе утро.",
        "Коллеги, добрый день!",
        "Уважаемая служба поддержки!",
        "Здравствуйте, Анна Петровна!",
        "Hello team,",
        "Dear Sir or Madam,",
        "Hi there,",
        "Good morning,",
        "Приветствую!",
    ],
)
def test_greeting_is_neither_request_nor_signature(greeting: str) -> None:
    parts = split(f"{greeting}\n\n{NEW}\n")
    assert parts.greeting == greeting
    assert parts.own == NEW


def test_greeting_on_the_same_line_as_the_request() -> None:
    parts = split(f"Добрый день! {NEW}")
    assert parts.greeting == "Добрый день!"
    assert parts.own == NEW


def test_greeting_does_not_swallow_lowercase_words() -> None:
    parts = split("Добрый день, во вложении.\n")
    assert parts.greeting == "Добрый день,"
    assert parts.own == "во вложении."


def test_a_request_is_not_a_greeting() -> None:
    assert split("Дорогая программа не запускается.").greeting == ""


# --------------------------------------------------------------------------- signature


@pytest.mark.parametrize(
    "signature",
    [
        "-- \nИван Петров\nООО «Ромашка»",
        "С уважением,\nИван Петров",
        "С уважением, Иван",
        "Best regards,\nJohn Smith\nAcme Ltd",
        "Kind regards,\nJohn",
        "Thanks in advance,\nRebecca",
        "Спасибо!\n\nОтправлено с iPhone",
        "Заранее благодарю.",
        "Sent from my iPhone",
        "Отправлено из мобильной Почты Mail.ru",
        "ООО «Ромашка»\nрег. номер 800 123 456\nИНН 7701234567\n\nИванова Анна\nглавный бухгалтер",
        "Шапиро Б.Е., коммерческий директор",
        "Корнилов Эдуард\nмеханик-диспетчер\n+7 (4722) 33-18-50",
        "ИП Шубин Никита Олегович, рег. номер 800 688 419",
    ],
)
def test_signature_is_split_off(signature: str) -> None:
    parts = split(f"Добрый день!\n\n{NEW}\n\n{signature}\n")
    assert parts.own == NEW
    assert parts.signature.splitlines()[0].strip() == signature.splitlines()[0].strip()


def test_a_lone_first_name_under_the_text_signs_it() -> None:
    parts = split("Не проводится авансовый отчёт. Что проверить?\n\nЛена\n")
    assert parts.signature == "Лена"


def test_thanks_before_more_request_text_is_not_a_closing() -> None:
    parts = split("Спасибо!\nОшибка исчезла, но при проведении теперь «Деление на ноль».\n")
    assert "Деление на ноль" in parts.own


def test_a_closing_followed_by_much_text_is_not_a_signature() -> None:
    body = "Спасибо за ответ!\n" + "\n".join(f"Строка {i} описания проблемы." for i in range(15))
    assert split(body).signature == ""


def test_a_short_request_line_above_the_organization_stays_own() -> None:
    parts = split("Не работает печать накладных\nООО «Ромашка»\nрег. номер 800 123 456\n")
    assert parts.own == "Не работает печать накладных"
    assert parts.signature.startswith("ООО «Ромашка»")


def test_a_question_is_never_part_of_the_contact_block() -> None:
    parts = split("Что ещё проверить?\nИван Петров\n")
    assert parts.own == "Что ещё проверить?"


# --------------------------------------------------------------------------- mail from the wild


@pytest.mark.parametrize("sign_off", ["-Jess", "- Jess", "--Bob Smith", "— Иван"])
def test_a_dash_name_sign_off_is_the_signature(sign_off: str) -> None:
    parts = split(f"The item search returns 400 results in random order.\n\n{sign_off}\n")
    assert parts.own == "The item search returns 400 results in random order."
    assert parts.signature.strip() == sign_off


@pytest.mark.parametrize(
    "footer",
    [
        "_______________________________________________\nusers mailing list\n"
        "users@lists.example.org\nhttps://lists.example.org/mailman/listinfo/users\n",
        "You received this message because you are subscribed to the Google Groups "
        "\"erp-users\" group.\nTo unsubscribe from this group, send an email to "
        "erp-users+unsubscribe@googlegroups.com.\n",
    ],
)
def test_a_mailing_list_footer_is_not_own_text(footer: str) -> None:
    parts = split(f"The VAT report shows zero since the update.\n\n{footer}")
    assert parts.own == "The VAT report shows zero since the update."


@pytest.mark.parametrize(
    "sentence",
    [
        "Sent from my desk, the report is still empty after the update.",
        "Sent from the warehouse terminal the documents do not print",
        "Отправлено с компьютера бухгалтерии, где отчёт не формируется.",
    ],
)
def test_a_real_sentence_starting_sent_from_is_kept(sentence: str) -> None:
    parts = split(f"Hello,\n\n{sentence}\n\nThanks,\nAnn")
    assert sentence in parts.own


@pytest.mark.parametrize(
    "footer", ["Sent from my iPhone", "Отправлено из мобильной Почты Mail.ru",
               "Sent from Mail for Windows", "Отправлено с iPad"],
)
def test_a_phone_signature_is_still_cut(footer: str) -> None:
    parts = split(f"The report is empty.\n\n{footer}")
    assert parts.own == "The report is empty."
