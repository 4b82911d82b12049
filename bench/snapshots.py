"""Write, or compare byte for byte, the lines a program produces: proof a refactor changed nothing.

The explain, parse and report snapshots differ only in what they produce; writing the file,
hashing it and showing the first differences is this one routine.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Callable
from pathlib import Path


def run(description: str, noun: str, produce: Callable[[], list[str]],
        count: Callable[[list[str]], int] = len) -> int:
    """``--out FILE`` writes the lines; ``--compare FILE`` exits 1 when any line differs."""
    parser = argparse.ArgumentParser(description=description)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", type=Path, help=f"write the {noun}s here")
    mode.add_argument("--compare", type=Path, help="compare with an earlier --out file")
    args = parser.parse_args()
    lines = produce()
    text = "\n".join(lines) + "\n"
    print(f"{count(lines)} {noun}s, sha256 {hashlib.sha256(text.encode()).hexdigest()}")
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        return 0
    before = args.compare.read_text(encoding="utf-8").splitlines()
    lines = text.splitlines()
    differing = [(n, old, new) for n, (old, new) in enumerate(zip(before, lines, strict=False))
                 if old != new]
    if len(before) != len(lines):
        print(f"line count differs: {len(before)} before, {len(lines)} now")
    for number, old, new in differing[:5]:
        print(f"line {number + 1}:\n- {old[:400]}\n+ {new[:400]}")
    print(f"{len(differing)} lines differ")
    return 1 if differing or len(before) != len(lines) else 0
