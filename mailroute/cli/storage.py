"""`backup FILE` and `retention run`: the database over the years."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailroute.cli.common import load_config, open_store


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the storage commands to the parser."""
    backup = commands.add_parser(
        "backup", parents=[common],
        help="an online copy of the SQLite database (safe while the daemon runs)",
    )
    backup.add_argument("file", metavar="FILE")
    backup.add_argument("--force", action="store_true", help="replace FILE if it exists")
    backup.set_defaults(handler=cmd_backup)
    retention = commands.add_parser(
        "retention", parents=[common], help="purge old letters' bytes, anonymize old requests"
    )
    actions = retention.add_subparsers(title="retention commands", metavar="ACTION")
    run = actions.add_parser("run", parents=[common], help="one pass of [retention] now")
    run.add_argument("--dry-run", action="store_true", help="count, change nothing")
    run.set_defaults(handler=cmd_retention_run)


def cmd_backup(args: argparse.Namespace) -> int:
    from mailroute.store.backup import backup_sqlite

    config = load_config(args)
    size = backup_sqlite(config.database.url, Path(args.file), overwrite=args.force)
    print(f"{args.file}: {size:,} bytes, integrity ok")
    return 0


def cmd_retention_run(args: argparse.Namespace) -> int:
    from mailroute.pipeline.retention import run_retention

    config = load_config(args)
    if not (config.retention.raw_days or config.retention.anonymize_days):
        print("[retention] raw_days and anonymize_days are 0: everything is kept")
        return 0
    purged = run_retention(open_store(config), config.retention, datetime.now(UTC),
                           dry_run=args.dry_run)
    verb = "would be" if args.dry_run else "were"
    print(f"letters purged: {purged.letters}, attachment contents: {purged.blobs}, "
          f"raw replies: {purged.replies}, webhook deliveries: {purged.webhooks}, "
          f"requests anonymized: {purged.requests} "
          f"({verb} changed)")
    return 0
