"""What every command shares: loading the config, opening the store, printing rows."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import datetime
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


def print_rows(rows: list[dict[str, Any]], as_json: bool, columns: Sequence[str]) -> None:
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


def outcome_text(outcome: Any) -> str:
    parts = [f"letter {outcome.letter_id}: {outcome.state}"]
    if outcome.request:
        parts.append(f"request {outcome.request}")
    if outcome.reply:
        parts.append(f"{outcome.reply} queued")
    if outcome.detail:
        parts.append(outcome.detail)
    return ", ".join(parts)
