"""Field accuracy on labelled letters, scored like ../shared/tools/score.py does.

Two corpora: the shared dev corpus (``../shared/corpus/dev`` next to the repository;
skipped when absent) and this repository's own ``tests/letters`` — written to differ
from the dev corpus (other clients, charsets, phrasings), so a rule tuned to the 40
dev letters alone shows up here. Run with ``-s`` to see the per-field tables.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support.corpus import BLIND_LETTERS, DEV_CORPUS, HOLDOUT_LETTERS, OWN_LETTERS, dev_corpus

from mailroute import config
from mailroute.core.letter import parse
from mailroute.core.verdict import analyze
from mailroute.packaged import analysis_context

FIELDS = ("action", "ignore_reason", "request_type", "priority", "organization",
          "registration_number", "missing", "reply", "language")
OWN = OWN_LETTERS
DEV = DEV_CORPUS
BLIND = BLIND_LETTERS
# Written with the blind letters but never tuned on: added afterwards at the score they
# reached (97.1% of fields, 44/50 letters), so they guard against regressions only.
HOLDOUT = HOLDOUT_LETTERS
MIN_FIELD_ACCURACY = {OWN: 0.95, DEV: 0.95, BLIND: 0.99, HOLDOUT: 0.92}
# Letters with every field right: the share a customer meets (a wrong field is a wrong SLA,
# queue or a needless clarification).
MIN_LETTERS_RIGHT = {OWN: 0.0, DEV: 0.0, BLIND: 0.97, HOLDOUT: 0.88}


def _org(value: object) -> object:
    if not isinstance(value, str):
        return value
    return re.sub(r"\s+", " ", re.sub("[«»\"“”„']", "", value)).strip().casefold()


def _same(field: str, expected: object, got: object) -> bool:
    if field == "organization":
        return _org(expected) == _org(got)
    if field == "missing":
        return isinstance(got, list) and set(expected) == set(got)  # type: ignore[arg-type]
    return expected == got


# The desk the blind letters were written to: its own notices are loops, not requests.
BLIND_DESK = config.Config.model_validate({"mailbox": {"address": "servicedesk@vendor.example"}})


def _config(corpus: Path) -> config.Config:
    return BLIND_DESK if corpus.name.startswith("letters-") else config.Config()


def score(corpus: Path) -> tuple[dict[str, int], int, list[str]]:
    """Right answers per field, the number of letters, and the wrong items."""
    context = analysis_context(_config(corpus))
    lines = (corpus / "labels.jsonl").read_text("utf-8").splitlines()
    labels = [json.loads(line) for line in lines if line.strip()]
    right = dict.fromkeys(FIELDS, 0)
    wrong = []
    for label in labels:
        got = analyze(parse((corpus / label["file"]).read_bytes()), context).as_dict()
        for field in FIELDS:
            if _same(field, label[field], got[field]):
                right[field] += 1
            else:
                wrong.append(f"{label['file']} {field}: {label[field]!r} != {got[field]!r}")
    return right, len(labels), wrong


def _table(name: str, right: dict[str, int], total: int, wrong: list[str]) -> str:
    header = f"{'field':22} {'right':>6} {'total':>6} {'accuracy':>9}"
    lines = [f"\n{name}: {total} letters", header]
    lines += [f"{f:22} {right[f]:6d} {total:6d} {100 * right[f] / total:8.1f}%" for f in FIELDS]
    overall = sum(right.values()) / (total * len(FIELDS))
    lines.append(f"overall {100 * overall:.1f}%")
    lines += [f"  wrong: {item}" for item in wrong]
    return "\n".join(lines)


@pytest.mark.parametrize(
    "corpus",
    [OWN, DEV, BLIND, HOLDOUT],
    ids=["tests/letters", "shared dev corpus", "blind letters", "held-out blind letters"],
)
def test_field_accuracy(corpus: Path) -> None:
    if corpus == DEV:
        dev_corpus()  # fails, rather than skips, when the corpus is required
    right, total, wrong = score(corpus)
    print(_table(str(corpus), right, total, wrong))
    low = {f: right[f] / total for f in FIELDS if right[f] / total < MIN_FIELD_ACCURACY[corpus]}
    assert low == {}, "\n".join(wrong)
    wrong_letters = {item.split()[0] for item in wrong}
    assert (total - len(wrong_letters)) / total >= MIN_LETTERS_RIGHT[corpus], "\n".join(wrong)


def test_own_letters_cover_the_contract() -> None:
    """The own corpus keeps its breadth: every type, priority, ignore reason and missing item."""
    labels = [json.loads(line) for line in (OWN / "labels.jsonl").read_text("utf-8").splitlines()]
    assert len(labels) >= 60
    seen = {(k, v) for lab in labels for k, v in lab.items() if k != "missing"}
    for field, values in {
        "request_type": ["incident", "service_request", "change_request", "improvement"],
        "priority": ["critical", "normal", "low"],
        "ignore_reason": ["own_address", "bounce", "auto_reply", "bulk"],
        "language": ["ru", "en"],
    }.items():
        assert {(field, v) for v in values} <= seen
    assert {m for lab in labels for m in lab["missing"]} == {
        "subject", "description", "organization", "registration_number"}
    assert all(lab["note"] for lab in labels)
