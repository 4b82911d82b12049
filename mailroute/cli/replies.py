"""`outbox list|retry` and `suppressions list|lift`: the replies, and who is not answered."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

from mailroute.cli.common import load_config, open_store, print_rows
from mailroute.errors import MailrouteError


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the replies commands to the parser."""
    outbox = commands.add_parser("outbox", parents=[common], help="replies waiting or sent")
    o_commands = outbox.add_subparsers(title="outbox commands", metavar="ACTION")
    o_list = o_commands.add_parser("list", parents=[common], help="outbox rows")
    o_list.add_argument("--state", choices=["pending", "sent", "failed"])
    o_list.add_argument("--json", action="store_true")
    o_list.set_defaults(handler=cmd_outbox_list)
    o_retry = o_commands.add_parser("retry", parents=[common], help="send a failed reply again")
    o_retry.add_argument("id", type=int)
    o_retry.set_defaults(handler=cmd_outbox_retry)

    suppressions = commands.add_parser(
        "suppressions", parents=[common], help="addresses not answered after a permanent bounce"
    )
    s_commands = suppressions.add_subparsers(title="suppressions commands", metavar="ACTION")
    s_list = s_commands.add_parser("list", parents=[common], help="active suppressions")
    s_list.add_argument("--json", action="store_true")
    s_list.set_defaults(handler=cmd_suppressions_list)
    s_lift = s_commands.add_parser("lift", parents=[common], help="answer an address again")
    s_lift.add_argument("address")
    s_lift.set_defaults(handler=cmd_suppressions_lift)


def cmd_outbox_list(args: argparse.Namespace) -> int:
    from mailroute.ops.letters import outbox_rows

    rows = outbox_rows(open_store(load_config(args)), args.state)
    print_rows(rows, args.json, ("id", "state", "kind", "to", "due", "attempts", "error"))
    return 0


def cmd_outbox_retry(args: argparse.Namespace) -> int:
    from mailroute.ops.letters import retry_reply

    try:
        row = retry_reply(open_store(load_config(args)), args.id, datetime.now(UTC))
    except LookupError as exc:
        raise MailrouteError(str(exc.args[0])) from None
    print(f"outbox {row['id']} to {row['to']}: pending again, sent at the next outbox run")
    return 0


def cmd_suppressions_list(args: argparse.Namespace) -> int:
    from mailroute.ops.letters import suppression_rows

    config = load_config(args)
    rows = suppression_rows(open_store(config), datetime.now(UTC),
                            timedelta(seconds=config.replies.suppress_for))
    print_rows(rows, args.json, ("address", "since", "until", "reason"))
    return 0


def cmd_suppressions_lift(args: argparse.Namespace) -> int:
    from mailroute.ops.letters import lift_suppression

    if not lift_suppression(open_store(load_config(args)), args.address):
        raise MailrouteError(f"{args.address} is not suppressed")
    print(f"{args.address.strip().lower()} will be answered again")
    return 0
