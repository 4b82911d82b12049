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

from common import machine_note, source_tree, terminate_on_sigterm

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replies", type=int, default=9000)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rev", default="HEAD", help="the commit to measure (a snapshot of it)")
    parser.add_argument("--live", action="store_true", help="the working tree instead")
    args = parser.parse_args()
    terminate_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="mailroute-bench-counts-"))
    try:
        with source_tree(args.live, args.rev) as source:
            source.activate()
            from backlog import database
            from sqlalchemy import insert, text

            from mailroute.store import Store
            from mailroute.store.models import OutboxItem

            with database(args.db, workdir, 0) as url:
                store = Store(url)
                store.upgrade()
                rows = [{"kind": "acknowledgement", "sender": "desk@example.com",
                         "recipient": f"c{n}@dom{n % DOMAINS}.example",
                         "counted_as": f"c{n}@dom{n % DOMAINS}.example",
                         "recipient_domain": f"dom{n % DOMAINS}.example",
                         "message_id": f"<{n}@example.com>", "subject": "s",
                         "raw": b"x" * 3000, "state": "sent", "attempts": 1,
                         "not_before": NOW, "created_at": NOW}
                        for n in range(args.replies)]
                with store.transaction() as session:
                    session.execute(insert(OutboxItem), rows)
                if args.db == "postgresql":
                    with store.engine.connect() as conn:
                        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                            "VACUUM ANALYZE outbox")
                now = timed(store, args.repeat)
                with store.transaction() as session:
                    for statement in OLD_INDEXES:
                        session.execute(text(statement))
                if args.db == "postgresql":
                    with store.engine.connect() as conn:
                        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                            "VACUUM ANALYZE outbox")
                before = timed(store, args.repeat)
                store.dispose()
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
