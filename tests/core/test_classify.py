"""Request type and priority by data rules; config overrides; reasons name the rules."""

from __future__ import annotations

import pytest

from mailroute import config
from mailroute.config import ClassificationConfig, ClassificationRule
from mailroute.core.classify import RuleSet, Texts, classify, parse_rules
from mailroute.core.letter import parse
from mailroute.core.verdict import analyze
from mailroute.packaged import analysis_context, builtin_rules
from tests.support.corpus import BLIND_LETTERS, HOLDOUT_LETTERS, OWN_LETTERS
from tests.support.letter import letter


def rules(**section: object) -> RuleSet:
    return RuleSet.build(builtin_rules(), ClassificationConfig.model_validate(section))


def kind(subject: str = "", own: str = "", first_line: str | None = None) -> tuple[str, str]:
    first = own.strip().splitlines()[0] if first_line is None and own.strip() else first_line
    verdict = classify(Texts(subject=subject, own_text=own, first_line=first or ""), rules())
    return verdict.request_type, verdict.priority


# --------------------------------------------------------------------------- markers


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Инцидент — как выгрузить ОСВ в Excel?", "incident"),
        ("ЗНО. Не запускается программа", "service_request"),
        ("ЗНИ: где настраивается нумерация?", "change_request"),
        ("Запрос на изменение: отчёт по сменам", "change_request"),
        ("Запрос на обслуживание: ошибка при входе", "service_request"),
        ("Предложение по усовершенствованию: шаблоны", "improvement"),
        ("Improvement suggestion: bulk approval", "improvement"),
        ("Change request: new report", "change_request"),
        ("Service request - error on login", "service_request"),
        ("Incident: how to export", "incident"),
        ("[ЗНИ] Новый отчёт", "change_request"),
        ("Re: ЗНО: копия договора", "service_request"),
        ("Ввод остатков (инцидент)", "incident"),
    ],
)
def test_a_subject_marker_wins_over_the_wording(subject: str, expected: str) -> None:
    assert kind(subject, "Подскажите, как настроить, и почему выходит ошибка?")[0] == expected


def test_a_marker_on_the_first_line_after_the_greeting() -> None:
    own = "Предложение по усовершенствованию\nНе проводится документ, ошибка."
    assert kind("Шаблоны", own)[0] == "improvement"


def test_marker_words_mid_sentence_are_not_markers() -> None:
    own = "Не регистрируйте это как инцидент, просто вопрос: как настроить рассылку?"
    assert kind("Рассылка", own)[0] == "service_request"
    assert kind("Как оформить запрос на изменение?", "")[0] == "service_request"


def test_the_subject_marker_beats_the_first_line_marker() -> None:
    assert kind("ЗНИ: отчёт", "Инцидент: ошибка")[0] == "change_request"


# --------------------------------------------------------------------------- votes


@pytest.mark.parametrize(
    ("own", "expected"),
    [
        ("При проведении документа выходит ошибка «Поле объекта не обнаружено».", "incident"),
        ("Не проводится авансовый отчёт. Что ещё проверить?", "incident"),
        ("Отчёт формируется пустым, хотя остатки есть.", "incident"),
        ("В октябре считалось правильно, а теперь налог равен нулю.", "incident"),
        ("Подскажите, как настроить права для кладовщика?", "service_request"),
        ("Я забыла пароль, можно ли восстановить доступ?", "service_request"),
        ("Выставьте, пожалуйста, счёт для продления договора сопровождения.", "service_request"),
        ("Просим расторгнуть договор сопровождения с 1 апреля.", "service_request"),
        ("В справке к отчёту опечатка, пример из-за этого не сходится.", "service_request"),
        ("Нужно добавить в карточку договора поле «Юрист». Только для нашей базы.",
         "change_request"),
        ("Просим разработать печатную форму акта по нашему образцу.", "change_request"),
        ("Предлагаю добавить шаблоны платёжек, это пригодится многим.", "improvement"),
        ("It would be great if a future version showed photos of assets.", "improvement"),
        ("The export fails with 'Schema validation error'.", "incident"),
        ("How do I export the trial balance to Excel?", "service_request"),
        ("We need a new report for our database. Please provide a quote.", "change_request"),
    ],
)
def test_wording_votes_for_a_type(own: str, expected: str) -> None:
    assert kind("", own)[0] == expected


def test_imperative_is_not_a_fault() -> None:
    assert kind("", "Не запускайте обработку до понедельника, подскажите как быть?")[0] == (
        "service_request"
    )


def test_a_description_no_rule_knows_leans_to_incident_and_a_question_to_service() -> None:
    assert kind("", "Документы в журнале выделены синим цветом.")[0] == "incident"
    assert kind("", "Документы в журнале выделены синим цветом, так и задумано?")[0] == (
        "service_request"
    )


