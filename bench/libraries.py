"""Issue 14: NLP libraries measured against mailroute's own code on the same letters.

Each variant swaps one function of the pure pipeline for a library-based one (monkeypatched
here, nothing in ``mailroute/`` changes) and is scored on the labelled corpora like
``../shared/tools/score.py`` scores ``explain --json``: per field, with the desk address
configured for the blind and held-out letters as ``tests/core/test_corpus.py`` does.

    a  current code
    b  pymorphy3: rule words matched on lemmas as well as on the word forms
    c  natasha NER: ORG spans as the organization candidates (replacement), or asked only
       when the current extractor finds nothing (fallback)
    d  razdel: sentence ends for the negation scope of the rules and the cue sentence of the
       organization extractor, instead of ". ! ? line break"
    e  charset-normalizer's unrestricted best guess vs the current decoder on the
       non-Cyrillic letters of the parse tests (and Russian controls)

Speed is CPU per letter (parse + analyze + as_dict, best of ``--repeat`` passes over all
labelled letters, in this process); import cost is time and RSS of importing the library
and building its model, in a fresh interpreter. A variant whose library is not installed
prints "not installed: pip install X" and is skipped. Prints figures, asserts nothing.

    .venv/bin/python bench/libraries.py [--repeat 3] [--cpu 1] [--only a,b]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from mailroute import config  # noqa: E402
from mailroute.core import classify, extract, words  # noqa: E402
from mailroute.core.letter import parse  # noqa: E402
from mailroute.core.verdict import analyze  # noqa: E402
from mailroute.packaged import analysis_context  # noqa: E402

FIELDS = ("action", "ignore_reason", "request_type", "priority", "organization",
          "registration_number", "missing", "reply", "language")
SHORT = {"request_type": "type", "priority": "prio", "organization": "org",
         "registration_number": "reg", "language": "lang"}
CORPORA = {
    "blind": ROOT / "tests" / "letters-blind",
    "holdout": ROOT / "tests" / "letters-holdout",
    "dev": ROOT.parent / "shared" / "corpus" / "dev",
    "own": ROOT / "tests" / "letters",
}
BLIND_DESK = config.Config.model_validate({"mailbox": {"address": "servicedesk@vendor.example"}})


# Per-text caches of the variants, emptied before each timed pass as ``words.index`` is
# (the word -> lemma cache is kept: a real implementation would keep one too).
TEXT_CACHES: list[Any] = []


def installed(module: str, package: str) -> bool:
    if importlib.util.find_spec(module) is None:
        print(f"  not installed: pip install {package}")
        return False
    return True


# --------------------------------------------------------------------------- scoring


def _org(value: object) -> object:
    import re

    if not isinstance(value, str):
        return value
    return re.sub(r"\s+", " ", re.sub("[«»\"“”„']", "", value)).strip().casefold()


def same(field_name: str, expected: object, got: object) -> bool:
    """score.py's comparison: organization normalised, missing as a set."""
    if field_name == "organization":
        return _org(expected) == _org(got)
    if field_name == "missing":
        return isinstance(got, list) and set(expected) == set(got)  # type: ignore[arg-type]
    return expected == got


@dataclass
class Corpus:
    name: str
    letters: list[tuple[dict[str, Any], bytes]]
    context: Any


def load_corpora() -> list[Corpus]:
    found = []
    for name, folder in CORPORA.items():
        labels_file = folder / "labels.jsonl"
        if not labels_file.is_file():
            print(f"# {name}: no corpus at {folder}, skipped")
            continue
        labels = [json.loads(x) for x in labels_file.read_text("utf-8").splitlines() if x.strip()]
        cfg = BLIND_DESK if folder.name.startswith("letters-") else config.Config()
        letters = [(label, (folder / label["file"]).read_bytes()) for label in labels]
        found.append(Corpus(name, letters, analysis_context(cfg)))
    return found


