"""`tickets list|show|set-status`: the registry of requests."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, tzinfo
from typing import Any

from mailroute.cli.common import (
    EXIT_FAILURE,
    cell,
    day_argument,
    desk_day_start,
    load_config,
    open_store,
    parse_day,
    print_table,
)

PRIORITIES = ("critical", "normal", "low")
STATUSES = ("new", "awaiting_customer", "in_progress", "resolved", "closed")
DEFAULT_LIMIT = 50
LIST_COLUMNS = (
    ("number", "number"),
    ("status", "status"),
    ("request_type", "type"),
    ("priority", "priority"),
    ("organization", "organization"),
    ("requester", "requester"),
    ("subject", "subject"),
    ("arrived_at", "arrived"),
    ("first_response_due", "response due"),
    ("resolution_due", "resolution due"),
    ("breached", "breached"),
    ("messages", "msgs"),
)


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the tickets commands to the parser."""
    tickets = commands.add_parser("tickets", parents=[common], help="registered requests")
    ticket_commands = tickets.add_subparsers(title="tickets commands", metavar="ACTION")
    listing = ticket_commands.add_parser("list", parents=[common], help="list requests")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument("--type", dest="request_type", metavar="TYPE",
                         help="request type, e.g. incident, service_request")
    listing.add_argument("--priority", choices=PRIORITIES)
    listing.add_argument("--org", metavar="TEXT",
                         help="part of the organization's name or registration number")
    listing.add_argument("--queue")
    listing.add_argument("--breached", action="store_true",
                         help="only requests past a first-response or resolution due time")
    listing.add_argument("--since", type=day_argument, metavar="DAY",
                         help="arrived on or after: YYYY-MM-DD, today, yesterday or Nd")
    listing.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                         help=f"at most this many, newest first (default {DEFAULT_LIMIT}; 0: all)")
    listing.set_defaults(handler=cmd_tickets_list)
    show = ticket_commands.add_parser("show", parents=[common], help="one request in full")
    show.add_argument("number", help="SD-000001, or just 1")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_tickets_show)
    status = ticket_commands.add_parser(
        "set-status", parents=[common], help="change a request's status (kept in its history)"
    )
    status.add_argument("number", help="SD-000001, or just 1")
    status.add_argument("status", choices=STATUSES)
    status.add_argument("--note", help="why, for the history")
    status.set_defaults(handler=cmd_tickets_set_status)


def cmd_tickets_list(args: argparse.Namespace) -> int:
    from mailroute.core.business_calendar import BusinessCalendar
    from mailroute.ops.tickets import list_page
    from mailroute.store.repository import RequestFilter

    config = load_config(args)
    now = datetime.now(UTC)
    zone = BusinessCalendar.from_config(config.business_hours).zone
    since = None
    if args.since:
        since = desk_day_start(parse_day(args.since, now.astimezone(zone).date()), zone)
    where = RequestFilter(
        status=args.status, request_type=args.request_type, priority=args.priority,
        organization=args.org, queue=args.queue, since=since,
        breached_at=now if args.breached else None,
    )
    rows, total = list_page(open_store(config), max(args.limit, 0) or None, where, now)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no requests match" if total == 0 and _filtered(where) else "no requests yet")
        return 0
    print_table([[cell(row[key], zone) for key, _ in LIST_COLUMNS] for row in rows],
                [header for _, header in LIST_COLUMNS])
    if total > len(rows):
        print(f"... {total - len(rows)} more (narrow with filters, or --limit 0 for all)")
    return 0


def _filtered(where: Any) -> bool:
    return any(value is not None for value in vars(where).values())


