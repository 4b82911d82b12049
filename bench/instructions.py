"""Instructions a letter costs a worker, counted by callgrind: figures that noise cannot move.

On a shared machine the same commit's CPU time moved by a quarter between runs minutes
apart (bench/README, twelfth to fourteenth rounds), which hides any change smaller than
that. Valgrind's callgrind counts the instructions executed instead: for the same inputs,
interpreter and environment (``PYTHONHASHSEED`` fixed) two runs agree to a part in a
million, whatever else the machine is doing. It runs some 50 times slower than the real
thing, so it takes a sample of the benchmark letters. A child interpreter imports
mailroute, builds the built-in rules and reads N letters, then does one of:

- ``read``: nothing more (the baseline: imports, rules, reading the files);
- ``parse``: parses each letter;
- ``understand``: parses and analyses each letter (``workers.understand``, what a worker
  does with a letter);
- ``verdict``: that, and pickles each verdict as a worker sends it back.

The child freezes what it holds before the letters, as a worker does: otherwise a full
collection walking the imports fell inside the letters or not depending on how many
objects start-up had made (two commits that differ only in an import differed by 0.16 M
instructions a letter in analysis; frozen, by 0.2 % in parse and analysis, and by 4 % in
the small pickling stage, where young collections still fall differently). Each stage is
the difference from the one before, over N. Instructions are not seconds (a cache miss
costs more than an add), so this says whether a change does less work, and how much;
``bench/backlog.py`` says what the machine makes of it.

    python bench/instructions.py --n 100
    python bench/instructions.py --n 100 --rev 0a74ada
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from common import (
    Source,
    add_source_arguments,
    callgrind_instructions,
    machine_note,
    require_valgrind,
    source_tree,
    terminate_on_sigterm,
)
from letters import generate

MODES = ("read", "parse", "understand", "verdict")
CHILD = """
import gc
import sys
from pathlib import Path
from multiprocessing.reduction import ForkingPickler
from mailroute.config import Config
from mailroute.core.letter import ParseLimits, parse
from mailroute.packaged import analysis_context
from mailroute.pipeline import workers
from mailroute.pipeline.workers import understand

# what a worker sends (c9bf216 on: the verdict without its files' bytes)
for_the_pipe = getattr(workers, "without_file_bytes", lambda verdict: verdict)
mode, folder = sys.argv[1], Path(sys.argv[2])
raws = [path.read_bytes() for path in sorted(folder.iterdir())]
context, limits = analysis_context(Config()), ParseLimits()
gc.freeze()  # as a worker does once set up (startup.freeze_inherited)
for raw in raws if mode != "read" else ():
    if mode == "parse":
        parse(raw, limits)
    elif mode == "understand":
        understand(raw, context, limits)
    else:
        ForkingPickler.dumps(("done", for_the_pipe(understand(raw, context, limits)), 0.0))
"""


def count(source: Source, mode: str, folder: Path) -> int:
    """Instructions the child executed in ``mode``."""
    return callgrind_instructions(["-c", CHILD, mode, str(folder)],
                                  source.env() | {"PYTHONHASHSEED": "0"}, folder.parent, mode)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="letters (the first N of the mix)")
    parser.add_argument("--seed", type=int, default=7)
    add_source_arguments(parser)
    args = parser.parse_args()
    require_valgrind()
    terminate_on_sigterm()
    folder = Path(tempfile.mkdtemp(prefix="mailroute-bench-instructions-"))
    try:
        letters = folder / "letters"
        letters.mkdir()
        for number, letter in enumerate(generate(args.n, args.seed)):
            (letters / f"{number:06d}.eml").write_bytes(letter.raw)
        with source_tree(args.live, args.rev) as source:
            counts = {mode: count(source, mode, letters) for mode in MODES}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    n = args.n

    def per_letter(high: str, low: str) -> str:
        return f"{(counts[high] - counts[low]) / n / 1e6:.3f} M"

    print(f"# bench/instructions.py: {source.label}; {machine_note()}")
    print(f"instructions n={n} seed={args.seed}: a letter costs {per_letter('verdict', 'read')}"
          f" instructions in a worker: parse {per_letter('parse', 'read')}, analyse "
          f"{per_letter('understand', 'parse')}, pickling the verdict "
          f"{per_letter('verdict', 'understand')}; start-up (imports, rules, reading) "
          f"{counts['read'] / 1e6:.0f} M")
    return 0


if __name__ == "__main__":
    sys.exit(main())
