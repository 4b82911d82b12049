"""Where a cProfile run's own time went, summed by package (``bench/backlog.py --profile
FILE.cprofile`` writes one): how much is mailroute's code and how much SQLAlchemy's,
imaplib's, aiosmtplib's, logging's... Self time only, so nothing is counted twice.

    python bench/cprofile_by_package.py /tmp/run.cprofile [--top 25]
"""

from __future__ import annotations

import argparse
import pstats
import re
from collections import defaultdict

SITE = re.compile(r"site-packages/([^/]+)")
STDLIB = re.compile(r"lib/python3\.\d+/([^/]+)")
OURS = re.compile(r"mailroute/(\w+)")


def package_of(filename: str) -> str:
    """``sqlalchemy``, ``mailroute/pipeline``, ``stdlib:email``, ``built-in``..."""
    if filename.startswith("~") or filename == "<built-in>":
        return "built-in (C functions)"
    if match := SITE.search(filename):
        return match.group(1).removesuffix(".py")
    if match := OURS.search(filename):
        return f"mailroute/{match.group(1).removesuffix('.py')}"
    if match := STDLIB.search(filename):
        return f"stdlib:{match.group(1).removesuffix('.py')}"
    return filename


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    stats = pstats.Stats(args.profile)
    by_package: dict[str, float] = defaultdict(float)
    total = 0.0
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        by_package[package_of(filename)] += tottime
        total += tottime
    print(f"{total:.2f} s of own time in all")
    for package, seconds in sorted(by_package.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{seconds:8.2f} s {seconds / total:6.1%}  {package}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
