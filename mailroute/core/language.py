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


# A quotation: an opening mark, then the first of its closing marks on the same line.
_OPENING = re.compile("[«\"“„]")
_CLOSING = {
    "«": re.compile("»"), '"': re.compile('"'), "“": re.compile("”"), "„": re.compile("[“”]")
}


def _without_quotations(text: str) -> str:
    """``text`` with each quotation replaced by a space, as ``re.sub`` with
    ``«[^»\\n]*»|"[^"\\n]*"|“[^”\\n]*”|„[^“”\\n]*[“”]`` would, in one pass.

    That ``re.sub`` searched to the end of the line from every unclosed mark, so a
    line of ``ООО «`` repeated cost its length squared (12 s for 360 KB).  Here a
    line found to hold no closing mark for a kind is not searched again for it."""
    pieces: list[str] = []
    kept_from = position = 0
    line_end = -1
    unclosed_until: dict[str, int] = {}  # mark → end of the line found without its closer
    while (opening := _OPENING.search(text, position)) is not None:
        start, mark = opening.start(), opening.group()
        if start > line_end:
            line_end = text.find("\n", start)
            line_end = len(text) if line_end < 0 else line_end
        closing = None
        if unclosed_until.get(mark) != line_end:
            closing = _CLOSING[mark].search(text, start + 1, line_end)
        if closing is None:
            unclosed_until[mark] = line_end
            position = start + 1
            continue
        pieces += [text[kept_from:start], " "]
        kept_from = position = closing.end()
    pieces.append(text[kept_from:])
    return "".join(pieces)


def _verdict(text: str) -> Language | None:
    """Quoted program messages ("Ошибка: …" in an English letter) do not vote."""
    unquoted = _without_quotations(text)
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
