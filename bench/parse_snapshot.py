"""`parse()` on every letter we have, field by field: proof that a parser refactor changed nothing.

`explain_snapshot.py` compares verdicts; a verdict does not show every field of a
`ParsedLetter` (the defects, each attachment's name and hash, forwarded letters). This writes
the whole parsed letter (its repr, attachment contents as SHA-256) of the labelled and hostile
test letters, the shared dev corpus, 2,000 generated letters and seeded mutations of the
labelled ones (cut short, bytes flipped: the repair paths), each read with the default limits
and with tight ones (the limit paths), and either saves it or compares it line by line:

    python bench/parse_snapshot.py --out /tmp/parse-before.jsonl      # on the old tree
    python bench/parse_snapshot.py --compare /tmp/parse-before.jsonl  # on the new tree

It prints the number of readings, a SHA-256 of the whole output, and with --compare the first
readings that differ; it exits 1 when anything differs.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from pathlib import Path

import snapshots
from letters import generate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailroute.core.letter import ParseLimits, parse  # noqa: E402
from mailroute.errors import LetterUnreadable  # noqa: E402

GENERATED = 2_000
MUTATIONS = 3  # per labelled letter
TIGHT = ParseLimits(max_bytes=200_000, max_parts=12, max_depth=3, max_header_bytes=2_000,
                    max_text_chars=300)


def letters() -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every letter read: files first, then generated and mutated ones."""
    files = sorted((ROOT / "tests" / "letters").glob("*.eml"))
    files += sorted((ROOT / "tests" / "hostile").glob("*.eml"))
    files += sorted((ROOT.parent / "shared" / "corpus" / "dev").glob("*.eml"))
    for path in files:
        yield path.name, path.read_bytes()
    for number, letter in enumerate(generate(GENERATED), start=1):
        yield f"generated-{number:05d}", letter.raw
    rng = random.Random(12)
    for path in files:
        raw = path.read_bytes()
        for number in range(MUTATIONS):
            yield f"{path.name}~{number}", _mutate(rng, raw)


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    """A letter cut short and with a few bytes flipped, as a broken relay delivers one."""
    data = bytearray(raw[: rng.randint(len(raw) // 2, len(raw))])
    for _ in range(rng.randint(1, 8)):
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def reading(raw: bytes, limits: ParseLimits) -> str:
    """The parsed letter as one line (attachments by hash), or the reason it is unreadable."""
    try:
        return repr(parse(raw, limits))
    except LetterUnreadable as exc:
        return f"unreadable: {exc}"


def snapshot() -> list[str]:
    """One line per letter and limits."""
    lines: list[str] = []
    for name, raw in letters():
        lines.append(f"{name}\tdefault\t{reading(raw, ParseLimits())}")
        lines.append(f"{name}\ttight\t{reading(raw, TIGHT)}")
    return lines


def main() -> int:
    return snapshots.run(__doc__.split("\n\n")[0], "reading", snapshot)


if __name__ == "__main__":
    raise SystemExit(main())