@dataclass
class Result:
    right: dict[str, dict[str, int]] = field(default_factory=dict)  # corpus -> field -> right
    totals: dict[str, int] = field(default_factory=dict)
    all_right: dict[str, int] = field(default_factory=dict)
    cpu_ms: float = 0.0
    # the whole explain output per letter, rule evidence included: did the variant change
    # anything at all, even where the scored fields stay the same?
    outputs: dict[tuple[str, str], str] = field(default_factory=dict)


def run(corpora: list[Corpus], repeat: int) -> Result:
    """Score every corpus once, then time ``repeat`` passes and keep the best."""
    result = Result()
    for corpus in corpora:
        right = dict.fromkeys(FIELDS, 0)
        whole = 0
        for label, raw in corpus.letters:
            got = analyze(parse(raw), corpus.context).as_dict()
            result.outputs[corpus.name, label["file"]] = json.dumps(got, default=str)
            ok = [same(f, label[f], got.get(f)) for f in FIELDS]
            for f, good in zip(FIELDS, ok, strict=True):
                right[f] += good
            whole += all(ok)
        result.right[corpus.name] = right
        result.totals[corpus.name] = len(corpus.letters)
        result.all_right[corpus.name] = whole
    count = sum(len(c.letters) for c in corpora)
    best = float("inf")
    for _ in range(repeat):
        words.index.cache_clear()
        for cache in TEXT_CACHES:
            cache.cache_clear()
        start = time.process_time()
        for corpus in corpora:
            for _label, raw in corpus.letters:
                analyze(parse(raw), corpus.context).as_dict()
        best = min(best, time.process_time() - start)
    result.cpu_ms = 1000 * best / count
    return result


def print_result(name: str, result: Result, base: Result | None, fields: tuple[str, ...]) -> None:
    cells = []
    for corpus, total in result.totals.items():
        parts = []
        for f in fields:
            r = result.right[corpus][f]
            delta = ""
            if base is not None:
                d = r - base.right[corpus][f]
                delta = f"{d:+d}" if d else ""
            parts.append(f"{SHORT.get(f, f)} {100 * r / total:.1f}%{delta}")
        overall = sum(result.right[corpus].values()) / (total * len(FIELDS))
        parts.append(f"all {100 * overall:.1f}% letters {result.all_right[corpus]}/{total}")
        cells.append(f"{corpus}: " + ", ".join(parts))
    speed = 1000 / result.cpu_ms
    print(f"  {name}: {result.cpu_ms:.2f} ms CPU/letter = {speed:,.0f} letters/s")
    if base is not None:
        changed = sorted(k for k, v in result.outputs.items() if base.outputs.get(k) != v)
        names = ", ".join(f"{c}/{f}" for c, f in changed[:6]) + (" …" if len(changed) > 6 else "")
        print(f"    explain output (reasons included) differs on {len(changed)} of "
              f"{len(result.outputs)} letters{': ' + names if changed else ''}")
    for cell in cells:
        print(f"      {cell}")


