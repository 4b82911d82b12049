"""The customer's organization and licence registration number."""

from __future__ import annotations

import pytest

from mailroute.core.extract import (
    candidates,
    find_organization,
    find_registration_number,
    normalize_org,
)


def org(own: str = "", signature: str = "", subject: str = "", vendor: str = "") -> str | None:
    vendors = frozenset({normalize_org(vendor)}) if vendor else frozenset()
    sources = [("own text", own), ("signature", signature), ("subject", subject)]
    found = find_organization(sources, vendors)
    return found.value if found else None


def reg(own: str = "", signature: str = "", subject: str = "") -> str | None:
    sources = [("own text", own), ("signature", signature), ("subject", subject)]
    found = find_registration_number(sources)
    return found.value if found else None


# --------------------------------------------------------------------------- organization


@pytest.mark.parametrize(
    "name",
    [
        "ООО «Ромашка»",
        'ООО "Калужская мебельная фабрика"',
        "АО «Уфимский хлебозавод № 3»",
        "ПАО «Нижнекамский шинный завод»",
        "ЗАО «Сибнефтесервис»",
        "ОАО «Курганхлебпром»",
        "НАО «Северный металл»",
        "ИП Сотникова Эвелина Робертовна",
        "ИП Гусейнов Р.А.",
        "ФГУП «Уралавиаремонт»",
        "МУП «Тверьтеплосервис»",
        "ГУП «Водоканал Тамбова»",
        "ГБУ «Центр социального обслуживания»",
        "АНО «Центр развития»",
        "НКО «Фонд поддержки»",
        "МБОУ «Средняя общеобразовательная школа» № 12",
        "ООО «Торговый дом «Восток»»",
        "Общество с ограниченной ответственностью «Вега»",
        "Индивидуальный предприниматель Кузнецова Алла Петровна",
        "Caspian Drilling Services Ltd",
        "Nordic Pharma Rus LLC",
        "Meridian Logistics GmbH",
        "Harbor Foods Inc.",
        "Polar Fisheries JSC",
        "Atlas Trading LLP",
        "Shenzhen Bright Co., Ltd.",
        'OOO "Promtekh"',
        "LLC «Romashka»",
    ],
)
def test_organization_on_its_own_line_in_the_signature(name: str) -> None:
    assert org(signature=f"Иванов Иван\n{name}\nрег. номер 800 123 456") == name


def test_short_foreign_suffixes_only_on_a_line_of_their_own() -> None:
    assert org(signature="Steven Clarke\nFjord Shipping AS\nRegistration number 8105-330-118") == (
        "Fjord Shipping AS"
    )
    assert org(own="PLEASE HELP AS SOON AS POSSIBLE, THE SERVER IS DOWN") is None


def test_a_sentence_period_is_not_part_of_the_name() -> None:
    assert org(own="This is Tom from Hartley Builders Ltd. Our timesheets are wrong.") == (
        "Hartley Builders Ltd"
    )


def test_organization_before_the_number_on_one_line() -> None:
    assert org(signature="ИП Шубин Никита Олегович, рег. номер 800 688 419") == (
        "ИП Шубин Никита Олегович"
    )


@pytest.mark.parametrize(
    ("own", "name"),
    [
        ("Организация: ООО «ТехноСнаб», ИНН 7725123456.", "ООО «ТехноСнаб»"),
        ("Пришлите счёт повторно. Организация ООО «Дербент-Трейд».", "ООО «Дербент-Трейд»"),
        ("Мы, ООО «Гранит», просим разработать печатную форму.", "ООО «Гранит»"),
        ("Наша организация — ООО «Тамбовские сады», рег. номер 800 557 301.",
         "ООО «Тамбовские сады»"),
        ("Company: Redwood Mining Inc", "Redwood Mining Inc"),
        ("We, Nordic Pharma Rus LLC, need help.", "Nordic Pharma Rus LLC"),
    ],
)
def test_organization_introduced_as_the_senders(own: str, name: str) -> None:
    assert org(own=own) == name


def test_organization_in_the_subject() -> None:
    assert org(subject="Забыла пароль — ООО «Мир упаковки»") == "ООО «Мир упаковки»"


