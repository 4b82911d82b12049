"""`explain`: what letters would become, touching nothing."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailroute.cli.common import EXIT_FAILURE, aware_datetime, load_config


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the explain commands to the parser."""
    explain = commands.add_parser(
        "explain", parents=[common], help="what letters would become (touches nothing)"
    )
    explain.add_argument("files", nargs="+", metavar="FILE.eml")
    explain.add_argument("--json", action="store_true", help="one JSON object per line")
    explain.add_argument(
        "--received-at",
        metavar="ISO8601",
        type=aware_datetime,
        help="pretend the letter arrived at this moment (for SLA figures)",
    )
    explain.set_defaults(handler=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    from mailroute.ops.explain import Explainer

    # the text always shows the SLA; --json only when asked (its fields are a contract)
    with_sla = args.received_at is not None or not args.json
    explainer = Explainer.from_config(load_config(args), with_sla=with_sla,
                                      bounded=True)
    failures = 0
    try:
        for name in args.files:
            result = explainer.explain_file(Path(name), args.received_at or datetime.now(UTC))
            failures += "error" in result
            if args.json:
                print(json.dumps(result, ensure_ascii=False, default=str))
            else:
                print(_explain_text(name, result))
    finally:
        explainer.close()
    return EXIT_FAILURE if failures else 0


def _explain_text(name: str, result: dict[str, Any]) -> str:
    if "error" in result:
        return f"{name}: cannot explain: {result['error']}"
    lines = [f"{name}:"]
    for key in (
        "action",
        "ignore_reason",
        "request_type",
        "priority",
        "organization",
        "registration_number",
        "missing",
        "reply",
        "language",
        "queue",
    ):
        value = result.get(key)
        if value not in (None, [], ""):
            lines.append(f"  {key:20} {value if not isinstance(value, list) else ', '.join(value)}")
    lines.extend(_sla_lines(result.get("sla")))
    for reason in result.get("reasons", []):
        lines.append(f"  because {reason['rule']}: {reason['sets']} ({reason['detail']})")
    return "\n".join(lines)


def _sla_lines(sla: dict[str, Any] | None) -> list[str]:
    """The due times a request would get, in the desk's time zone."""
    if not sla:
        return []
    lines = [f"  {'arrived':20} {_moment(sla['received_at'])}"]
    for key, label in (("first_response_due", "first response by"),
                       ("resolution_due", "resolution by")):
        if sla.get(key):
            lines.append(f"  {label:20} {_moment(sla[key])}")
    if sla.get("paused"):
        lines.append(f"  {'sla':20} paused until the missing details arrive")
    if sla.get("tier"):
        lines.append(f"  {'tier':20} {sla['tier']}")
    return lines


def _moment(iso: str) -> str:
    return datetime.fromisoformat(iso).strftime("%d.%m.%Y %H:%M %z")