def test_nothing_to_go_on_gives_the_default_type() -> None:
    assert kind("", "")[0] == "service_request"
    section = {"default_request_type": "incident"}
    assert classify(Texts(), rules(**section)).request_type == "incident"


# --------------------------------------------------------------------------- priority


@pytest.mark.parametrize(
    "own",
    [
        "Срочно! База не открывается, ошибка.",
        "СРОЧНО нужна помощь: закрытие месяца падает с ошибкой.",
        "С утра у всех пользователей ошибка лицензии.",
        "Не можем отгрузить, 1С выдаёт ошибку.",
        "The server is down for all users, error 500.",
        "Payroll fails with an error, please help ASAP.",
        "Остановлена работа склада: не печатаются накладные.",
    ],
)
def test_critical_incidents(own: str) -> None:
    assert kind("", own) == ("incident", "critical")


@pytest.mark.parametrize(
    "own",
    [
        "Не срочно, но при печати съезжает логотип, раньше печаталось правильно.",
        "Это не критично, но в отчёте пропадает строка итогов.",
        "Не рассчитывается компенсация по срочному трудовому договору, ошибка.",
        "После досрочного возврата займа курсовая разница считается неверно.",
        "Ошибка при печати, не у всех пользователей.",
        "Not urgent: the report shows wrong totals.",
        "Ошибка при печати счёта, срочности нет.",
    ],
)
def test_not_critical_incidents(own: str) -> None:
    assert kind("", own) == ("incident", "normal")


def test_only_incidents_can_be_critical() -> None:
    assert kind("", "Срочно пришлите счёт на оплату сопровождения!") == (
        "service_request",
        "normal",
    )
    assert kind("ЗНИ: срочно нужен новый отчёт", "") == ("change_request", "low")
    assert kind("Предложение по усовершенствованию", "Срочно!")[1] == "low"


# --------------------------------------------------------------------------- configuration


def test_builtin_rules_have_unique_stable_names() -> None:
    names = [rule.name for rule in builtin_rules()]
    assert len(names) == len(set(names))
    assert "marker:incident" in names and "priority:urgent" in names


def test_a_config_rule_with_a_builtin_name_replaces_it() -> None:
    own = "Выходит ошибка при проведении."
    assert kind("", own)[0] == "incident"
    replaced = {"name": "type:error-words", "words": ["ошибк*"],
                "sets": {"request_type": "service_request", "weight": 5}}
    verdict = classify(Texts(own_text=own), rules(rules=[replaced]))
    assert verdict.request_type == "service_request"
    assert [h.rule.name for h in verdict.type_hits] == ["type:error-words"]


def test_a_disabled_rule_does_not_count() -> None:
    own = "Срочно: при проведении выходит ошибка."
    assert classify(Texts(own_text=own), rules()).priority == "critical"
    assert classify(Texts(own_text=own), rules(disabled=["priority:urgent"])).priority == "normal"


def test_a_config_rule_can_look_at_a_header() -> None:
    extra = {"name": "priority:importance-high", "fields": ["header:importance"],
             "regex": "^high$", "sets": {"priority": "critical"}}
    texts = Texts(own_text="Ошибка при проведении.", headers={"importance": "High"})
    assert classify(texts, rules()).priority == "normal"
    assert classify(texts, rules(rules=[extra])).priority == "critical"


def test_config_rules_are_validated() -> None:
    with pytest.raises(ValueError, match="needs words, phrases or regex"):
        ClassificationRule.model_validate({"name": "x", "sets": {"priority": "critical"}})
    with pytest.raises(ValueError, match="unknown field"):
        ClassificationRule.model_validate(
            {"name": "x", "fields": ["body"], "words": ["a"], "sets": {"priority": "critical"}}
        )
    with pytest.raises(ValueError, match="bad regular expression"):
        ClassificationRule.model_validate(
            {"name": "x", "regex": "(", "sets": {"priority": "critical"}}
        )


def test_rules_file_schema_matches_config_schema() -> None:
    text = '[[rules]]\nname = "type:x"\nwords = ["икс*"]\nsets = { request_type = "incident" }\n'
    (rule,) = parse_rules(text)
    assert rule.fields == ["subject", "own_text"] and rule.sets.weight == 1.0