@pytest.mark.parametrize(
    "own",
    [
        "Поставщик ООО «Металлторг» прислал УПД, а загрузка не проходит.",
        "Выписка от АО «Альфа-Банк» не загружается.",
        "У другого нашего клиента, ЗАО «Самарский элеватор», такое было.",
        "Мы купили лицензию у вашего партнёра ООО «Софтсервис».",
        "We bought the licence through your partner SoftBridge Ltd in 2024.",
        "Our supplier Acme Ltd sends invoices in a new format.",
        "Выписка из ПАО Сбербанк не загружается.",
    ],
)
def test_organizations_mentioned_in_passing_are_not_the_customer(own: str) -> None:
    assert org(own=own) is None


def test_the_senders_organization_beats_one_mentioned_in_passing() -> None:
    own = "Поставщик ООО «Металлторг» прислал УПД, а загрузка не проходит."
    assert org(own=own, signature="ООО «Завод Электроприбор»") == "ООО «Завод Электроприбор»"


def test_a_bank_in_the_bank_details_is_not_the_customer() -> None:
    signature = "ООО «Речной порт»\nр/с 40702810500000012345 в ПАО Сбербанк"
    assert org(signature=signature) == "ООО «Речной порт»"


def test_a_bank_in_an_english_signature_is_not_the_customer() -> None:
    signature = "Acme Foods Ltd\nAccount 12345678 at Barclays Bank PLC"
    assert org(signature=signature) == "Acme Foods Ltd"


def test_a_name_containing_bank_is_no_bank() -> None:
    """"Southbank" is a place: only "bank" as a word (or Russian "-банк") is a bank."""
    assert candidates([("signature", "Southbank Retail Pty Ltd")])[0].why == (
        "on a line of its own in the signature")


def test_the_vendor_is_not_the_customer() -> None:
    assert org(signature="ООО «Вендор Софт»", vendor="ООО «Вендор Софт»") is None


def test_inn_alone_names_no_organization() -> None:
    assert org(signature="ИНН 6670123456\nрег. номер 800 520 614") is None


def test_normalize_ignores_quotes_case_and_spaces() -> None:
    assert normalize_org('  ООО   "Ромашка" ') == normalize_org("ооо «Ромашка»")


# --------------------------------------------------------------------------- registration number


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("рег. номер 800 812 640", "800812640"),
        ("Регистрационный номер 8101 226 473", "8101226473"),
        ("рег.№ 800 936 118", "800936118"),
        ("рег № 800 904 117", "800904117"),
        ("рег.номер 800 578 264", "800578264"),
        ("рег. номер: 81-0220-6459", "8102206459"),
        ("Наш регистрационный номер — 800 947 283.", "800947283"),
        ("Рег. номер лицензии 800 441 380", "800441380"),
        ("Рег. номер договора 800 447 193", "800447193"),
        ("регистрационный № 800 812 004", "800812004"),
        ("рег. N 800 339 106", "800339106"),
        ("Registration number: 8109-210-336", "8109210336"),
        ("Reg. No. 8103-674-219", "8103674219"),
        ("reg. no 800-902-311", "800902311"),
        ("Reg # 800 733 190", "800733190"),
        ("Registration No.: 8109-006-552", "8109006552"),
        ("Licence registration number 8101-330-772", "8101330772"),
        ("Our registration number is 800 615 222.", "800615222"),
        ("РЕГ. НОМЕР 800 100 200", "800100200"),
    ],
)
def test_registration_number_phrasings(text: str, number: str) -> None:
    assert reg(signature=f"ООО «Ромашка»\n{text}\nИНН 7701234567") == number


@pytest.mark.parametrize(
    "text",
    [
        "ИНН 3123098765",
        "КПП 402801001",
        "ОГРН 1027700132195",
        "р/с 40702810735000012345",
        "тел. +7 (4722) 33-18-50",
        "Счёт № 260012377 от 14.01.2026",
        "Договор сопровождения № 03-ИТС/2021",
        "Заказ № 800123456",
        "Версия платформы 8.3.23.2040",
        "Рег. номер в СФР 087-123-456789",
        "Регистрационный номер ПФР 087-123-456789",
        "Регистрационный номер ККТ 0001234567012345",
        "Основной государственный регистрационный номер 1027700132195",
        "рег. номер: уточню позже",
    ],
)
def test_other_numbers_are_never_the_registration_number(text: str) -> None:
    assert reg(own=f"Добрый день. {text}.") is None


