"""What an outbox pass after each filed batch costs, with SMTP sessions kept or not.

The outbox process of ``run --once`` (PostgreSQL) runs a pass after each batch intake
files. This queues ``--per-pass`` replies, runs one pass, and repeats ``--passes``
times in one event loop, once opening each pass's sessions anew (``kept=None``, what
the daemon's outbox job does) and once with ``KeptSessions`` (what the outbox process
does). It prints the CPU of this process (the outbox; queueing excluded), the SMTP
sink's (a process of its own), the connections made and the wall time, best of
``--repeat`` each, the two modes interleaved.

    python bench/outbox_passes.py                         # 40 passes of 45, PostgreSQL
    python bench/outbox_passes.py --db sqlite --passes 20
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import (
    add_source_arguments,
    machine_note,
    outbox_rows,
    process_cpu,
    smtp_sink_process,
    source_tree,
    terminate_on_sigterm,
)

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def queue(store: Any, count: int, start: int) -> None:
    from sqlalchemy import insert

    from mailroute.store.models import OutboxItem

    with store.transaction() as session:
        session.execute(insert(OutboxItem), outbox_rows(start, count, NOW))


def one_run(url: str, port: int, sink_pid: int, kept_sessions: bool, passes: int,
            per_pass: int) -> tuple[float, float, int, float]:
    """(outbox CPU s, sink CPU s, connections, wall s) of one series of passes."""
    from mailroute.config import RepliesConfig, SmtpConfig
    from mailroute.mail import outbox
    from mailroute.store import Store

    smtp = SmtpConfig(host="127.0.0.1", port=port, security="none", timeout=10)
    store = Store(url)
    store.upgrade()
    connects = [0]
    real_connect = outbox._connect

    async def counting(config: SmtpConfig) -> Any:
        connects[0] += 1
        return await real_connect(config)

    outbox._connect = counting  # type: ignore[assignment]

    async def series() -> tuple[float, float, float]:
        kept = outbox.KeptSessions(smtp) if kept_sessions else None
        cpu = wall = sink = 0.0
        try:
            for number in range(passes):
                queue(store, per_pass, number * per_pass + 1)
                sink0, cpu0, wall0 = process_cpu(sink_pid), time.process_time(), time.monotonic()
                report = await outbox.deliver_due_async(
                    store, smtp, RepliesConfig(), NOW, outbox.SESSIONS, kept=kept)
                cpu += time.process_time() - cpu0
                wall += time.monotonic() - wall0
                sink += process_cpu(sink_pid) - sink0
                if len(report.sent) != per_pass:
                    raise SystemExit(f"pass {number}: sent {len(report.sent)} of {per_pass}")
        finally:
            if kept is not None:
                await kept.close()
        return cpu, sink, wall

    try:
        cpu, sink, wall = asyncio.run(series())
    finally:
        outbox._connect = real_connect  # type: ignore[assignment]
        store.dispose()
    return cpu, sink, connects[0], wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passes", type=int, default=40)
    parser.add_argument("--per-pass", type=int, default=45)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--repeat", type=int, default=3)
    add_source_arguments(parser)
    args = parser.parse_args()
    terminate_on_sigterm()
    from backlog import database

    workdir = Path(tempfile.mkdtemp(prefix="mailroute-bench-outbox-"))
    with source_tree(args.live, args.rev) as source:
        source.activate()
        from mailroute import logs

        logs.configure("warning")  # a line a reply would be measured too
        try:
            with smtp_sink_process(source.env()) as (port, sink_pid):
                results: dict[bool, list[tuple[float, float, int, float]]] = {
                    False: [], True: []}
                for number in range(args.repeat):
                    for kept in (False, True):
                        with database(args.db, workdir, number) as url:
                            results[kept].append(one_run(url, port, sink_pid, kept,
                                                         args.passes, args.per_pass))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    replies = args.passes * args.per_pass
    print(f"# bench/outbox_passes.py: {source.label}; {machine_note()}")
    for kept in (False, True):
        cpu, sink_cpu, connects, wall = min(results[kept])
        print(f"{'kept sessions' if kept else 'sessions a pass'}: db={args.db} "
              f"{args.passes} passes x {args.per_pass} replies: outbox {cpu / replies * 1000:.3f}"
              f" ms of CPU a reply, SMTP sink {sink_cpu / replies * 1000:.3f} ms, "
              f"{connects} connections, wall {wall:.2f} s (best of {len(results[kept])}: "
              f"{', '.join(f'{c:.2f}' for c, *_ in results[kept])} s of outbox CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
