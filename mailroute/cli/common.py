"""What every command shares: loading the config, opening the store, printing rows."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from mailroute import config as config_module
from mailroute import logs
from mailroute.config import Config

EXIT_FAILURE, EXIT_CONFIG, EXIT_DATABASE = 1, 2, 3


def positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError("give more than 0 and at most 3600 seconds")
    return seconds


def aware_datetime(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date-time: {text!r}") from exc
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give a time zone, e.g. 2026-11-21T23:40:00+03:00")
    return moment


def parse_day(text: str, today: date) -> date:
    """``YYYY-MM-DD``, ``today``, ``yesterday`` or ``Nd`` (N days before ``today``)."""
    word = text.strip().lower()
    if word == "today":
        return today
    if word == "yesterday":
        return today - timedelta(days=1)
    if re.fullmatch(r"\d{1,4}d", word):
        return today - timedelta(days=int(word[:-1]))
    try:
        return date.fromisoformat(word)
    except ValueError:
        raise ValueError(
            f"not a day: {text!r} (give YYYY-MM-DD, today, yesterday or Nd, e.g. 7d)"
        ) from None


def day_argument(text: str) -> str:
    """Check a --from/--to value now; it is resolved in the desk's time zone later."""
    try:
        parse_day(text, date.today())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def load_config(args: argparse.Namespace) -> Config:
    path = config_module.resolve_path(getattr(args, "config", None))
    config = config_module.load(path)
    logs.configure(config.logging.level, config.logging.format)
    return config


def open_store(
    config: Config, *, require_current: bool = True, name: str = "mailroute command"
) -> Any:
    from mailroute.store import Store

    store = Store(config.database.url, name)
    store.use_webhooks(config.webhooks)
    if require_current:
        store.require_current()
    return store


def desk_day_start(day: date, zone: Any) -> datetime:
    """Midnight of ``day`` in the desk's time zone (``--since today`` means since then)."""
    return datetime.combine(day, datetime.min.time(), tzinfo=zone)


def print_rows(rows: list[dict[str, Any]], as_json: bool, columns: Sequence[str]) -> None:
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        print("none")
        return
    print_table([[cell(row.get(column)) for column in columns] for row in rows], columns)


def cell(value: Any, zone: tzinfo | None = None) -> str:
    """A value as a person reads it: '-' for nothing, lists joined, times to the minute
    in ``zone`` (the desk's) when given."""
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(cell(item, zone) for item in value)
    moment: datetime | None = value if isinstance(value, datetime) else None
    if isinstance(value, str) and ISO_MOMENT.match(value):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
    if moment is None:
        return str(value)
    if zone is not None and moment.tzinfo is not None:
        moment = moment.astimezone(zone)
    return moment.strftime("%Y-%m-%d %H:%M")


ISO_MOMENT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


def print_table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> None:
    """Rows under a header, columns aligned by display width (Cyrillic, CJK alike).

    On a terminal, a ruled header; in a pipe, plain space-separated columns with no
    colour codes and no wrapping, so ``grep``/``awk`` see one row per line.
    """
    from rich import box  # here: ~30 ms of imports that only a table needs
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    terminal = sys.stdout.isatty()
    console = Console(
        file=sys.stdout, highlight=False, soft_wrap=not terminal,
        width=None if terminal else 100_000, color_system="auto" if terminal else None,
    )
    table = Table(box=box.SIMPLE_HEAD if terminal else None, show_edge=False,
                  pad_edge=False, header_style="bold" if terminal else "")
    for header in headers:
        table.add_column(header.upper().replace("_", " "), no_wrap=not terminal,
                         overflow="fold" if terminal else "ignore")
    for row in rows:
        table.add_row(*(escape(text) for text in row))
    console.print(table)


def outcome_text(outcome: Any) -> str:
    parts = [f"letter {outcome.letter_id}: {outcome.state}"]
    if outcome.request:
        parts.append(f"request {outcome.request}")
    if outcome.reply:
        parts.append(f"{outcome.reply} queued")
    if outcome.detail:
        parts.append(outcome.detail)
    return ", ".join(parts)
