"""What having letters understood in worker processes costs the daemon's own process.

Intake hands each batch to ``pipeline.workers.Understanding`` and takes the verdicts
back; the parsing itself runs in the workers, but feeding and watching them runs in the
daemon's process, beside intake, on the interpreter lock intake needs. This measures
that share alone: the CPU time of this process (all its threads) while N letters are
understood in batches, best of ``--repeat``. The workers are started before the clock
starts (a daemon keeps them between passes).

    python bench/understanding.py                     # 2,000 letters, 2 workers
    python bench/understanding.py --rev 1636bf9       # an earlier commit, to compare
"""

from __future__ import annotations

import argparse
import sys
import time

from common import add_source_arguments, machine_note, source_tree, terminate_on_sigterm
from letters import generate


def measure(raws: list[bytes], workers: int, batch: int, repeat: int) -> list[tuple[float, float]]:
    """(CPU seconds of this process, wall seconds) for each pass over ``raws``."""
    from mailroute import config
    from mailroute.core.letter import ParseLimits
    from mailroute.packaged import analysis_context
    from mailroute.pipeline.workers import Understanding

    context = analysis_context(config.Config())
    understanding = Understanding(context, ParseLimits(), workers, letter_seconds=30.0)
    try:
        for start in range(workers):  # every worker started, off the clock
            understanding.understand_all(raws[start : start + 1])
        passes = []
        for _ in range(repeat):
            cpu, wall = time.process_time(), time.monotonic()
            jobs = [understanding.submit(raws[i : i + batch]) for i in range(0, len(raws), batch)]
            verdicts = [verdict for job in jobs for verdict in understanding.results(job)]
            passes.append((time.process_time() - cpu, time.monotonic() - wall))
            if len(verdicts) != len(raws):
                raise SystemExit(f"{len(verdicts)} verdicts for {len(raws)} letters")
        return passes
    finally:
        understanding.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=50, help="letters a job (batch_size)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    add_source_arguments(parser)
    args = parser.parse_args()
    terminate_on_sigterm()
    raws = [letter.raw for letter in generate(args.n, args.seed)]
    with source_tree(args.live, args.rev) as source:
        source.activate()
        passes = measure(raws, args.workers, args.batch, args.repeat)
    cpu, wall = min(passes)
    print(f"# bench/understanding.py: {source.label}; {machine_note()}")
    print(f"understanding n={args.n} workers={args.workers} batch={args.batch}: the daemon's "
          f"process spent {cpu:.2f} s of CPU ({cpu / args.n * 1000:.3f} ms a letter, best of "
          f"{len(passes)}: {', '.join(f'{c:.2f}' for c, _w in passes)} s); wall {wall:.2f} s "
          f"({args.n / wall:.0f} letters/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
