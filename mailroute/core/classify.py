"""Request type and priority by rules that are data (``rules.toml`` + the config).

How the rules decide, in order:

1. **Markers.** A rule with ``marker = true`` that matches the subject, else the
   first line after the greeting, fixes the request type ("Инцидент", "ЗНИ:" …);
   the markers' regexes anchor them at the start or end of the line, so the same
   words mid-sentence do not count.
2. **Votes.** Every other matching type rule adds its ``weight`` to its type; the
   type with most votes wins (ties: incident, improvement — offered wording beats
   neutral "доработать" —, change request, service request); no votes at all:
   ``default_request_type``.
3. **Priority.** Change requests and improvements are ``low``; service requests
   ``normal``; an incident is ``critical`` when a critical rule matches and no
   ``normal`` rule (a veto: "не к спеху") does.

A match preceded by a negation ("не срочно", "not urgent") does not count for a
rule with ``negatable = true``; a match covered by one of the rule's ``unless``
phrases ("ошибка в документации") does not count either.

Pure: the packaged ``rules.toml`` is read by :func:`mailroute.packaged.builtin_rules`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache

from mailroute.config import ClassificationConfig, ClassificationRule
from mailroute.core.words import Index, Key, Pattern, Vocabulary, index, negated

TYPES = ("incident", "improvement", "change_request", "service_request")
LOW_TYPES = frozenset({"change_request", "improvement"})


@dataclass(frozen=True)
class Texts:
    """The parts of a letter rules can look at, by field name."""

    subject: str = ""
    first_line: str = ""
    own_text: str = ""
    signature: str = ""
    text: str = ""
    sender: str = ""
    headers: Mapping[str, str] | None = None

    def field(self, name: str) -> str:
        if name.startswith("header:"):
            return (self.headers or {}).get(name.removeprefix("header:"), "")
        value: str = getattr(self, name)
        return value


@dataclass(frozen=True)
class Hit:
    """A rule that matched: its name, what it sets and where it matched."""

    rule: ClassificationRule
    field: str
    evidence: str


@dataclass(frozen=True)
class Rule:
    """A rule compiled for matching."""

    spec: ClassificationRule
    patterns: tuple[Pattern, ...]
    regex: RuleRegex | None
    unless: tuple[Pattern, ...]
    # Which patterns are filed under each key (first two words, or first part: see
    # words.Key), so a text is only tried with the patterns whose key it holds, still in
    # the rule's order; the vocabulary covers at least these keys (a RuleSet shares one
    # among its rules).
    by_first: Mapping[Key, tuple[int, ...]]
    vocabulary: Vocabulary

    @classmethod
    def compile(cls, spec: ClassificationRule) -> Rule:
        patterns = tuple(Pattern.compile(p) for p in [*spec.words, *spec.phrases])
        by_first: dict[Key, list[int]] = {}
        for i, pattern in enumerate(patterns):
            by_first.setdefault(pattern.key, []).append(i)
        return cls(
            spec=spec,
            patterns=patterns,
            regex=RuleRegex(spec.regex) if spec.regex else None,
            unless=tuple(Pattern.compile(p) for p in spec.unless),
            by_first={first: tuple(at) for first, at in by_first.items()},
            vocabulary=Vocabulary.of(patterns),
        )

    def may_match(self, present: frozenset[Key]) -> bool:
        """False when no field can match: none holds a key of the rule's patterns (and
        the rule has no regex).  ``present`` is :meth:`RuleSet.present` of the letter."""
        return self.regex is not None or not self.by_first.keys().isdisjoint(present)

    def match(self, texts: Texts) -> Hit | None:
        """The first field (in the rule's order) where the rule matches."""
        seen: list[str] = []
        for name in self.spec.fields:
            text = texts.field(name)
            if text in seen:  # the same text in an earlier field did not match
                continue
            evidence = self._match_text(text)
            if evidence is not None:
                return Hit(self.spec, name, evidence)
            seen.append(text)
        return None

    def _match_text(self, text: str) -> str | None:
        if not text:
            return None
        # A rule of a regex alone (the markers) needs the words only once the regex matched.
        words = index(text) if self.patterns else None
        blocked: list[tuple[int, int]] | None = None  # the unless spans, found when needed
        if words is not None:
            for i in self._candidates(words):
                for span in self.patterns[i].spans(words):
                    if blocked is None:
                        blocked = self._blocked(words)
                    if self._counts(words, span, blocked):
                        return " ".join(words.words[span[0] : span[1]])
        if self.regex is not None:
            for start, end in self.regex.spans(text):
                if words is None:
                    words = index(text)
                span = _token_span(words, start, end)
                if blocked is None:
                    blocked = self._blocked(words)
                if self._counts(words, span, blocked):
                    return text[start:end].strip()
        return None

    def _candidates(self, words: Index) -> Sequence[int]:
        """The patterns (by index, in order) whose key occurs in the text."""
        present = self.by_first.keys() & words.present(self.vocabulary)
        if not present:
            return ()
        if len(present) == 1:
            return self.by_first[present.pop()]
        return sorted(i for first in present for i in self.by_first[first])

    def _blocked(self, words: Index) -> list[tuple[int, int]]:
        return [span for u in self.unless for span in u.spans(words)]

    def _counts(self, words: Index, span: tuple[int, int], blocked: list[tuple[int, int]]) -> bool:
        if self.spec.negatable and _negated_in_sentence(words, span):
            return False
        return not any(b0 <= span[0] < b1 or span[0] <= b0 < span[1] for b0, b1 in blocked)


# A rule's regex is matched case-insensitively. With IGNORECASE, CPython's engine cannot
# skip to the positions where a match may begin: it tries every alternative at every
# character (type:error-message, some thirty words, took 109 µs on an own text of 155
# characters; 8 µs without IGNORECASE on the lower-cased text).
# Matched without IGNORECASE in the lower-cased text, a regex finds the same, at the same
# offsets, when neither side holds a letter whose case IGNORECASE pairs otherwise than
# str.lower() does. tests/core/test_classify_lowered.py holds the two ways to each other.
_CODE_ESCAPE = re.compile(r"\\[xuUN0-7]")  # a character given by its code: of any case
_INLINE_FLAGS = re.compile(r"\(\?[aiLmsux-]")  # (?-i:...) would make a part case-sensitive
_ESCAPED = re.compile(r"\\.", re.DOTALL)
_LARGEST_RANGE = 0x3000  # wider ranges are not looked through: the regex keeps IGNORECASE
# A letter outside Latin-1 and Cyrillic (ſ, ı, the Kelvin sign, İ, old Cyrillic forms),
# or µ (IGNORECASE pairs it with Greek μ): a text with one keeps IGNORECASE.
_OTHER_LETTER = re.compile(r"[^\W\d_\x00-\xb4\xb6-\xff\u0400-\u04ff]")


class RuleRegex:
    """A rule's regex, matched case-insensitively: without IGNORECASE in the lower-cased
    text where that finds the same (:func:`case_free`, :func:`_lowered`), else with it.
    Only the way a rule will use is compiled when it is built; the other, if ever."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lowered = re.compile(source, re.MULTILINE) if case_free(source) else None
        if self.lowered is None:
            _ = self.insensitive  # compiled with the rules, not at the first letter

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RuleRegex) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    @cached_property
    def insensitive(self) -> re.Pattern[str]:
        """The definition: IGNORECASE, in the text as written."""
        return re.compile(self.source, re.IGNORECASE | re.MULTILINE)

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        """Where the regex matches ``text`` (offsets in ``text``)."""
        if self.lowered is not None and (lowered := _lowered(text)) is not None:
            return (found.span() for found in self.lowered.finditer(lowered))
        return (found.span() for found in self.insensitive.finditer(text))


def case_free(pattern: str) -> bool:
    """Whether ``pattern`` without IGNORECASE finds in a lower-cased text (of Latin-1 and
    Cyrillic letters) what it finds with IGNORECASE in the text: it names no upper-case
    letter, as a literal or inside a range, and no letter outside Latin-1 and Cyrillic,
    gives no character by its code and sets no flags inline. Anything else keeps
    IGNORECASE, which is always right, only slower."""
    if _CODE_ESCAPE.search(pattern) or _INLINE_FLAGS.search(pattern):
        return False
    plain = _ESCAPED.sub("\x00", pattern)  # escapes are classes (\w, \S) or punctuation
    if plain != plain.lower() or _OTHER_LETTER.search(plain) is not None:
        return False
    for low, high in _ranges(plain):
        if "\x00" in (low, high) or ord(high) - ord(low) > _LARGEST_RANGE:
            return False  # an escaped end (blanked to NUL), or too wide to look through
        if any(c != c.lower() for c in map(chr, range(ord(low), ord(high) + 1))):
            return False
    return True


def _ranges(plain: str) -> Iterator[tuple[str, str]]:
    """The (first, last) characters of the ranges in the classes of ``plain``, a pattern
    with its escapes blanked; a hyphen between two ranges is read as one more (a range
    too many only refuses more)."""
    at = plain.find("[")
    while at != -1:
        start = at + 1 + plain.startswith("^", at + 1)
        end = plain.find("]", start + 1 if plain.startswith("]", start) else start)
        if end == -1:
            return
        body = plain[start:end]
        for hyphen in range(1, len(body) - 1):
            if body[hyphen] == "-":
                yield body[hyphen - 1], body[hyphen + 1]
        at = plain.find("[", end + 1)


@lru_cache(maxsize=8)
def _lowered(text: str) -> str | None:
    """``text`` lower-cased, offset for offset, or None when it holds a letter whose case
    IGNORECASE pairs otherwise than ``str.lower`` (a rule then matches the text as is)."""
    if _OTHER_LETTER.search(text) is not None:
        return None
    lowered = text.lower()
    return lowered if len(lowered) == len(text) else None


def _negated_in_sentence(words: Index, span: tuple[int, int]) -> bool:
    """A negation counts only in the match's own sentence: "не отправляется. Горит!" is
    urgent (the index keeps no punctuation, so sentence ends are read from the gaps)."""
    first = span[0]
    while first > max(0, span[0] - 2) and not words.sentence_break_before(first):
        first -= 1
    shift = first
    return negated(words.words[shift:], (span[0] - shift, span[1] - shift))


def _token_span(words: Index, start: int, end: int) -> tuple[int, int]:
    """The token span of a character span (for negation and ``unless`` checks)."""
    first = words.token_at(start)
    return first, max(first + 1, words.token_at(end))


@dataclass(frozen=True)
class RuleSet:
    """The effective rules: built-in ones, overridden, extended and disabled by config."""

    rules: tuple[Rule, ...]
    default_request_type: str = "service_request"

    @classmethod
    def build(
        cls, builtin: Sequence[ClassificationRule], config: ClassificationConfig
    ) -> RuleSet:
        by_name = {rule.name: rule for rule in builtin}
        for rule in config.rules:
            by_name[rule.name] = rule
        disabled = set(config.disabled)
        active = [Rule.compile(r) for name, r in by_name.items() if name not in disabled]
        # One vocabulary for all rules: a text is scanned for it once, not once per rule.
        shared = Vocabulary.of(p for rule in active for p in rule.patterns)
        active = [replace(rule, vocabulary=shared) for rule in active]
        return cls(tuple(active), config.default_request_type)

    @cached_property
    def _keyed_fields(self) -> tuple[str, ...]:
        """The fields some rule's words or phrases are looked for in."""
        return tuple(dict.fromkeys(f for r in self.rules if r.patterns for f in r.spec.fields))

    @cached_property
    def _vocabulary(self) -> Vocabulary:
        shared = {id(r.vocabulary): r.vocabulary for r in self.rules}
        if len(shared) == 1:
            return next(iter(shared.values()))
        return Vocabulary.of(p for rule in self.rules for p in rule.patterns)

    def present(self, texts: Texts) -> frozenset[Key]:
        """The pattern keys found in any field of the letter: a rule without one of them
        (and without a regex) cannot match, so most rules are never tried (a third of
        the time of understanding a letter went to trying them)."""
        found: set[Key] = set()
        for name in self._keyed_fields:
            text = texts.field(name)
            if text:
                found.update(index(text).present(self._vocabulary))
        return frozenset(found)

    @property
    def markers(self) -> Iterable[Rule]:
        return (r for r in self.rules if r.spec.marker)

    @property
    def voters(self) -> Iterable[Rule]:
        return (r for r in self.rules if not r.spec.marker and r.spec.sets.request_type)

    @property
    def priority_rules(self) -> Iterable[Rule]:
        return (r for r in self.rules if not r.spec.marker and r.spec.sets.priority)


def parse_rules(text: str) -> tuple[ClassificationRule, ...]:
    """Rules from TOML text with ``[[rules]]`` tables."""
    data = tomllib.loads(text)
    return tuple(ClassificationRule.model_validate(item) for item in data.get("rules", []))


# --------------------------------------------------------------------------- verdict


@dataclass(frozen=True)
class Verdict:
    """Type and priority, with the rule hits that decided them."""

    request_type: str
    priority: str
    type_hits: tuple[Hit, ...]
    priority_hits: tuple[Hit, ...]
    scores: Mapping[str, float]
    by_marker: bool


def classify(texts: Texts, rules: RuleSet) -> Verdict:
    """Decide request type and priority of one letter."""
    present = rules.present(texts)
    marker = _marker(texts, rules, present)
    request_type: str
    type_hits: tuple[Hit, ...]
    scores: dict[str, float]
    if marker is not None:
        request_type, type_hits, scores = marker.rule.sets.request_type or "", (marker,), {}
    else:
        request_type, type_hits, scores = _vote(texts, rules, present)
    priority, priority_hits = _priority(texts, rules, request_type, present)
    return Verdict(
        request_type, priority, type_hits, priority_hits, scores, by_marker=marker is not None
    )


def _matches(rules: Iterable[Rule], texts: Texts, present: frozenset[Key]) -> list[Hit]:
    return [h for r in rules if r.may_match(present) and (h := r.match(texts)) is not None]


def _marker(texts: Texts, rules: RuleSet, present: frozenset[Key]) -> Hit | None:
    """A marker in the subject beats one on the first line."""
    hits = _matches(rules.markers, texts, present)
    for field in ("subject", "first_line"):
        for hit in hits:
            if hit.field == field:
                return hit
    return hits[0] if hits else None


def _vote(
    texts: Texts, rules: RuleSet, present: frozenset[Key]
) -> tuple[str, tuple[Hit, ...], dict[str, float]]:
    hits = _matches(rules.voters, texts, present)
    scores = dict.fromkeys(TYPES, 0.0)
    for hit in hits:
        scores[hit.rule.sets.request_type or ""] += hit.rule.sets.weight
    best = max(TYPES, key=lambda t: (scores[t], -TYPES.index(t)))
    if scores[best] <= 0:
        return rules.default_request_type, (), scores
    winners = tuple(h for h in hits if h.rule.sets.request_type == best)
    return best, winners, scores


def _priority(
    texts: Texts, rules: RuleSet, request_type: str, present: frozenset[Key]
) -> tuple[str, tuple[Hit, ...]]:
    if request_type in LOW_TYPES:
        return "low", ()
    if request_type != "incident":
        return "normal", ()
    hits = _matches(rules.priority_rules, texts, present)
    vetoes = tuple(h for h in hits if h.rule.sets.priority == "normal")
    if vetoes:
        return "normal", vetoes
    critical = tuple(h for h in hits if h.rule.sets.priority == "critical")
    return ("critical", critical) if critical else ("normal", ())
