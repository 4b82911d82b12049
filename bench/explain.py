"""Issue 3: how fast the pure pipeline explains letters, per stage, in one process.

This is what ``mailroute explain`` does for each file (``Explainer.explain_bytes``): read
the file, ``parse``, ``analyze``, ``Analysis.as_dict()``. The stages are timed separately,
so a regression says which one it is, and the whole run is repeated (best of N) because the
machine is shared. The letters are written to a temporary directory first and read back one
at a time, as the CLI reads them, so the input does not inflate the peak RSS.

    python bench/explain.py                    # 10,000 letters, best of 3
    python bench/explain.py --n 1000 --repeat 5 --cpu 1
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    current_rss_mb,
    machine_note,
    peak_rss_mb,
    source_tree,
    spread,
    terminate_on_sigterm,
)

TARGET = 1000.0  # letters/s on one core (issue 3)


@dataclass
class Pass:
    """One pass over all letters: seconds per stage and the slowest letters."""

    read: float = 0.0
    parse: float = 0.0
    analyze: float = 0.0
    report: float = 0.0
    cpu: float = 0.0  # process CPU seconds for the whole pass, read included
    unreadable: int = 0
    slowest: list[tuple[float, str, int]] = field(default_factory=list)

    @property
    def pipeline(self) -> float:
        return self.parse + self.analyze + self.report


def run_pass(files: list[Path], explainer: object) -> Pass:
    """Explain every file once, timing each stage with perf_counter."""
    from mailroute.core.letter import parse
    from mailroute.core.verdict import analyze
    from mailroute.errors import LetterUnreadable

    context = explainer.context  # type: ignore[attr-defined]
    result = Pass()
    clock = time.perf_counter
    cpu_start = time.process_time()
    for path in files:
        t0 = clock()
        raw = path.read_bytes()
        t1 = clock()
        try:
            letter = parse(raw)
        except LetterUnreadable:
            result.unreadable += 1
            result.read += t1 - t0
            result.parse += clock() - t1
            continue
        t2 = clock()
        analysis = analyze(letter, context)
        t3 = clock()
        analysis.as_dict()
        t4 = clock()
        result.read += t1 - t0
        result.parse += t2 - t1
        result.analyze += t3 - t2
        result.report += t4 - t3
        result.slowest.append((t4 - t1, path.name, len(raw)))
        if len(result.slowest) > 50:
            result.slowest = sorted(result.slowest, reverse=True)[:5]
    result.slowest = sorted(result.slowest, reverse=True)[:5]
    result.cpu = time.process_time() - cpu_start
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="passes; the best is reported")
    parser.add_argument("--cpu", type=int, help="pin the process to this CPU")
    parser.add_argument("--live", action="store_true",
                        help="measure the working tree instead of a snapshot of HEAD")
    args = parser.parse_args()
    terminate_on_sigterm()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    workdir = Path(tempfile.mkdtemp(prefix="mailroute-bench-explain-"))
    try:
        with source_tree(args.live) as source:
            source.activate()
            return measure(args, source.label, workdir)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def measure(args: argparse.Namespace, label: str, workdir: Path) -> int:
    import mailroute
    from mailroute.config import Config
    from mailroute.ops.explain import Explainer

    # A child process writes the letters: the generator's garbage stays out of our RSS.
    mix = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("letters.py")), "--n", str(args.n),
         "--seed", str(args.seed), "--out", str(workdir)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    files = sorted(workdir.glob("*.eml"))
    explainer = Explainer.from_config(Config())
    gc.collect()
    baseline = current_rss_mb()
    print(f"# bench/explain.py: {label} ({Path(mailroute.__file__).parent})")
    print(f"# {machine_note()}")
    print("# " + mix.replace("\n", "\n# "))
    print(f"# RSS before the first letter: {baseline:.0f} MB")
    passes: list[Pass] = []
    for number in range(1, args.repeat + 1):
        result = run_pass(files, explainer)
        passes.append(result)
        print(f"pass {number}: {args.n / result.pipeline:7.0f} letters/s "
              f"(parse {result.parse:6.2f} s, analyze {result.analyze:6.2f} s, "
              f"as_dict {result.report:5.2f} s, read {result.read:5.2f} s; "
              f"{args.n / result.cpu:.0f} letters per CPU-second); "
              f"RSS now {current_rss_mb():.0f} MB", flush=True)
    best = min(passes, key=lambda p: p.pipeline)
    rates = [args.n / p.pipeline for p in passes]
    print("slowest letters of the best pass: " + ", ".join(
        f"{name} {seconds * 1000:.0f} ms ({size / 1000:.0f} KB)"
        for seconds, name, size in best.slowest))
    n = args.n
    print(
        f"explain {n} letters: {n / best.pipeline:.0f} letters/s "
        f"[{spread(rates)} over {len(passes)} passes; "
        f"{max(args.n / p.cpu for p in passes):.0f} per CPU-second]; "
        f"parse {n / best.parse:.0f}/s ({best.parse / n * 1e3:.2f} ms), "
        f"analyze {n / best.analyze:.0f}/s ({best.analyze / n * 1e3:.2f} ms), "
        f"as_dict {best.report / n * 1e3:.3f} ms; unreadable {best.unreadable}; "
        f"peak RSS {peak_rss_mb():.0f} MB (baseline {baseline:.0f} MB); "
        f"target > {TARGET:.0f}/s: {'met' if n / best.pipeline > TARGET else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
