"""`report`: requests, response times and SLA over a period."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from mailroute.cli.common import load_config, open_store
from mailroute.errors import MailrouteError


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the report commands to the parser."""
    report = commands.add_parser(
        "report", parents=[common], help="requests, response times and SLA over a period"
    )
    report.add_argument(
        "--from",
        dest="first",
        required=True,
        type=date.fromisoformat,
        metavar="DATE",
        help="first day, YYYY-MM-DD",
    )
    report.add_argument(
        "--to",
        dest="last",
        required=True,
        type=date.fromisoformat,
        metavar="DATE",
        help="last day (included), YYYY-MM-DD",
    )
    report.add_argument("--format", choices=["text", "json", "html"], default="text")
    report.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    report.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from mailroute.core.business_calendar import BusinessCalendar
    from mailroute.core.report import render_html, render_json, render_text
    from mailroute.pipeline.reports import build_report, period_for_days, sla_targets

    config = load_config(args)
    calendar = BusinessCalendar.from_config(config.business_hours)
    try:
        start, end = period_for_days(args.first, args.last, calendar)
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