def test_own_text_first_then_signature_then_subject() -> None:
    assert reg(own="рег. номер 800 111 111", signature="рег. номер 800 222 222") == "800111111"
    assert reg(subject="Ошибка, рег. номер 800 333 333") == "800333333"


# --------------------------------------------------------------------------- written blind


@pytest.mark.parametrize(
    ("signature", "name"),
    [
        ('ФГУП «НПО «Техномаш»»', "ФГУП «НПО «Техномаш»»"),
        ('ФГУП "НПО "Техномаш""', 'ФГУП "НПО "Техномаш""'),
        ("Nordlicht Logistik GmbH & Co. KG", "Nordlicht Logistik GmbH & Co. KG"),
        ("Nordvik Bygg AB", "Nordvik Bygg AB"),
        ("Southern Cross Mining Pty Ltd", "Southern Cross Mining Pty Ltd"),
        ("Suomen Puu Oy", "Suomen Puu Oy"),
        ("Lumière Distribution S.A.", "Lumière Distribution S.A."),
        ("Porto Atlântico Lda", "Porto Atlântico Lda"),
    ],
)
def test_nested_quotes_and_foreign_legal_forms(signature: str, name: str) -> None:
    assert org(signature=f"Иван Петров\n{signature}\nрег. номер 800123456") == name


def test_gmbh_and_co_kg_after_a_label() -> None:
    signature = "Company: Nordlicht Logistik GmbH & Co. KG\nRegistration number: 800-229-417"
    assert org(signature=signature) == "Nordlicht Logistik GmbH & Co. KG"


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("Operations Manager, Pinecrest Trading LLC", "Pinecrest Trading LLC"),
        ("Head of IT, Dunmore Engineering Ltd", "Dunmore Engineering Ltd"),
        ("Finance Lead, Ganges Textiles UK Ltd", "Ganges Textiles UK Ltd"),
        ("Treasury, Fjord Seafood AS", "Fjord Seafood AS"),
    ],
)
def test_a_job_title_glued_to_the_name_is_dropped(line: str, name: str) -> None:
    assert org(signature=f"Tom Alvarez\n{line}\nregistration number 800-604-118") == name


def test_an_outsourcer_writing_for_a_named_client_gives_the_client() -> None:
    own = (
        "Я бухгалтер на аутсорсе, компания ООО «Бухэксперт», веду учёт нашего клиента — "
        "ИП Гаврилова Елена Сергеевна. Лицензия оформлена на неё."
    )
    assert org(own=own, signature="Анна\nООО «Бухэксперт»") == "ИП Гаврилова Елена Сергеевна"
    partner = (
        "Мы — ваш партнёр ООО «Интегра Софт», сопровождаем клиента АО «Кировский молочный "
        "комбинат» (рег. номер их лицензии 800-297-663)."
    )
    assert org(own=partner) == "АО «Кировский молочный комбинат»"


def test_a_client_mentioned_by_its_own_customer_stays_in_passing() -> None:
    """Without an outsourcer or partner saying so, "наш клиент" is the sender's customer."""
    own = "Наш клиент ООО «Альфа» вернул товар. Как оформить возврат?"
    assert org(own=own, signature="Иванова\nООО «Ромашка»") == "ООО «Ромашка»"


def test_the_vendors_support_team_is_not_the_customer() -> None:
    own = "Добрый день! Вчера служба поддержки ООО «СофтВендор» обещала перезвонить."
    assert org(own=own, signature="Иванова\nАО «Заря»") == "АО «Заря»"
    assert org(own=own) is None


def test_a_group_of_companies_gives_way_to_the_legal_entity() -> None:
    signature = "Иванов И.И.\nГК «Протон»\nООО «Протон-Сервис»\nрег. номер 800123456"
    assert org(signature=signature) == "ООО «Протон-Сервис»"


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("Registration number: 800 - 555 - 1234", "8005551234"),
        ("рег. №: 800 – 141 – 552", "800141552"),
        ("Рег. № лиц. соглашения: 800 911 406", "800911406"),
        ("рег. номер её лицензии 800 612 078", "800612078"),
        ("рег. номер их лицензии 800-297-663", "800297663"),
    ],
)
def test_registration_numbers_as_people_write_them(text: str, number: str) -> None:
    assert reg(signature=text) == number
