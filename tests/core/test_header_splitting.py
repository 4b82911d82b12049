"""Address lists and structured headers split as the character-by-character scanners
they replaced split them.

``_split_addresses`` and ``_split_params`` now visit only the characters that can change
their state (quotes, backslashes, comments, angle brackets, separators) and slice the
runs between. The scanners below are the earlier code, kept as the definition: every
string of those characters and a few others must split the same way under both.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailroute.core.letter.addresses import _split_addresses
from mailroute.core.letter.headers import _split_params


def _addresses_by_character(value: str) -> list[str]:
    items: list[str] = []
    buf: list[str] = []
    quoted = False
    angle = 0
    comment = 0
    escape = False
    for ch in value:
        if escape:
            buf.append(ch)
            escape = False
            continue
        if ch == "\\" and (quoted or comment):
            escape = True
        elif ch == '"' and not comment:
            quoted = not quoted
        elif not quoted:
            if ch == "(":
                comment += 1
            elif ch == ")" and comment:
                comment -= 1
            elif ch == "<" and not comment:
                angle += 1
            elif ch == ">" and angle:
                angle -= 1
            elif ch in ",;" and not angle and not comment:
                items.append("".join(buf))
                buf = []
                continue
        buf.append(ch)
    items.append("".join(buf))
    return [item for item in (i.strip() for i in items) if item]


def _params_by_character(value: str) -> list[str]:
    parts: list[str] = []
    buf: list[str] = []
    quoted = False
    escape = False
    for ch in value:
        if escape:
            buf.append(ch)
            escape = False
            continue
        if ch == "\\" and quoted:
            escape = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    parts.append("".join(buf))
    return parts


_MEANINGFUL = '\\"()<>,; a@.\u044f\udcff'  # every special, a space, letters, a raw byte


@pytest.mark.parametrize("value", [
    '"Doe, John" <john@example.com>, jane@example.com',
    '"a\\"b, c" <x@y>; (comment, with \\) paren) z@w',
    'a@b (unclosed, comment',
    '"unclosed, quote <a@b>',
    'trailing backslash \\',
    '"quoted backslash at end \\',
    '<<a@b>, c@d>, e@f',
    ', ; ,',
    '',
])
def test_known_address_lists_split_as_before(value: str) -> None:
    assert _split_addresses(value) == _addresses_by_character(value)


@pytest.mark.parametrize("value", [
    'text/plain; charset="utf-8"; format=flowed',
    'attachment; filename="a;b\\";c.txt"; size=3',
    'multipart/mixed; boundary="--=_x;y"',
    'inline; filename="unclosed;',
    'x; "\\',
    '',
])
def test_known_parameter_lists_split_as_before(value: str) -> None:
    assert _split_params(value) == _params_by_character(value)


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=_MEANINGFUL, max_size=60))
def test_any_address_list_splits_as_before(value: str) -> None:
    assert _split_addresses(value) == _addresses_by_character(value)


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=_MEANINGFUL, max_size=60))
def test_any_parameter_list_splits_as_before(value: str) -> None:
    assert _split_params(value) == _params_by_character(value)


def test_long_seeded_strings_split_as_before() -> None:
    """Longer strings than hypothesis builds, dense in specials (escapes next to escapes,
    quotes inside comments), from a fixed seed."""
    generator = random.Random(20261207)
    for _ in range(5000):
        value = "".join(generator.choice(_MEANINGFUL) for _ in range(generator.randint(0, 400)))
        assert _split_addresses(value) == _addresses_by_character(value)
        assert _split_params(value) == _params_by_character(value)
