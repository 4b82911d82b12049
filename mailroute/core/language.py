"""The language of a letter: ``ru`` or ``en``, for the reply.

The customer's own words decide; Russian text full of English product names
("обновили IFRS 16 module") is still Russian, so Cyrillic needs only a
minority share of the letters to win; quoted program messages do not count.
Too few letters to judge: the subject, then the whole text, then the default.

Pure: no IO.
"""

from __future__ import annotations

import re
from typing import Literal

Language = Literal["ru", "en"]

_CYRILLIC = re.compile(r"[а-яёА-ЯЁ]")
_LATIN = re.compile(r"[a-zA-Z]")
MIN_LETTERS = 12
RUSSIAN_SHARE = 0.35


_QUOTED = re.compile(r"«[^»\n]*»|\"[^\"\n]*\"|“[^”\n]*”|„[^“”\n]*[“”]")


def _verdict(text: str) -> Language | None:
    """Quoted program messages ("Ошибка: …" in an English letter) do not vote."""
    unquoted = _QUOTED.sub(" ", text)
    return _share(unquoted) or _share(text)


def _share(text: str) -> Language | None:
    cyrillic = len(_CYRILLIC.findall(text))
    latin = len(_LATIN.findall(text))
    if cyrillic + latin < MIN_LETTERS:
        return None
    return "ru" if cyrillic / (cyrillic + latin) >= RUSSIAN_SHARE else "en"


def detect(*texts: str | None, default: Language = "ru") -> Language:
    """The language of the first text with enough letters to tell (own text,
    subject, whole text …), else ``default``."""
    for text in texts:
        verdict = _verdict(text or "")
        if verdict is not None:
            return verdict
    return default
