"""`tickets list|show|set-status`: the registry of requests."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from mailroute.cli.common import EXIT_FAILURE, load_config, open_store


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the tickets commands to the parser."""
    tickets = commands.add_parser("tickets", parents=[common], help="registered requests")
    ticket_commands = tickets.add_subparsers(title="tickets commands", metavar="ACTION")
    listing = ticket_commands.add_parser("list", parents=[common], help="list requests")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--limit", type=int, default=None)
    listing.set_defaults(handler=cmd_tickets_list)
    show = ticket_commands.add_parser("show", parents=[common], help="one request in full")
    show.add_argument("number")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_tickets_show)
    status = ticket_commands.add_parser(
        "set-status", parents=[common], help="change a request's status (kept in its history)"
    )
    status.add_argument("number")
    status.add_argument(
        "status", choices=["new", "awaiting_customer", "in_progress", "resolved", "closed"]
    )
    status.add_argument("--note", help="why, for the history")
    status.set_defaults(handler=cmd_tickets_set_status)


def cmd_tickets_list(args: argparse.Namespace) -> int:
    from mailroute.ops.tickets import list_rows

    config = load_config(args)
    rows = list_rows(open_store(config), args.limit)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    for row in rows:
        print(
            f"{row['number']}  {row['status']:<18} {row['request_type']:<16} "
            f"{row['priority']:<8} {row['messages']:>3} msg  {row['requester']}  "
            f"{row['subject'] or ''}"
        )
    if not rows:
        print("no requests yet")
    return 0


def cmd_tickets_show(args: argparse.Namespace) -> int:
    from mailroute.ops.tickets import show_request

    config = load_config(args)
    detail = show_request(open_store(config), args.number)
    if detail is None:
        print(f"mailroute: no request {args.number}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(detail, ensure_ascii=False, indent=2))
        return 0
    for key, value in detail.items():
        if key in ("events", "letters", "replies"):
            print(f"{key}:")
            for item in value:
                print("  " + "  ".join(f"{k}={v}" for k, v in item.items()))
        else:
            print(f"{key:20} {value}")
    return 0


def cmd_tickets_set_status(args: argparse.Namespace) -> int:
    from mailroute.core.business_calendar import BusinessCalendar
    from mailroute.ops.tickets import change_status

    config = load_config(args)
    calendar = BusinessCalendar.from_config(config.business_hours)
    changed = change_status(
        open_store(config), args.number, args.status, calendar, datetime.now(UTC), args.note
    )
    if changed is None:
        print(f"mailroute: no request {args.number}", file=sys.stderr)
        return EXIT_FAILURE
    old, new = changed
    print(f"{args.number.upper()}: {old} -> {new}" if old != new else f"already {new}")
    return 0
