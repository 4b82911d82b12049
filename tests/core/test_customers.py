"""The customer registry: unknown numbers, names from the registry, foreign domains."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailroute import config
from mailroute.config import read_csv
from mailroute.core.verdict import AnalysisContext, analyze
from mailroute.errors import ConfigError
from mailroute.packaged import analysis_context
from tests.support.letter import letter

TEXT = "Добрый день!\nНе проводится документ реализации, выходит ошибка.\n\nООО «Ромашка»\n{reg}\n"
REGISTRY = {
    "organizations": [
        {"name": "ООО «Ромашка-Трейд»", "registration_numbers": ["800-123-456"],
         "domains": ["romashka.ru"], "tier": "gold"}
    ]
}


def context(registry: dict[str, object] | None = None) -> AnalysisContext:
    return analysis_context(config.Config.model_validate({"registry": registry or {}}))


def test_without_a_registry_the_letter_is_taken_as_written() -> None:
    result = analyze(letter(TEXT.format(reg="рег. номер 800 999 999")), context())
    assert (result.organization, result.registration_number) == ("ООО «Ромашка»", "800999999")
    assert result.missing == ()


def test_an_unknown_number_counts_as_missing_and_says_so() -> None:
    result = analyze(letter(TEXT.format(reg="рег. номер 800 999 999")), context(REGISTRY))
    assert result.registration_number is None
    assert result.missing == ("registration_number",)
    assert result.reply == "clarification"
    assert result.unknown_registration == "800999999"
    unknown = [r for r in result.reasons if r.rule == "registry:unknown-number"]
    assert unknown and "800999999" in unknown[0].detail


def test_a_known_number_brings_the_registry_name() -> None:
    found = letter(TEXT.format(reg="рег. номер 800 123 456"), sender="a@romashka.ru")
    result = analyze(found, context(REGISTRY))
    assert (result.organization, result.registration_number) == ("ООО «Ромашка-Трейд»", "800123456")
    assert result.missing == ()
    assert "registry:foreign-domain" not in [r.rule for r in result.reasons]


def test_a_known_number_names_the_organization_the_letter_did_not() -> None:
    found = letter("Не проводится документ, ошибка.\nрег. номер 800123456", sender="a@romashka.ru")
    result = analyze(found, context(REGISTRY))
    assert result.organization == "ООО «Ромашка-Трейд»" and result.missing == ()


def test_a_sender_from_another_domain_is_flagged() -> None:
    found = letter(TEXT.format(reg="рег. номер 800 123 456"), sender="someone@gmail.com")
    result = analyze(found, context(REGISTRY))
    flagged = [r for r in result.reasons if r.rule == "registry:foreign-domain"]
    assert flagged and "gmail.com" in flagged[0].detail


def test_registry_tier_reaches_routing() -> None:
    settings = {"registry": REGISTRY,
                "routing": {"rules": [{"name": "gold", "tier": ["gold"], "queue": "vip"}]}}
    ctx = analysis_context(config.Config.model_validate(settings))
    result = analyze(letter(TEXT.format(reg="рег. номер 800123456"), sender="a@romashka.ru"), ctx)
    assert result.queue == "vip"


def test_csv_registry_is_loaded_with_the_config(tmp_path: Path) -> None:
    (tmp_path / "customers.csv").write_text(
        "name,registration_numbers,domains,tier\n"
        "ООО «Ромашка-Трейд»,800123456;800123457,romashka.ru;romashka.com,gold\n"
        "АО «Вега»,800 555 666,,\n",
        encoding="utf-8",
    )
    (tmp_path / "config.toml").write_text('[registry]\ncsv = "customers.csv"\n', "utf-8")
    loaded = config.load(tmp_path / "config.toml", environ={})
    orgs = loaded.registry.organizations
    assert [o.name for o in orgs] == ["ООО «Ромашка-Трейд»", "АО «Вега»"]
    assert orgs[0].registration_numbers == ["800123456", "800123457"]
    assert orgs[1].registration_numbers == ["800555666"] and orgs[1].tier == "standard"
    found = letter(TEXT.format(reg="рег. номер 800 123 457"))
    result = analyze(found, analysis_context(loaded))
    assert result.organization == "ООО «Ромашка-Трейд»"


def test_a_bad_csv_row_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text("name,registration_numbers\nООО «А»,800123456\nООО «Б»,12AB\n", "utf-8")
    with pytest.raises(ConfigError, match=r"customers.csv:3"):
        read_csv(path)


def test_a_missing_csv_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[registry]\ncsv = "nope.csv"\n', "utf-8")
    with pytest.raises(ConfigError, match=r"registry\.csv"):
        config.load(tmp_path / "config.toml", environ={})
