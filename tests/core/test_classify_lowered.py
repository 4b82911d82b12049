"""A rule's regex matched in the lower-cased text finds what IGNORECASE finds in the text.

``classify.RuleRegex`` matches a regex without IGNORECASE in a lower-cased copy of the
text when ``case_free`` says the regex allows it and ``_lowered`` says the text does: the
engine can then skip to where a match may begin (bench/README, seventeenth round). The
IGNORECASE match on the text as written is the definition; these tests hold the fast way
to it, letter by letter over the alphabet it is used on, and on whole texts.
"""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailroute.config import ClassificationRule
from mailroute.core.classify import Rule, RuleRegex, _lowered, case_free
from mailroute.packaged import builtin_rules

# The letters _lowered lets through: Latin-1 but µ, and Cyrillic.
PLAIN = [chr(c) for c in (*range(0x100), *range(0x400, 0x500)) if c != 0xB5]
# Letters IGNORECASE pairs otherwise than str.lower does (or that lower-case to two).
OTHER = ["ſ", "ı", "\u212a", "İ", "\u1c80", "\u1c81", "µ", "ς", "ẞ", "Ÿ", "ϐ"]
BUILTIN = [rule for rule in builtin_rules() if rule.regex]


def rule_of(pattern: str) -> Rule:
    return Rule.compile(ClassificationRule(name="test:rule", regex=pattern,
                                           sets={"request_type": "incident"}))


def both_ways(rule: Rule, text: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    assert rule.regex is not None
    definition = [m.span() for m in rule.regex.insensitive.finditer(text)]
    return list(rule.regex.spans(text)), definition


def test_every_builtin_regex_is_matched_lower_cased() -> None:
    slow = [rule.name for rule in BUILTIN if RuleRegex(rule.regex or "").lowered is None]
    assert slow == []


@pytest.mark.parametrize("pattern", [
    r"ошибк\w*", r"[а-яё]+\b", r"[^\S\n]*+(?:зно|зни)\b", r"«[^»]{0,40}»", r"\bне\s+\w+",
    r"[a-z0-9._-]+@", r"(?:error|ошибка)[^.!?\n]{0,40}?[«\"“]",
])
def test_case_free_takes_patterns_of_lower_case_letters(pattern: str) -> None:
    assert case_free(pattern)


@pytest.mark.parametrize("pattern", [
    "Ошибка", "ERROR", r"[A-Z]{2}\d+", r"[0-a]", r"[!-~]", r"(?-i:ООО)", r"(?i)ошибка",
    r"\u0410", r"\x41", r"\N{CYRILLIC CAPITAL LETTER A}", r"\101", r"[\--z]", "μ", "ſ",
    "(?P<Name>x)", r"[ά-ώ]",
])
def test_case_free_refuses_what_lower_casing_could_change(pattern: str) -> None:
    assert not case_free(pattern)


def test_over_the_plain_alphabet_lower_casing_pairs_letters_as_ignorecase_does() -> None:
    """Each letter of a pattern against each letter of a text, and the classes."""
    lower = [p for p in PLAIN if p == p.lower()]
    for text_char in PLAIN:
        folded = text_char.lower()
        assert len(folded) == 1 and _lowered(text_char) == folded, repr(text_char)
        for pattern_char in lower:
            insensitive = re.fullmatch(re.escape(pattern_char), text_char, re.IGNORECASE)
            assert (insensitive is not None) == (folded == pattern_char), (
                pattern_char, text_char)
        for cls in (r"\w", r"\d", r"\s", r"[а-я]", r"[a-z]", r"[^а-яё]", r"[а-яёa-z0-9]"):
            insensitive = re.fullmatch(cls, text_char, re.IGNORECASE)
            assert (insensitive is not None) == (re.fullmatch(cls, folded) is not None), (
                cls, text_char)


@pytest.mark.parametrize("letter", OTHER)
def test_a_text_with_another_letter_keeps_ignorecase(letter: str) -> None:
    assert _lowered(f"Ошибка {letter} в программе") is None


def test_no_character_the_guard_lets_through_pairs_with_a_pattern_letter() -> None:
    """Every character of Unicode outside the plain alphabet that ``_lowered`` lets
    through (a mark, a symbol, a digit of another script) neither matches a lower-case
    plain letter under IGNORECASE nor lower-cases to one: the pattern's letters and
    classes, all plain, see it alike either way."""
    letters = "".join(p for p in PLAIN if p == p.lower() and p.isalpha())
    any_letter = re.compile(f"[{re.escape(letters)}]", re.IGNORECASE)
    plain = set(PLAIN)
    for code in range(0x110000):
        char = chr(code)
        if char in plain or 0xD800 <= code < 0xE000 or _lowered(char) is None:
            continue
        folded = char.lower()
        assert any_letter.fullmatch(char) is None, hex(code)
        assert folded == char or folded not in plain, hex(code)
        assert (re.fullmatch(r"\w", char) is None) == (re.fullmatch(r"\w", folded) is None)


FRAGMENTS = [
    "Ошибка", "ОШИБКА", "ошибка", "пишет", "Пишет", "ВЫДАЁТ", "выдает", "сообщение",
    "Сообщениями", "окно", "Error", "ERROR", "message", "Shows", "не работает",
    "НЕ ЗАГРУЖАЕТСЯ", "Не Проводится", "перестал", "раньше", "Раньше всё работало",
    "вчера", "в Марте", "правильно", "после обновления", "doesn't work", "Does Not Open",
    "stopped Working", "yesterday", "worked", "ЗНО", "зни:", "Инцидент", "Incident",
    "Срочно", "ВОПРОС", "?", "«", "»", "\"", "“", "”", ".", ",", "!", "\n", " ", "  ",
    "—", "№", "1С", "2024", "ſ", "ı", "\u212a", "İ", "\u1c80", "µ", "ς", "ẞ",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40))
def test_builtin_regexes_find_the_same_spans_either_way(parts: list[str]) -> None:
    text = " ".join(parts)
    for spec in BUILTIN:
        fast, definition = both_ways(Rule.compile(spec), text)
        assert fast == definition, (spec.name, text)


def test_seeded_texts_find_the_same_spans_either_way() -> None:
    """Mixed case applied letter by letter, and letters of any script now and then."""
    rules = [Rule.compile(spec) for spec in BUILTIN]
    rng = random.Random(1604)
    found = 0
    for _ in range(1500):
        words = [rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 30))]
        text = "".join(
            ch.upper() if rng.random() < 0.3 else ch for ch in " ".join(words)
        )
        if rng.random() < 0.1:
            text += chr(rng.randint(0x100, 0x2FFF))
        for rule in rules:
            fast, definition = both_ways(rule, text)
            assert fast == definition, (rule.spec.name, text)
            found += bool(definition)
    assert found > 1500  # the texts do match: the comparison is not of empty lists
