"""`status`: is the daemon doing its job (exit 1 when not), for people and monitoring."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from mailroute.cli.common import EXIT_FAILURE, load_config, open_store


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the status commands to the parser."""
    status = commands.add_parser(
        "status", parents=[common], help="health: last poll, backlog, outbox, errors"
    )
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    from mailroute.ops.health import (
        Health,
        about,
        check_health,
        database_file_problems,
        mailbox_labels,
        render,
    )

    config = load_config(args)
    now = datetime.now(UTC)
    problems = database_file_problems(config.database.url)
    if problems:
        health = Health(problems=problems)
    else:
        health = check_health(open_store(config), config.health, now,
                              timedelta(seconds=config.replies.suppress_for),
                              letter_seconds=config.limits.letter_seconds,
                              labels=mailbox_labels(config))
    if args.json:
        print(json.dumps(health.as_dict() | about(config, health, now), indent=2))
    else:
        print(render(health))
    return 0 if health.healthy else EXIT_FAILURE
