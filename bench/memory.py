"""Issue 7: peak RSS of ``mailroute run --once`` by backlog size and for one huge letter.

Three measurements of the real CLI in a subprocess (peak RSS from ``wait4``):

1. an empty mailbox: what imports and set-up cost before any letter;
2. backlogs of N letters (default 1,000 and 10,000; 15 % with attachments) from Dovecot,
   using the same runs as ``bench/backlog.py`` (so the count checks apply);
3. one 50 MB letter (a short request with a 37 MB PDF, under the default 50 MiB
   ``max_message_bytes``), from a Maildir and from Dovecot.

For the huge letter it also traces, in this process, the peak Python allocation of the
steps that copy the letter (``fingerprint``, ``parse``, ``analyze``) as multiples of its
size, to show where the copies come from.

    python bench/memory.py                       # all of it, SQLite (~10 min)
    python bench/memory.py --sizes 1000 --db postgresql
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from backlog import database, one_run, report, run_mailroute, upgrade
from common import Source, add_source_arguments, machine_note, source_tree, terminate_on_sigterm
from letters import big_letter

TARGET_MB = 200.0  # at N = 10,000 with attachments (issue 7)


def huge_run(source: Source, workdir: Path, db: str, raw: bytes, via: str,
             dovecot: Any, sink: Any, baseline: float = 0.0) -> tuple[str, float]:
    """``run --once`` on a mailbox holding only ``raw`` (or nothing, when it is empty)."""
    from support.configs import write_config

    tag = f"{via}-{len(raw)}"
    account = None
    maildir = None
    if via == "maildir":
        maildir = workdir / f"Maildir-{tag}"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True)
        if raw:
            (maildir / "new" / f"{int(time.time())}.big.bench").write_bytes(raw)
    else:
        account = dovecot.new_account()
        if raw:
            with account.client() as imap:
                imap.append("INBOX", raw)
    sink.clear()
    with database(db, workdir, hash(tag) & 0xFFFF) as url:
        config = write_config(workdir / f"config-{tag}.toml", account=account, sink=sink,
                              database_url=url, maildir=maildir, window="always")
        upgrade(source, config)
        log = workdir / f"mailroute-{tag}.log"
        usage = run_mailroute(source, config, log, None)
        wall, code = usage.wall, usage.code
        summary = next((x for x in reversed(log.read_text(errors="replace").splitlines())
                        if x.startswith("mailroute:")), f"(exit {code}, no summary)")
    if maildir is not None:
        shutil.rmtree(maildir, ignore_errors=True)
    rss = usage.rss_mb
    size = len(raw) / 1e6
    if not raw:
        return f"empty mailbox via {via}, db={db}: peak RSS {rss:.0f} MB; {wall:.1f} s", rss
    extra = (rss - baseline) / size
    return (f"one letter of {size:.1f} MB via {via}, db={db}: peak RSS {rss:.0f} MB, "
            f"{rss - baseline:.0f} MB above the empty run = {extra:.1f}x the letter; {wall:.1f} s; "
            f"exit {code}; "
            f"{summary.removeprefix('mailroute: ')}"), rss


def traced(raw: bytes) -> str:
    """Peak traced allocation of each step that touches the whole letter, in letter sizes."""
    from mailroute.config import Config
    from mailroute.core.letter import parse
    from mailroute.core.verdict import analyze
    from mailroute.ops.explain import Explainer
    from mailroute.store.repository import fingerprint

    context = Explainer.from_config(Config()).context
    size = len(raw)
    results = []
    tracemalloc.start()
    try:
        for name, step in (("fingerprint", lambda: fingerprint(raw)),
                           ("parse", lambda: parse(raw))):
            tracemalloc.reset_peak()
            started = time.perf_counter()
            value = step()
            seconds = time.perf_counter() - started
            _now, peak = tracemalloc.get_traced_memory()
            results.append(f"{name} {peak / size:.1f}x ({peak / 1e6:.0f} MB, {seconds:.2f} s)")
            if name == "parse":
                letter = value
        tracemalloc.reset_peak()
        started = time.perf_counter()
        analyze(letter, context)
        seconds = time.perf_counter() - started
        _now, peak = tracemalloc.get_traced_memory()
        results.append(f"analyze {peak / size:.1f}x ({peak / 1e6:.0f} MB, {seconds:.2f} s)")
    finally:
        tracemalloc.stop()
    return "in-process peak allocation while holding the letter: " + ", ".join(results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10_000],
                        help="backlog sizes to run (none: skip the backlogs)")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--big", type=int, default=50_000_000, help="bytes of the huge letter")
    parser.add_argument("--seed", type=int, default=7)
    add_source_arguments(parser)
    args = parser.parse_args()
    terminate_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="mailroute-bench-memory-"))
    try:
        with contextlib.ExitStack() as stack:
            source = stack.enter_context(source_tree(args.live, rev=args.rev))
            source.activate()
            from support.dovecot import DovecotServer
            from support.smtp import SmtpSink

            sink = stack.enter_context(SmtpSink())
            dovecot = stack.enter_context(DovecotServer())
            print(f"# bench/memory.py: {source.label}; {machine_note()}", flush=True)
            line, baseline = huge_run(source, workdir, args.db, b"", "maildir", dovecot, sink)
            print(line, flush=True)
            peaks = {}
            for number, n in enumerate(args.sizes, 1):
                options = argparse.Namespace(n=n, db=args.db, seed=args.seed, repeat=1,
                                             log_level="info", profile=None, keep_log=None)
                run = one_run(options, source, dovecot, sink, workdir, 100 + number)
                peaks[n] = run.rss_mb
                print(report(run, source.label), flush=True)
            if peaks:
                largest = max(peaks)
                verdict = "met" if peaks[largest] <= TARGET_MB else "NOT met"
                print("peak RSS by backlog: " + ", ".join(
                    f"N={n}: {mb:.0f} MB" for n, mb in peaks.items())
                    + f" (target <= {TARGET_MB:.0f} MB at N=10,000: "
                    + (verdict if largest >= 10_000 else "not measured") + ")", flush=True)
            raw = big_letter(args.big, args.seed)
            for via in ("maildir", "imap"):
                line, _rss = huge_run(source, workdir, args.db, raw, via, dovecot, sink, baseline)
                print(line, flush=True)
            print(traced(raw), flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
