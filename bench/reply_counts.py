"""What the reply counts of one decided batch cost once a backlog has queued many replies.

Each batch counts the automatic replies of the window, desk-wide and per recipient
domain (``repository.automatic_replies_since``, ``replies_to_domains_since``); while a
backlog drains, every reply it queued is in the window. This fills an outbox with
``--replies`` rows created at one moment, times each count (mean of ``--repeat``), and
then times it again with the outbox indexes of migration 0014 (``created_at`` and the
domain, without ``kind``) in place of today's, in the same database.

    python bench/reply_counts.py                       # 9,000 replies, SQLite
    python bench/reply_counts.py --db postgresql
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import (
    add_source_arguments,
    machine_note,
    outbox_rows,
    source_tree,
    terminate_on_sigterm,
)

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
DOMAINS = 150  # recipient domains of the replies; a batch asks for 60 of them
OLD_INDEXES = (
    "DROP INDEX ix_outbox_created_kind",
    "DROP INDEX ix_outbox_domain_created_kind",
    "CREATE INDEX ix_outbox_created ON outbox (created_at)",
    "CREATE INDEX ix_outbox_domain_created ON outbox (recipient_domain, created_at)",
)


def timed(store: Any, repeat: int) -> dict[str, float]:
    """Milliseconds a call of each count, mean of ``repeat`` after one warm-up."""
    from mailroute.store import repository as repo

    since = NOW - timedelta(hours=1)
    domains = [f"dom{number}.example" for number in range(60)]
    calls = {
        "desk-wide": lambda session: repo.automatic_replies_since(session, since),
        "per domain": lambda session: repo.replies_to_domains_since(session, domains, since),
    }
    result = {}
    with store.transaction() as session:
        for name, call in calls.items():
            call(session)
            started = time.perf_counter()
            for _ in range(repeat):
                call(session)
            result[name] = (time.perf_counter() - started) / repeat * 1000
    return result


def analyze(store: Any) -> None:
    """Fresh planner statistics on PostgreSQL (its plans follow them); SQLite needs none."""
    if store.is_sqlite:
        return
    with store.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
            "VACUUM ANALYZE outbox")


def measure(url: str, replies: int, repeat: int) -> tuple[dict[str, float], dict[str, float]]:
    """The counts' milliseconds with migration 0014's indexes, then with today's."""
    from sqlalchemy import insert, text

    from mailroute.store import Store
    from mailroute.store.models import OutboxItem

    store = Store(url)
    try:
        store.upgrade()
        with store.transaction() as session:
            session.execute(insert(OutboxItem),
                            outbox_rows(1, replies, NOW, state="sent", domains=DOMAINS,
                                        body_lines=270))
        analyze(store)
        now = timed(store, repeat)
        with store.transaction() as session:
            for statement in OLD_INDEXES:
                session.execute(text(statement))
        analyze(store)
        return timed(store, repeat), now
    finally:
        store.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replies", type=int, default=9000)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--repeat", type=int, default=20)
    add_source_arguments(parser)
    args = parser.parse_args()
    terminate_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="mailroute-bench-counts-"))
    try:
        with source_tree(args.live, args.rev) as source:
            source.activate()
            from backlog import database

            with database(args.db, workdir, 0) as url:
                before, now = measure(url, args.replies, args.repeat)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"# bench/reply_counts.py: {source.label}; {machine_note()}")
    for name in now:
        print(f"{name} count over {args.replies} replies in the window, db={args.db}: "
              f"{before[name]:.2f} ms with migration 0014's indexes, {now[name]:.2f} ms "
              f"with kind in the index")
    return 0


if __name__ == "__main__":
    sys.exit(main())
