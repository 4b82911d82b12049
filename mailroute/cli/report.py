"""`report`: requests, response times and SLA over a period."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailroute.cli.common import day_argument, load_config, open_store, parse_day
from mailroute.errors import MailrouteError


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the report commands to the parser."""
    report = commands.add_parser(
        "report", parents=[common], help="requests, response times and SLA over a period"
    )
    report.add_argument(
        "--from",
        dest="first",
        type=day_argument,
        metavar="DAY",
        help="first day: YYYY-MM-DD, today, yesterday or Nd (N days ago); default 7d",
    )
    report.add_argument(
        "--to",
        dest="last",
        type=day_argument,
        metavar="DAY",
        help="last day (included), as --from; default today",
    )
    report.add_argument("--format", choices=["text", "json", "html"], default="text")
    report.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    report.set_defaults(handler=cmd_report)


DEFAULT_FROM = "7d"  # with --to today: the last 7 days and today


def cmd_report(args: argparse.Namespace) -> int:
    from mailroute.core.business_calendar import BusinessCalendar
    from mailroute.core.report import render_html, render_json, render_text
    from mailroute.pipeline.reports import build_report, period_for_days, sla_targets

    config = load_config(args)
    calendar = BusinessCalendar.from_config(config.business_hours)
    today = datetime.now(calendar.zone).date()
    first = parse_day(args.first or DEFAULT_FROM, today)
    last = parse_day(args.last or "today", today)
    try:
        start, end = period_for_days(first, last, calendar)
    except ValueError as exc:
        raise MailrouteError(f"report: {exc}") from None
    built = build_report(
        open_store(config), calendar, start, end, datetime.now(UTC), targets=sla_targets(config.sla)
    )
    renderers = {"text": render_text, "json": render_json, "html": render_html}
    output = renderers[args.format](built)
    if args.output:
        Path(args.output).write_text(output, encoding="utf-8")
        print(f"report written to {args.output}", file=sys.stderr)
    else:
        print(output)
    return 0
