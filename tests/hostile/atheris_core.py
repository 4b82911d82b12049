"""Coverage-guided fuzzing of parse → analyze → compose with atheris (optional).

hypothesis and the seeded loop of tests/core/test_fuzz.py try what we thought of;
libFuzzer, guided by which branches of mailroute a letter reaches, tries what we
did not.  The checks are the same (tests/core/test_fuzz.py ``Core.run``).

    .venv/bin/pip install atheris
    .venv/bin/python tests/hostile/atheris_core.py -max_total_time=60 -seed=1 CORPUS_DIR...

A failing letter is written to ``crash-*`` in the current directory; replay it with
``.venv/bin/python tests/hostile/atheris_core.py crash-…``.
tests/core/test_fuzz.py runs this for a short while when atheris is installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # support
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))  # test_fuzz

with atheris.instrument_imports(include=["mailroute"]):  # imported here to be instrumented
    pass

import test_fuzz  # tests/core/, imported after mailroute is instrumented

CORE = test_fuzz.Core()


def one_letter(data: bytes) -> None:
    """libFuzzer's entry point: any exception or a breached contract is a crash."""
    CORE.run(data, test_fuzz.Tally())


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_letter)
    atheris.Fuzz()
