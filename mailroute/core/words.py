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
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise

_TOKEN = re.compile(r"[0-9a-zа-я]+")
GAP = "..."
MAX_GAP = 3
NEGATIONS = frozenset({"не", "нет", "ни", "без", "not", "no", "never", "nothing", "without"})
# What a pattern is filed under for the quick "can it match here?" test: its first two
# words when both are exact words, else its first part (``word`` or ``stem*``).
Key = str | tuple[str, str]


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
    # The distinct words in sorted order (words with a common prefix are neighbours) and
    # the positions already looked up by stem: built on first use, kept with the index.
    _sorted: list[str] = field(default_factory=list, compare=False, repr=False)
    _by_stem: dict[str, tuple[int, ...]] = field(default_factory=dict, compare=False, repr=False)
    _present: dict[Vocabulary, frozenset[Key]] = field(
        default_factory=dict, compare=False, repr=False
    )
    # The folded text the words came from: sentence ends are read from it on demand.
    text: str = field(default="", compare=False, repr=False)

    def sentence_break_before(self, i: int) -> bool:
        """Whether a sentence ends (. ! ? or a line break) between word ``i - 1`` and ``i``."""
        if i <= 0 or i >= len(self.words) or not self.text:
            return i <= 0
        gap = self.text[self.starts[i - 1] + len(self.words[i - 1]) : self.starts[i]]
        return any(ch in ".!?\n" for ch in gap)

    def token_at(self, offset: int) -> int:
        """The index of the first token starting at or after character ``offset``."""
        return bisect_right(self.starts, offset - 1)

    def with_stem(self, stem: str) -> tuple[int, ...]:
        """Where the words starting with ``stem`` occur, in text order.

        Found by bisecting the sorted distinct words (O(log n + k)), once per stem and text.
        """
        found = self._by_stem.get(stem)
        if found is not None:
            return found
        ordered = self._sorted
        if not ordered and self.positions:
            ordered.extend(sorted(self.positions))
        i = bisect_left(ordered, stem)
        if i == len(ordered) or not ordered[i].startswith(stem):
            found = ()
        else:
            j = i + 1
            while j < len(ordered) and ordered[j].startswith(stem):
                j += 1
            if j == i + 1:
                found = self.positions[ordered[i]]
            else:
                found = tuple(sorted(p for w in ordered[i:j] for p in self.positions[w]))
        self._by_stem[stem] = found
        return found

    def present(self, vocabulary: Vocabulary) -> frozenset[Key]:
        """Which of the vocabulary's keys occur here (a key is a pattern's first part,
        ``word`` or ``stem*``, or its first two words): once per text and vocabulary."""
        found = self._present.get(vocabulary)
        if found is None:
            found = vocabulary.found_in(self)
            self._present[vocabulary] = found
        return found


@lru_cache(maxsize=32)
def index(text: str) -> Index:
    """The (cached) word index of ``text``."""
    folded = fold(text)
    found = list(_TOKEN.finditer(folded))
    positions: dict[str, list[int]] = {}
    for i, match in enumerate(found):
        positions.setdefault(match.group(0), []).append(i)
    return Index(
        words=tuple(m.group(0) for m in found),
        starts=tuple(m.start() for m in found),
        positions={w: tuple(p) for w, p in positions.items()},
        text=folded,
    )


@dataclass(frozen=True)
class Pattern:
    """One word or phrase of a rule; each part is a word, a ``stem*`` or ``...``."""

    source: str
    parts: tuple[str, ...]
    # Without a gap, the parts after the first as (word or stem, is a stem): matched by a
    # plain loop; None when the pattern has a gap (matched by backtracking).
    _rest: tuple[tuple[str, bool], ...] | None = field(
        init=False, compare=False, repr=False, default=None
    )
    key: Key = field(init=False, compare=False, repr=False, default="")

    def __post_init__(self) -> None:
        first = self.parts[0]
        second = self.parts[1] if len(self.parts) > 1 else GAP
        exact = first[-1] != "*" and second != GAP and second[-1] != "*"
        object.__setattr__(self, "key", (first, second) if exact else first)
        if GAP not in self.parts:
            rest = tuple((p.removesuffix("*"), p.endswith("*")) for p in self.parts[1:])
            object.__setattr__(self, "_rest", rest)

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
        starts = self._starts(text)
        if not starts:
            return []
        rest, words = self._rest, text.words
        if rest is None:
            found = []
            for start in starts:
                end = _match_from(self.parts, words, start)
                if end is not None:
                    found.append((start, end))
            return found
        if not rest:
            return [(start, start + 1) for start in starts]
        return _match_plain(rest, words, starts)

    def _starts(self, text: Index) -> tuple[int, ...]:
        """Where the first word matches, in text order: looked up, not scanned."""
        first = self.parts[0]
        if first[-1] != "*":
            return text.positions.get(first, ())
        return text.with_stem(first[:-1])


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """The keys of many patterns, to tell at once which of them can match a text: a
    pattern has no spans in a text that lacks its first word, or its first two words."""

    pairs: frozenset[tuple[str, str]]  # exact first two words
    words: frozenset[str]  # exact first words
    stems: frozenset[str]  # first stems, without the ``*``
    lengths: tuple[int, ...]  # the stems' lengths, ascending
    heads: frozenset[str]  # the stems cut to the shortest stem length

    @classmethod
    def of(cls, patterns: Iterable[Pattern]) -> Vocabulary:
        keys = {p.key for p in patterns}
        firsts = {k for k in keys if isinstance(k, str)}
        stems = frozenset(f[:-1] for f in firsts if f.endswith("*"))
        lengths = tuple(sorted({len(s) for s in stems}))
        shortest = lengths[0] if lengths else 0
        return cls(
            pairs=frozenset(k for k in keys if isinstance(k, tuple)),
            words=frozenset(f for f in firsts if not f.endswith("*")),
            stems=stems,
            lengths=lengths,
            heads=frozenset(s[:shortest] for s in stems),
        )

    def found_in(self, text: Index) -> frozenset[Key]:
        """The keys that occur in ``text``."""
        positions = text.positions
        found: set[Key] = set(self.words.intersection(positions))
        if self.pairs:
            found.update(self.pairs.intersection(pairwise(text.words)))
        if self.stems:
            stems, heads, lengths = self.stems, self.heads, self.lengths
            shortest = lengths[0]
            for word in positions:
                if word[:shortest] not in heads:
                    continue
                for n in lengths:
                    if n > len(word):
                        break
                    if word[:n] in stems:
                        found.add(word[:n] + "*")
        return frozenset(found)


def _match_plain(
    rest: tuple[tuple[str, bool], ...], words: tuple[str, ...], starts: tuple[int, ...]
) -> list[tuple[int, int]]:
    """The spans of a gapless pattern whose first word matches at each of ``starts``."""
    found = []
    count = len(words)
    for start in starts:
        end = start + 1 + len(rest)
        if end > count:
            break  # starts ascend: no later one fits either
        at = start + 1
        for part, stem in rest:
            word = words[at]
            if not (word.startswith(part) if stem else word == part):
                break
            at += 1
        else:
            found.append((start, end))
    return found


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