def test_config_file_overrides_reach_the_analysis(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "config.toml"
    path.write_text(
        '[classification]\ndisabled = ["priority:urgent"]\n\n'
        '[[classification.rules]]\nname = "type:error-words"\nwords = ["ошибк*"]\n'
        'sets = { request_type = "change_request", weight = 9 }\n',
        encoding="utf-8",
    )
    context = analysis_context(config.load(path, environ={}))
    result = analyze(letter("Срочно: выходит ошибка при записи.\nООО «Ромашка»"), context)
    assert (result.request_type, result.priority) == ("change_request", "low")
    assert "type:error-words" in [r.rule for r in result.reasons]


def test_reasons_name_the_deciding_rules() -> None:
    context = analysis_context(config.Config())
    result = analyze(
        letter("Срочно! База не открывается ни на одном компьютере, ошибка.", subject="Инцидент"),
        context,
    )
    by_rule = {r.rule: r for r in result.reasons}
    assert by_rule["marker:incident"].sets == "request_type=incident"
    assert "subject" in by_rule["marker:incident"].detail
    assert by_rule["priority:urgent"].sets == "priority=critical"
    assert "missing:organization" in by_rule and "route:default" in by_rule


# --------------------------------------------------------------------------- written blind


@pytest.mark.parametrize(
    ("subject", "own", "expected"),
    [
        # a feature that does not exist, phrased as "не работает" / "не принимает"
        ("этикетки при приемке", "нужно чтобы при приёмке печаталась наша этикетка. Такой "
         "этикетки в программе нет. Сделайте нам пожалуйста, без неё не принимает сеть.",
         ("change_request", "low")),
        # urgency words in a change request stay low
        ("URGENT: change request for Kazakhstan VAT", "From 2025 we need an additional VAT "
         "rate for our branch. This is urgent. Please prepare the modification for our "
         "configuration and tell us the cost.", ("change_request", "low")),
        ("Depreciation method", "Please modify the fixed asset module for us so that "
         "depreciation is calculated from engine hours, and send an estimate.",
         ("change_request", "low")),
        # an improvement phrased as a complaint
        ("the search is painful", "honestly the item search is painful. Not broken, it just "
         "could be so much better for everyone - maybe rank by stock?", ("improvement", "low")),
        ("Why five clicks to print?", "Genuine question: why does printing take five clicks? "
         "A one-click print would make life easier for every customer. Take it as friendly "
         "feedback.", ("improvement", "low")),
        # "Вопрос" over a body describing wrong results
        ("Вопрос по книге покупок", "Часть счетов-фактур попадает в книгу дважды. В 3 "
         "квартале такого не было, настройки мы не меняли. Подскажите, в чём дело?",
         ("incident", "normal")),
        # contract termination in English
        ("Ending our support subscription", "Please take this email as our notice to "
         "terminate the support contract at the end of the current term.",
         ("service_request", "normal")),
        ("Invoice received twice", "We received invoice INV-3318 for support twice. Is it the "
         "same invoice or do we owe two payments?", ("service_request", "normal")),
        ("Read-only access for a new accountant", "How do I set her up so she can see all "
         "ledgers but cannot post anything?", ("service_request", "normal")),
    ],
)
def test_letters_as_other_people_write_them(
    subject: str, own: str, expected: tuple[str, str]
) -> None:
    assert kind(subject, own) == expected


@pytest.mark.parametrize(
    "own",
    [
        "Сегодня выплата заработной платы, а НДФЛ считается без вычетов. Ведомости отправить "
        "не можем.",
        "Сегодня последний день сдачи 6-НДФЛ, а отчёт выдаёт ошибку при проверке.",
        "Отчёт выдаёт ошибку. Без проверки отчёт не отправляется. Горит!",
        "The payroll calculation crashes every time. Salaries must be paid today.",
        "The database will not open - all 14 stores get an error.",
    ],
)
def test_a_deadline_today_or_gorit_inside_an_incident_is_critical(own: str) -> None:
    assert kind("", own) == ("incident", "critical")


def test_a_deadline_a_week_away_stays_normal() -> None:
    own = ("В расчётных листках у всех сотрудников аванс удержан два раза. До выплаты "
           "зарплаты ещё неделя, но хотим разобраться заранее.")
    assert kind("Вопрос по расчётному листку", own) == ("incident", "normal")


def test_rules_skipped_by_their_keys_could_not_have_matched() -> None:
    """The key pre-filter only skips rules that would not match: every rule is tried on
    every letter we have, and one the filter rules out never matches."""
    rules = analysis_context(config.Config()).rules
    skipped = tried = 0
    for path in sorted([*OWN_LETTERS.glob("*.eml"), *BLIND_LETTERS.glob("*.eml"),
                        *HOLDOUT_LETTERS.glob("*.eml")]):
        parsed = parse(path.read_bytes())
        text = parsed.text
        texts = Texts(subject=parsed.subject or "", first_line=text.strip().split("\n")[0],
                      own_text=text, signature=text[-300:], text=text,
                      headers=parsed.headers)
        present = rules.present(texts)
        for rule in rules.rules:
            tried += 1
            if not rule.may_match(present):
                skipped += 1
                assert rule.match(texts) is None, (path.name, rule.spec.name)
    assert tried > 10_000 and skipped > tried / 2  # the filter does skip most rules
