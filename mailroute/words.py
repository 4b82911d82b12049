"""Word-form matching shared by the classification and routing rules.

Rules are written by people, not by regex experts, so a rule lists words the way a
person would: ``"ошибк*"`` (any word starting with the stem, which covers Russian
endings: ошибка, ошибки, ошибкой), ``"срочно"`` (exactly this form), or phrases of
such words: ``"не можем отгрузить"``, ``"база ... не открывается"`` (``...`` stands for
up to three other words). Matching works on tokens, so punctuation, line breaks
and case do not matter, and ``"досрочный"`` never matches the stem ``"срочн*"``.

Pure: no IO.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

_TOKEN = re.compile(r"[0-9a-zа-я]+")
GAP = "..."
MAX_GAP = 3
NEGATIONS = frozenset({"не", "нет", "ни", "без", "not", "no", "never", "nothing", "without"})


def fold(text: str) -> str:
    """Case-folded text with ё spelled е: the form every comparison uses."""
    return text.casefold().replace("ё", "е")


def tokens(text: str) -> list[str]:
    """The words of ``text``, folded; digits count as words (``1с`` is one)."""
    return _TOKEN.findall(fold(text))


@dataclass(frozen=True)
class Index:
    """A text's words with where each starts, and where each distinct word occurs:
    every rule looks at the same text, so it is split once, not once per rule."""

    words: tuple[str, ...]
    starts: tuple[int, ...]
    positions: Mapping[str, tuple[int, ...]]

    def token_at(self, offset: int) -> int:
        """The index of the first token starting at or after character ``offset``."""
        return bisect_right(self.starts, offset - 1)


@lru_cache(maxsize=32)
def index(text: str) -> Index:
    """The (cached) word index of ``text``."""
    found = list(_TOKEN.finditer(fold(text)))
    positions: dict[str, list[int]] = {}
    for i, match in enumerate(found):
        positions.setdefault(match.group(0), []).append(i)
    return Index(
        words=tuple(m.group(0) for m in found),
        starts=tuple(m.start() for m in found),
        positions={w: tuple(p) for w, p in positions.items()},
    )


@dataclass(frozen=True)
class Pattern:
    """One word or phrase of a rule; each part is a word, a ``stem*`` or ``...``."""

    source: str
    parts: tuple[str, ...]

    @classmethod
    def compile(cls, source: str) -> Pattern:
        parts: list[str] = []
        for raw in fold(source).split():
            if raw == GAP:
                parts.append(GAP)
                continue
            stem = raw.endswith("*")
            word = "".join(_TOKEN.findall(raw.rstrip("*")))
            if word:
                parts.append(word + ("*" if stem else ""))
        if not parts or parts[0] == GAP or parts[-1] == GAP:
            raise ValueError(f"{source!r} has no words to match")
        return cls(source, tuple(parts))

    def spans(self, text: Index) -> list[tuple[int, int]]:
        """Every (start, end) token span where the pattern matches."""
        found = []
        for start in sorted(self._starts(text)):
            end = _match_from(self.parts, text.words, start)
            if end is not None:
                found.append((start, end))
        return found

    def _starts(self, text: Index) -> list[int]:
        """Where the first word matches: looked up, not scanned."""
        first = self.parts[0]
        if not first.endswith("*"):
            return list(text.positions.get(first, ()))
        stem = first[:-1]
        return [p for word, at in text.positions.items() if word.startswith(stem) for p in at]


def _word_matches(part: str, word: str) -> bool:
    if part.endswith("*"):
        return word.startswith(part[:-1])
    return word == part


def _match_from(parts: tuple[str, ...], words: tuple[str, ...], start: int) -> int | None:
    """End index of a match of ``parts`` starting exactly at ``start``, or None."""
    if not parts:
        return start
    part, rest = parts[0], parts[1:]
    if part == GAP:
        for skip in range(MAX_GAP + 1):
            end = _match_from(rest, words, start + skip)
            if end is not None:
                return end
        return None
    if start < len(words) and _word_matches(part, words[start]):
        return _match_from(rest, words, start + 1)
    return None


def negated(words: tuple[str, ...], span: tuple[int, int]) -> bool:
    """True when a negation stands within two words before the span or right after it.

    "не срочно", "не очень срочно", "not urgent", "срочности нет".
    """
    start, end = span
    before = words[max(0, start - 2) : start]
    after = words[end : end + 1]
    return any(w in NEGATIONS for w in before) or after == ("нет",)