def import_cost(statement: str) -> str:
    """Seconds and RSS growth of ``statement`` in a fresh interpreter."""
    code = (
        "import resource, time\n"
        "def rss():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20\n"
        "r0 = rss(); t0 = time.perf_counter()\n"
        f"{statement}\n"
        "print(f'{time.perf_counter() - t0:.2f} s, +{rss() - r0:.0f} MB RSS')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


@contextlib.contextmanager
def patched(target: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, old)


# --------------------------------------------------------------------------- b: pymorphy3


@dataclass(frozen=True)
class LemmaIndex(words.Index):
    """The word index with each word's lemma beside it; ``positions`` holds both."""

    lemmas: tuple[str, ...] = ()


def lemma_variant() -> contextlib.AbstractContextManager[None]:
    """A rule word matches a token when it matches the word form (as now) or the lemmas
    agree: an exact word by its own lemma ("упал" ~ упасть ~ "упала", "упадёт"), a stem
    when the token's lemma starts with it. The index keeps the word forms, so the
    negation, evidence and sentence logic are unchanged."""
    import pymorphy3

    morph = pymorphy3.MorphAnalyzer()

    @lru_cache(maxsize=200_000)
    def lemma(word: str) -> str:
        if word.isascii():
            return word
        return words.fold(morph.parse(word)[0].normal_form)

    original = words.index

    @lru_cache(maxsize=32)
    def lemma_index(text: str) -> LemmaIndex:
        base = original(text)
        lemmas = tuple(lemma(w) for w in base.words)
        positions: dict[str, set[int]] = {}
        for i, (w, m) in enumerate(zip(base.words, lemmas, strict=True)):
            positions.setdefault(w, set()).add(i)
            positions.setdefault(m, set()).add(i)
        return LemmaIndex(
            words=base.words, starts=base.starts, text=base.text, lemmas=lemmas,
            positions={w: tuple(sorted(p)) for w, p in positions.items()},
        )

    TEXT_CACHES.append(lemma_index)

    def part_ok(part: str, text: LemmaIndex, i: int) -> bool:
        if part.endswith("*"):
            stem = part[:-1]
            return text.words[i].startswith(stem) or text.lemmas[i].startswith(stem)
        return text.words[i] == part or text.lemmas[i] == lemma(part)

    def match_from(parts: tuple[str, ...], text: LemmaIndex, at: int) -> int | None:
        if not parts:
            return at
        part, rest = parts[0], parts[1:]
        if part == words.GAP:
            for skip in range(words.MAX_GAP + 1):
                end = match_from(rest, text, at + skip)
                if end is not None:
                    return end
            return None
        if at < len(text.words) and part_ok(part, text, at):
            return match_from(rest, text, at + 1)
        return None

    def starts(pattern: words.Pattern, text: LemmaIndex) -> tuple[int, ...]:
        first = pattern.parts[0]
        if first.endswith("*"):
            return text.with_stem(first[:-1])
        both = set(text.positions.get(first, ())) | set(text.positions.get(lemma(first), ()))
        return tuple(sorted(both))

    original_spans = words.Pattern.spans

    def spans(self: words.Pattern, text: words.Index) -> list[tuple[int, int]]:
        if not isinstance(text, LemmaIndex):
            return original_spans(self, text)
        found = []
        for start in starts(self, text):
            end = match_from(self.parts[1:], text, start + 1)
            if end is not None:
                found.append((start, end))
        return found

    def candidates(self: classify.Rule, text: words.Index) -> list[int]:
        assert isinstance(text, LemmaIndex)
        return [i for i, p in enumerate(self.patterns) if starts(p, text)]

    stack = contextlib.ExitStack()
    stack.enter_context(patched(classify, "index", lemma_index))
    stack.enter_context(patched(words.Pattern, "spans", spans))
    stack.enter_context(patched(classify.Rule, "_candidates", candidates))
    return stack


# --------------------------------------------------------------------------- c: natasha


def natasha_variants() -> dict[str, Callable[[], contextlib.AbstractContextManager[None]]]:
    from natasha import Doc, NewsEmbedding, NewsNERTagger, Segmenter

    segmenter, tagger = Segmenter(), NewsNERTagger(NewsEmbedding())

    @lru_cache(maxsize=256)
    def org_spans(text: str) -> tuple[tuple[int, int], ...]:
        if not text.strip():
            return ()
        doc = Doc(text)
        doc.segment(segmenter)
        doc.tag_ner(tagger)
        return tuple((s.start, s.stop) for s in doc.spans if s.type == "ORG")

    TEXT_CACHES.append(org_spans)

    current = extract.find_organization

    def ner_candidates(
        sources: Any, vendor: frozenset[str] = frozenset()
    ) -> list[extract.Candidate]:
        """NER's ORG spans, placed and penalised by the current scoring (fairest use)."""
        found = []
        for source, text in sources:
            for start, end in org_spans(text):
                value = text[start:end].strip(" \t,;:")
                score, why = extract._score(text, source, start, end)
                if extract.normalize_org(value) in vendor:
                    score, why = -1, "the vendor itself"
                elif extract._BANK.search(value) and score < extract.SCORE_LABEL:
                    score -= extract.BANK_PENALTY
                found.append(extract.Candidate(value, source, start, end, score, why))
        return found

    def replacement(sources: Any, vendor: frozenset[str] = frozenset()) -> Any:
        with patched(extract, "candidates", ner_candidates):
            return current(sources, vendor)

    def fallback(sources: Any, vendor: frozenset[str] = frozenset()) -> Any:
        found = current(sources, vendor)
        return found if found is not None else replacement(sources, vendor)

    return {
        "c1 natasha ORG replaces the extractor": lambda: patched(
            extract, "find_organization", replacement),
        "c2 natasha ORG when the extractor finds nothing": lambda: patched(
            extract, "find_organization", fallback),
    }


# --------------------------------------------------------------------------- d: razdel


@dataclass(frozen=True)
class SentenceIndex(words.Index):
    """The word index with razdel's sentence starts (token numbers)."""

    sentence_starts: frozenset[int] = frozenset()

    def sentence_break_before(self, i: int) -> bool:
        if i <= 0 or i >= len(self.words):
            return i <= 0
        gap = self.text[self.starts[i - 1] + len(self.words[i - 1]) : self.starts[i]]
        return i in self.sentence_starts or "\n" in gap


SENTENCE_GAPS = {"gaps": 0, "razdel only": 0, "current only": 0}
COUNTING = [True]  # off while timing: the comparison is no part of the variant's cost


def razdel_variant() -> contextlib.AbstractContextManager[None]:
    """Sentence ends from razdel (read on the original text, not the folded one) plus line
    breaks, for the rules' negation scope and the organization cue sentence. Counts in
    ``SENTENCE_GAPS`` how many word gaps the two readings disagree on."""
    import razdel

    original = words.index

    @lru_cache(maxsize=32)
    def sentence_index(text: str) -> words.Index:
        base = original(text)
        if len(words.fold(text)) != len(text):
            return base
        firsts = set()
        for sentence in razdel.sentenize(text):
            i = base.token_at(sentence.start)
            if 0 < i < len(base.words):
                firsts.add(i)
        found = SentenceIndex(
            words=base.words, starts=base.starts, positions=base.positions, text=base.text,
            sentence_starts=frozenset(firsts),
        )
        for i in range(1, len(base.words) if COUNTING[0] else 0):
            ours, theirs = base.sentence_break_before(i), found.sentence_break_before(i)
            SENTENCE_GAPS["gaps"] += 1
            SENTENCE_GAPS["razdel only"] += theirs and not ours
            SENTENCE_GAPS["current only"] += ours and not theirs
        return found

    TEXT_CACHES.append(sentence_index)

    def sentence_before(text: str, start: int) -> str:
        before = text[max(0, start - 80) : start]
        last = ""
        for sentence in razdel.sentenize(before):
            last = before[sentence.start :]
        cut = last.rfind("\n")
        return last[cut + 1 :] if cut >= 0 else last

    stack = contextlib.ExitStack()
    stack.enter_context(patched(classify, "index", sentence_index))
    stack.enter_context(patched(extract, "_sentence_before", sentence_before))
    return stack


# --------------------------------------------------------------------------- e: charsets

# From tests/core/test_letter.py ("mail from the wild", mojibake repairs): the text, its
# bytes and the label the letter carried (None: none).
WESTERN = "Formação e información: très bien, Grüße aus München."
LATIN = "Grüße aus München, señor Müller. Ça va très bien, merci à vous."
CHARSET_CASES: list[tuple[str, str, str, str | None]] = [
    ("cp1252, no label", WESTERN, "cp1252", None),
    ("cp1252 labelled koi8-r", WESTERN, "cp1252", "koi8-r"),
    ("cp1252 labelled windows-1251", WESTERN, "cp1252", "windows-1251"),
    ("latin text in utf-8", LATIN, "utf-8", "utf-8"),
    ("latin text in cp1252, no label", LATIN, "cp1252", None),
    ("GBK labelled gb2312", "发票金额显示错误，镕铭公司", "gbk", "gb2312"),
    ("iso-2022-jp, no label", "請求書が表示されません", "iso2022_jp", None),
    ("iso-2022-jp labelled", "請求書が表示されません", "iso2022_jp", "iso-2022-jp"),
    ("shift_jis, no label", "日本語のテキストです。請求書が表示されません。", "shift_jis", None),
    ("control: koi8-r ru, no label", "Отчёт пустой после обновления", "koi8-r", None),
    ("control: cp1251 ru, no label", "Привет, iPhone не работает", "cp1251", None),
    ("control: cp1251 'Да', no label", "Да", "cp1251", None),
]


def charset_variant(repeat: int) -> None:
    from mailroute.core.letter.charsets import decode_bytes

    try:
        from charset_normalizer import from_bytes
    except ImportError:
        print("  not installed: pip install charset-normalizer")
        return

    def normalizer(data: bytes, _label: str | None) -> str:
        best = from_bytes(data).best()
        return str(best) if best is not None else data.decode("utf-8", "replace")

    def current(data: bytes, label: str | None) -> str:
        return decode_bytes(data, label, "body", [])

    variants = (("current decode_bytes", current), ("charset-normalizer best()", normalizer))
    for name, decode in variants:
        right, wrong, seconds = 0, [], float("inf")
        foreign = [c for c in CHARSET_CASES if not c[0].startswith("control")]
        for case, text, codec, label in CHARSET_CASES:
            got = decode(text.encode(codec), label)
            if got == text:
                right += case in [c[0] for c in foreign]
            else:
                wrong.append(f"{case}: {got[:24]!r}")
        for _ in range(repeat):
            start = time.process_time()
            for _case, text, codec, label in CHARSET_CASES * 20:
                decode(text.encode(codec), label)
            seconds = min(seconds, time.process_time() - start)
        per = 1e6 * seconds / (len(CHARSET_CASES) * 20)
        print(f"  {name}: non-Cyrillic right {right}/{len(foreign)}, {per:.0f} µs CPU/decode")
        for line in wrong:
            print(f"      wrong: {line}")


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed passes; the best counts")
    parser.add_argument("--cpu", type=int, help="pin the process to this CPU")
    parser.add_argument("--only", default="a,b,c,d,e", help="variants to run, e.g. a,c")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    only = set(args.only.split(","))
    commit = subprocess.run(["git", "log", "-1", "--format=%h"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    print(f"# bench/libraries.py: working tree at {commit}, Python {sys.version.split()[0]}")
    corpora = load_corpora()
    print("# corpora: " + ", ".join(f"{c.name} {len(c.letters)}" for c in corpora))
    type_fields = ("request_type", "priority")
    base = None
    if "a" in only or only & {"b", "c", "d"}:
        print("a  current code")
        base = run(corpora, args.repeat)
        print_result("current", base, None, (*type_fields, "organization"))
    if "b" in only:
        print("b  pymorphy3 lemmas for the classification rules")
        if installed("pymorphy3", "pymorphy3"):
            cost = import_cost("import pymorphy3; pymorphy3.MorphAnalyzer()")
            print(f"  import + MorphAnalyzer(): {cost}")
            with lemma_variant():
                print_result("lemmas", run(corpora, args.repeat), base, type_fields)
    if "c" in only:
        print("c  natasha NER for the organization")
        if installed("natasha", "natasha"):
            cost = import_cost("from natasha import NewsEmbedding, NewsNERTagger, Segmenter; "
                               "Segmenter(); NewsNERTagger(NewsEmbedding())")
            print(f"  import + Segmenter + NewsNERTagger: {cost}")
            for name, variant in natasha_variants().items():
                with variant():
                    print_result(name, run(corpora, args.repeat), base, ("organization",))
    if "d" in only:
        print("d  razdel sentence ends (rules' negation scope, organization cue sentence)")
        if installed("razdel", "razdel"):
            print(f"  import: {import_cost('import razdel; list(razdel.sentenize(chr(1099)))')}")
            with razdel_variant():
                found = run(corpora, 0)
                print(f"  sentence breaks between words, scoring pass: {SENTENCE_GAPS}")
                COUNTING[0] = False
                found.cpu_ms = run(corpora, args.repeat).cpu_ms
                print_result("razdel", found, base, (*type_fields, "organization"))
    if "e" in only:
        print("e  charset: current decoder vs charset-normalizer's unrestricted guess")
        charset_variant(args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
