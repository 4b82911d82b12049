"""The ``mailroute`` command. The only place that prints for people or exits.

Exit codes: 0 success, 1 failure, 2 bad configuration or usage, 3 database not
ready (run ``mailroute db upgrade``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from mailroute import __version__, logs
from mailroute import config as config_module
from mailroute.config import Config
from mailroute.errors import ConfigError, DatabaseNotReady, MailrouteError

EXIT_FAILURE, EXIT_CONFIG, EXIT_DATABASE = 1, 2, 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_CONFIG
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        print(f"mailroute: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except DatabaseNotReady as exc:
        print(f"mailroute: {exc}", file=sys.stderr)
        return EXIT_DATABASE
    except MailrouteError as exc:
        print(f"mailroute: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        return EXIT_FAILURE


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: $MAILROUTE_CONFIG, then /etc/mailroute/config.toml)",
    )
    parser = argparse.ArgumentParser(
        prog="mailroute",
        description="Turn a ServiceDesk mailbox into a ticket registry.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"mailroute {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = commands.add_parser("run", parents=[common], help="run the daemon")
    run.add_argument(
        "--once", action="store_true", help="drain the mailbox, send due replies, exit"
    )
    run.set_defaults(handler=cmd_run)

    db = commands.add_parser("db", parents=[common], help="database schema")
    db_commands = db.add_subparsers(title="db commands", metavar="ACTION")
    upgrade = db_commands.add_parser("upgrade", parents=[common], help="apply migrations")
    upgrade.set_defaults(handler=cmd_db_upgrade)

    check = commands.add_parser(
        "check-config", parents=[common], help="validate and print the effective config"
    )
    check.set_defaults(handler=cmd_check_config)

    explain = commands.add_parser(
        "explain", parents=[common], help="what letters would become (touches nothing)"
    )
    explain.add_argument("files", nargs="+", metavar="FILE.eml")
    explain.add_argument("--json", action="store_true", help="one JSON object per line")
    explain.add_argument(
        "--received-at",
        metavar="ISO8601",
        type=_aware_datetime,
        help="pretend the letter arrived at this moment (for SLA figures)",
    )
    explain.set_defaults(handler=cmd_explain)

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

    status = commands.add_parser(
        "status", parents=[common], help="health: last poll, backlog, outbox, errors"
    )
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)

    quarantine = commands.add_parser(
        "quarantine", parents=[common], help="letters that could not be processed"
    )
    q_commands = quarantine.add_subparsers(title="quarantine commands", metavar="ACTION")
    q_list = q_commands.add_parser("list", parents=[common], help="quarantined letters")
    q_list.add_argument("--json", action="store_true")
    q_list.set_defaults(handler=cmd_quarantine_list)
    q_show = q_commands.add_parser("show", parents=[common], help="one letter, with the error")
    q_show.add_argument("id", type=int)
    q_show.add_argument("--raw", action="store_true", help="print the letter's stored bytes")
    q_show.set_defaults(handler=cmd_quarantine_show)
    q_retry = q_commands.add_parser("retry", parents=[common], help="process it again")
    q_retry.add_argument("id", type=int)
    q_retry.add_argument(
        "--letter-seconds", type=_positive_seconds, metavar="SECONDS",
        help="CPU budget for this letter instead of [limits] letter_seconds",
    )
    q_retry.set_defaults(handler=cmd_quarantine_retry)

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

    orgs = commands.add_parser("orgs", parents=[common], help="the customer registry")
    org_commands = orgs.add_subparsers(title="orgs commands", metavar="ACTION")
    org_import = org_commands.add_parser(
        "import", parents=[common], help="replace the imported organizations with a CSV file"
    )
    org_import.add_argument("file", metavar="FILE.csv")
    org_import.set_defaults(handler=cmd_orgs_import)
    org_list = org_commands.add_parser("list", parents=[common], help="imported organizations")
    org_list.add_argument("--json", action="store_true")
    org_list.set_defaults(handler=cmd_orgs_list)

    replay = commands.add_parser(
        "replay", parents=[common], help="push a letter file through the real pipeline"
    )
    replay.add_argument("file", metavar="FILE.eml")
    replay.set_defaults(handler=cmd_replay)

    demo = commands.add_parser(
        "demo", parents=[common], help="run the real pipeline on bundled sample letters"
    )
    demo.add_argument("--keep", metavar="DIR", help="keep the demo's Maildir and database here")
    demo.set_defaults(handler=cmd_demo)
    return parser


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError("give more than 0 and at most 3600 seconds")
    return seconds


def _aware_datetime(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date-time: {text!r}") from exc
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give a time zone, e.g. 2026-11-21T23:40:00+03:00")
    return moment


def load_config(args: argparse.Namespace) -> Config:
    path = config_module.resolve_path(getattr(args, "config", None))
    config = config_module.load(path)
    logs.configure(config.logging.level, config.logging.format)
    return config


def open_store(config: Config, *, require_current: bool = True) -> Any:
    from mailroute.store import Store

    store = Store(config.database.url)
    if require_current:
        store.require_current()
    return store


# ------------------------------------------------------------------------ commands


def cmd_run(args: argparse.Namespace) -> int:
    from mailroute.service.daemon import Daemon

    config = load_config(args)
    if not (config.mailbox.host or config.mailbox.maildir):
        raise ConfigError("mailbox.host: set the IMAP server (or mailbox.maildir) to run")
    store = open_store(config)
    daemon = Daemon(config, store, config_path=config.source)
    if args.once:
        report = daemon.run_once()
        print(_run_summary(report), file=sys.stderr)
        return 0
    daemon.run_forever()
    return 0


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
    from mailroute.core.business_calendar import BusinessCalendar
    from mailroute.service.daemon import calendar_warning

    config = load_config(args)
    try:
        calendar = BusinessCalendar.from_config(config.business_hours)
    except ValueError as exc:
        raise ConfigError(f"business_hours: {exc}") from None
    warning = calendar_warning(calendar, datetime.now(UTC))
    if warning:
        print(f"mailroute: warning: {warning}", file=sys.stderr)
    print(f"# {config.source or 'built-in defaults (no config file)'}: valid")
    print(json.dumps(config_module.masked(config), ensure_ascii=False, indent=2, default=str))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from mailroute.ops.explain import Explainer

    explainer = Explainer.from_config(load_config(args), with_sla=args.received_at is not None,
                                      bounded=True)
    failures = 0
    for name in args.files:
        result = explainer.explain_file(Path(name), args.received_at or datetime.now(UTC))
        failures += "error" in result
        if args.json:
            print(json.dumps(result, ensure_ascii=False, default=str))
        else:
            print(_explain_text(name, result))
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
    for reason in result.get("reasons", []):
        lines.append(f"  because {reason['rule']}: {reason['sets']} ({reason['detail']})")
    return "\n".join(lines)


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


def cmd_status(args: argparse.Namespace) -> int:
    from mailroute.ops.health import Health, check_health, database_file_problems, render

    config = load_config(args)
    problems = database_file_problems(config.database.url)
    if problems:
        health = Health(problems=problems)
    else:
        health = check_health(open_store(config), config.health, datetime.now(UTC),
                              timedelta(seconds=config.replies.suppress_for),
                              letter_seconds=config.limits.letter_seconds)
    print(json.dumps(health.as_dict(), indent=2) if args.json else render(health))
    return 0 if health.healthy else EXIT_FAILURE


def _print_rows(rows: list[dict[str, Any]], as_json: bool, columns: Sequence[str]) -> None:
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        print(
            "  ".join(
                str(row.get(column) if row.get(column) is not None else "-") for column in columns
            )
        )
    if not rows:
        print("none")


def cmd_quarantine_list(args: argparse.Namespace) -> int:
    from mailroute.ops.letters import quarantined

    rows = quarantined(open_store(load_config(args)))
    _print_rows(rows, args.json, ("id", "received_at", "from", "stage", "error"))
    return 0


def cmd_quarantine_show(args: argparse.Namespace) -> int:
    from mailroute.ops.letters import letter_bytes, letter_detail

    store = open_store(load_config(args))
    if args.raw:
        raw = letter_bytes(store, args.id)
        if raw is None:
            raise MailrouteError(f"no letter {args.id}")
        sys.stdout.buffer.write(raw)
        return 0
    detail = letter_detail(store, args.id)
    if detail is None:
        raise MailrouteError(f"no letter {args.id}")
    for key, value in detail.items():
        print(f"{key:12} {value}")
    return 0


def cmd_quarantine_retry(args: argparse.Namespace) -> int:
    from mailroute.ops.letters import retry_letter
    from mailroute.pipeline.decide import Pipeline

    config = load_config(args)
    store = open_store(config)
    pipeline = Pipeline.from_config(config, store)
    if args.letter_seconds is not None:
        pipeline = dataclasses.replace(pipeline, letter_seconds=args.letter_seconds)
    try:
        outcome = retry_letter(store, pipeline, args.id, datetime.now(UTC))
    except LookupError as exc:
        raise MailrouteError(str(exc.args[0])) from None
    print(_outcome_text(outcome))
    return 0 if outcome.state != "quarantined" else EXIT_FAILURE


def cmd_suppressions_list(args: argparse.Namespace) -> int:
    from mailroute.ops.letters import suppression_rows

    config = load_config(args)
    rows = suppression_rows(open_store(config), datetime.now(UTC),
                            timedelta(seconds=config.replies.suppress_for))
    _print_rows(rows, args.json, ("address", "since", "until", "reason"))
    return 0


def cmd_suppressions_lift(args: argparse.Namespace) -> int:
    from mailroute.ops.letters import lift_suppression

    if not lift_suppression(open_store(load_config(args)), args.address):
        raise MailrouteError(f"{args.address} is not suppressed")
    print(f"{args.address.strip().lower()} will be answered again")
    return 0


def cmd_outbox_list(args: argparse.Namespace) -> int:
    from mailroute.ops.letters import outbox_rows

    rows = outbox_rows(open_store(load_config(args)), args.state)
    _print_rows(rows, args.json, ("id", "state", "kind", "to", "due", "attempts", "error"))
    return 0


def cmd_outbox_retry(args: argparse.Namespace) -> int:
    from mailroute.ops.letters import retry_reply

    try:
        row = retry_reply(open_store(load_config(args)), args.id, datetime.now(UTC))
    except LookupError as exc:
        raise MailrouteError(str(exc.args[0])) from None
    print(f"outbox {row['id']} to {row['to']}: pending again, sent at the next outbox run")
    return 0


def cmd_orgs_import(args: argparse.Namespace) -> int:
    from mailroute.ops.customers import import_csv

    count = import_csv(open_store(load_config(args)), Path(args.file), datetime.now(UTC))
    print(
        f"{count} organizations imported; reload the daemon to use them "
        "(systemctl reload mailroute)"
    )
    return 0


def cmd_orgs_list(args: argparse.Namespace) -> int:
    from mailroute.pipeline.customers import imported

    rows = [org.model_dump() for org in imported(open_store(load_config(args)))]
    for row in rows:
        row["registration_numbers"] = ";".join(row["registration_numbers"])
        row["domains"] = ";".join(row["domains"])
    _print_rows(rows, args.json, ("name", "registration_numbers", "domains", "tier"))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from mailroute.ops.letters import replay
    from mailroute.pipeline.decide import Pipeline

    config = load_config(args)
    try:
        raw = Path(args.file).read_bytes()
    except OSError as exc:
        raise MailrouteError(f"{args.file}: {exc.strerror}") from None
    store = open_store(config)
    outcome, letter_id = replay(store, Pipeline.from_config(config, store), raw, datetime.now(UTC))
    if outcome is None:
        print(
            f"already stored as letter {letter_id}; nothing done "
            f"(see `mailroute quarantine show {letter_id}`)"
        )
        return 0
    print(_outcome_text(outcome))
    return 0 if outcome.state != "quarantined" else EXIT_FAILURE


def _outcome_text(outcome: Any) -> str:
    parts = [f"letter {outcome.letter_id}: {outcome.state}"]
    if outcome.request:
        parts.append(f"request {outcome.request}")
    if outcome.reply:
        parts.append(f"{outcome.reply} queued")
    if outcome.detail:
        parts.append(outcome.detail)
    return ", ".join(parts)


def cmd_demo(args: argparse.Namespace) -> int:
    from mailroute.service.demo import run_demo

    return run_demo(sys.stdout, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
