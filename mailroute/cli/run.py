"""`run`, `db upgrade`, `check-config` and `demo`: the daemon and what it needs before it starts."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from mailroute import config as config_module
from mailroute import startup
from mailroute.cli.common import load_config, open_store
from mailroute.errors import ConfigError


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the run commands to the parser."""
    run = commands.add_parser("run", parents=[common], help="run the daemon")
    run.add_argument(
        "--once", action="store_true", help="drain the mailbox, send due replies, exit"
    )
    run.add_argument(
        "--no-replies", action="store_true",
        help="with --once: register every letter, queue and send no reply (importing a history)",
    )
    run.set_defaults(handler=cmd_run, settles_itself=True)

    db = commands.add_parser("db", parents=[common], help="database schema")
    db_commands = db.add_subparsers(title="db commands", metavar="ACTION")
    upgrade = db_commands.add_parser("upgrade", parents=[common], help="apply migrations")
    upgrade.set_defaults(handler=cmd_db_upgrade)

    check = commands.add_parser(
        "check-config", parents=[common], help="validate and print the effective config"
    )
    check.set_defaults(handler=cmd_check_config)

    demo = commands.add_parser(
        "demo", parents=[common], help="run the real pipeline on bundled sample letters"
    )
    demo.add_argument("--keep", metavar="DIR", help="keep the demo's Maildir and database here")
    demo.set_defaults(handler=cmd_demo)


def cmd_run(args: argparse.Namespace) -> int:
    from mailroute.pipeline.processes import start_early

    start_early()  # first: its imports run on the other core while ours below run on this one
    from mailroute.service.config_check import judge
    from mailroute.service.daemon import Daemon

    config = load_config(args)
    judge(config, datetime.now(UTC))  # its warnings are logged again by the daemon at start
    if args.no_replies and not args.once:
        raise ConfigError("--no-replies: only with --once (a history is imported in one pass)")
    if args.no_replies:
        replies = config.replies.model_copy(update={"enabled": False})
        config = config.model_copy(update={"replies": replies})
    store = open_store(config, name="mailroute daemon")
    daemon = Daemon(config, store, config_path=config.source)
    startup.settle()  # start-up is over: mailroute.startup
    if args.once:
        with _progress_bar() as counted:
            report = daemon.run_once(send=not args.no_replies, counted=counted)
        print(_run_summary(report), file=sys.stderr)
        return 0
    daemon.run_forever()
    return 0


@contextmanager
def _progress_bar() -> Iterator[Callable[[int, int], None] | None]:
    """A bar on a terminal while `run --once` drains a backlog; nothing otherwise (a log
    file or a pipe gets the progress lines of the log instead)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("letters"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task("letters", total=None)

        def counted(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield counted


def _run_summary(report: Any) -> str:
    drained, delivery = report.drain, report.delivery
    states = ", ".join(
        f"{state}={drained.count(state)}"
        for state in ("processed", "follow_up", "note", "ignored", "duplicate", "quarantined")
    )
    return (
        f"mailroute: fetched {drained.fetched} letter(s): {states}; replies sent "
        f"{len(delivery.sent)}, retrying {len(delivery.retried)}, failed {len(delivery.failed)}"
    )


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    config = load_config(args)
    store = open_store(config, require_current=False)
    revision = store.upgrade()
    print(f"database at revision {revision}")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from mailroute.service.config_check import judge

    config = load_config(args)
    for warning in judge(config, datetime.now(UTC)):
        print(f"mailroute: warning: {warning}", file=sys.stderr)
    print(f"# {config.source or 'built-in defaults (no config file)'}: valid")
    print(json.dumps(config_module.masked(config), ensure_ascii=False, indent=2, default=str))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mailroute.service.demo import run_demo

    return run_demo(sys.stdout, keep=args.keep)