def cmd_tickets_show(args: argparse.Namespace) -> int:
    from mailroute.core.business_calendar import BusinessCalendar
    from mailroute.ops.tickets import show_request

    config = load_config(args)
    zone = BusinessCalendar.from_config(config.business_hours).zone
    detail = show_request(open_store(config), args.number)
    if detail is None:
        print(f"mailroute: no request {args.number}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(detail, ensure_ascii=False, indent=2))
        return 0
    print(request_text(detail, zone))
    for title, key, columns in (
        ("Letters", "letters", ("id", "received_at", "state", "from", "message_id")),
        ("Replies", "replies", ("id", "kind", "state", "to", "not_before", "sent_at",
                                "attempts", "error")),
    ):
        print(f"\n{title}:")
        if detail[key]:
            print_table([[cell(item.get(c), zone) for c in columns] for item in detail[key]],
                        columns)
        else:
            print("  none")
    print("\nHistory:")
    for event in detail["events"]:
        print(f"  {cell(event['at'], zone)}  {event['kind']}{_event_detail(event)}")
    return 0


def request_text(detail: dict[str, Any], zone: tzinfo | None = None) -> str:
    """The head of `tickets show`: labelled lines (times in ``zone``), then the reasons
    one per line."""
    def when(key: str) -> str:
        return cell(detail[key], zone)

    responded = f" (responded {when('first_response_at')})" if detail["first_response_at"] else ""
    resolved = f" (resolved {when('resolved_at')})" if detail["resolved_at"] else ""
    requester = detail["requester"] or "-"
    if detail["requester_name"]:
        requester = f"{detail['requester_name']} <{requester}>"
    fields = [
        ("Request", f"{detail['number']}: {detail['request_type']}, {detail['priority']}"),
        ("Status", detail["status"]),
        ("Subject", cell(detail["subject"])),
        ("Requester", requester),
        ("Organization", _organization(detail)),
        ("Queue", cell(detail["queue"])),
        ("Language", cell(detail["language"])),
        ("Arrived", when("arrived_at")),
        ("Response due", when("first_response_due") + responded),
        ("Resolution due", when("resolution_due") + resolved),
        ("Breached", cell(detail["breached"])),
        ("Missing", cell(detail["missing"])),
        ("Clarifications", cell(detail["clarifications"])),
        ("Follows", cell(detail["parent"])),
    ]
    if detail["closed_at"]:
        fields.append(("Closed", when("closed_at")))
    width = max(len(label) for label, _ in fields) + 2
    lines = [f"{label + ':':<{width}}{value}" for label, value in fields]
    lines.append("Reasons:")
    lines.extend(f"  - {reason_text(reason)}" for reason in detail["reasons"])
    if not detail["reasons"]:
        lines.append("  none recorded")
    return "\n".join(lines)


def reason_text(reason: Any) -> str:
    """``rule: sets (detail)`` from a stored reason (a dict, or text from older rows)."""
    if not isinstance(reason, dict):
        return str(reason)
    text = str(reason.get("rule") or "?")
    if reason.get("sets"):
        text += f": {reason['sets']}"
    if reason.get("detail"):
        text += f" ({reason['detail']})"
    return text


def _organization(detail: dict[str, Any]) -> str:
    parts = [detail["organization"] or "unknown"]
    if detail["registration_number"]:
        parts.append(f"reg. no. {detail['registration_number']}")
    if detail["tier"]:
        parts.append(f"tier {detail['tier']}")
    return ", ".join(parts)


def _event_detail(event: dict[str, Any]) -> str:
    extra = {k: v for k, v in event.items() if k not in ("at", "kind") and v not in (None, "")}
    return ("  " + ", ".join(f"{k} {cell(v)}" for k, v in extra.items())) if extra else ""


def cmd_tickets_set_status(args: argparse.Namespace) -> int:
    from mailroute.ops.tickets import calendars, change_status
    from mailroute.store.repository import canonical_number

    config = load_config(args)
    changed = change_status(
        open_store(config), args.number, args.status, calendars(config), datetime.now(UTC),
        args.note,
    )
    if changed is None:
        print(f"mailroute: no request {args.number}", file=sys.stderr)
        return EXIT_FAILURE
    old, new = changed
    number = canonical_number(args.number)
    print(f"{number}: {old} -> {new}" if old != new else f"{number} already {new}")
    return 0
