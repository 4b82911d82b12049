"""Hunting letters that are slow to understand, and keeping the ones found.

A pattern that backtracks does not crash: it only takes seconds, then minutes, and every letter
behind it waits. The CPU budget ([limits] letter_seconds) bounds the damage; this keeps the
patterns from needing it. Hypothesis builds letter bodies from the pieces that made patterns
slow before (legal forms, quotes, ampersands, greetings, capitalised words, registration
phrases, runs of blanks), repeated into long lines, and fails on any letter that costs more
than a bound of CPU. What it finds is kept in ``tests/hostile/slow/`` and replayed on every
run, each under the same bound.

The short hunt always runs; the long one is marked ``slow`` (CI runs it).
"""

from __future__ import annotations

import gc
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailroute.config import Config
from mailroute.core.letter import ParseLimits
from mailroute.packaged import analysis_context
from mailroute.pipeline import workers

SLOW_CORPUS = Path(__file__).resolve().parents[1] / "hostile" / "slow"
CONTEXT = analysis_context(Config())
CPU_BOUND = 1.0  # seconds of this thread's CPU for one letter of at most ~130 KB
PIECES = (
    "A&", "A ", "Ltd", " & ", "ООО «", "«", "»", "\"", "'", "ООО ", "АО ", "ИП ", "GmbH & Co. KG",
    "Hello ", "Добрый день, ", "Уважаемые ", "Иван Петров, ", "рег ", "рег. № ", "№", "800",
    " - ", "  ", "\t", ", ", ". ", "; ", " | ", "@", "x", "ИНН ", "тел. ", "+7 ", "(", ")",
    "> ", "-- ", "On Mon wrote:", "Re: ", "Sent from ", "С уважением,\n", "\n",
)


def letter(body: str) -> bytes:
    message = EmailMessage()
    message["From"] = "client@example.com"
    message["To"] = "servicedesk@example.com"
    message["Subject"] = body.splitlines()[0][:200] if body.strip() else "Вопрос"
    message["Message-ID"] = "<hunt@example.com>"
    message.set_content(body)
    return message.as_bytes()


def cpu_to_understand(raw: bytes) -> float:
    """This thread's CPU to parse and analyse one letter, with the collector paused."""
    gc.disable()
    try:
        started = time.thread_time()
        result = workers.understand(raw, CONTEXT, ParseLimits())
        spent = time.thread_time() - started
    finally:
        gc.enable()
    assert result.fault is None, result.fault
    return spent


bodies = st.tuples(
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=12).map("".join),
    st.integers(min_value=1, max_value=2_000),
    st.lists(st.sampled_from(PIECES), max_size=4).map("".join),
).map(lambda parts: (parts[0] * parts[1])[:120_000] + parts[2])


def hunt(body: str) -> None:
    spent = cpu_to_understand(letter(body))
    assert spent < CPU_BOUND, f"{spent:.2f} s of CPU for a body of {len(body)} characters: " \
        f"{body[:120]!r}… (keep it in tests/hostile/slow/)"


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(bodies)
def test_no_letter_of_hostile_pieces_is_slow(body: str) -> None:
    hunt(body)


@pytest.mark.slow
@settings(max_examples=600, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(bodies)
def test_no_letter_of_hostile_pieces_is_slow_long_hunt(body: str) -> None:
    hunt(body)


SLOW_LETTERS = sorted(SLOW_CORPUS.glob("*.eml"))


def test_the_slow_corpus_is_there() -> None:
    assert len(SLOW_LETTERS) >= 5


@pytest.mark.parametrize("path", SLOW_LETTERS, ids=lambda p: p.stem)
def test_a_letter_once_found_slow_stays_fast(path: Path) -> None:
    assert cpu_to_understand(path.read_bytes()) < CPU_BOUND


def test_the_hunt_would_catch_a_slow_pattern(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound is real: a rule that backtracks catastrophically on such a body fails it."""
    import re

    from mailroute.core import quotes

    monkeypatch.setattr(quotes, "_GREETING", re.compile(
        r"^\s*(?i:hello)(?:[\s,]+(?:[A-Z]\w*(?:\s+[A-Z]\w*){0,2}))*(?:\s*[!,.:]+|\s*$)"))
    with pytest.raises(AssertionError, match="s of CPU"):
        hunt("Hello " + "A " * 32 + "x\nНе работает.")
