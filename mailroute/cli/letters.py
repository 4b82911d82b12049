"""`quarantine list|show|retry` and `replay`: letters that could not be processed, and a
letter pushed through the pipeline by hand."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailroute.cli.common import (
    EXIT_FAILURE,
    load_config,
    open_store,
    outcome_text,
    positive_seconds,
    print_rows,
)
from mailroute.errors import MailrouteError


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the letters commands to the parser."""
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
        "--letter-seconds", type=positive_seconds, metavar="SECONDS",
        help="CPU budget for this letter instead of [limits] letter_seconds",
    )
    q_retry.set_defaults(handler=cmd_quarantine_retry)

    replay = commands.add_parser(
        "replay", parents=[common], help="push a letter file through the real pipeline"
    )
    replay.add_argument("file", metavar="FILE.eml")
    replay.set_defaults(handler=cmd_replay)


def cmd_quarantine_list(args: argparse.Namespace) -> int:
    from mailroute.ops.letters import quarantined

    rows = quarantined(open_store(load_config(args)))
    print_rows(rows, args.json, ("id", "received_at", "from", "stage", "error"))
    return 0


def cmd_quarantine_show(args: argparse.Namespace) -> int:
    from mailroute.ops.letters import letter_bytes, letter_detail

    store = open_store(load_config(args))
    if args.raw:
        raw = letter_bytes(store, args.id)
        if raw is None:
            raise MailrouteError(f"no bytes for letter {args.id} (no such letter, or "
                                 "[retention] purged them)")
        sys.stdout.buffer.write(raw)
        return 0
    detail = letter_detail(store, args.id)
    if detail is None:
        raise MailrouteError(f"no letter {args.id}")
    for key, value in detail.items():
        print(f"{key:12} {value}")
    return 0


def cmd_quarantine_retry(args: argparse.Namespace) -> int:
    from mailroute.ops.letters import pipeline_for, retry_letter
    from mailroute.pipeline.decide import Pipeline

    config = load_config(args)
    store = open_store(config)

    def pipeline_of(source: str) -> Pipeline:
        pipeline = pipeline_for(config, store, source)
        if args.letter_seconds is not None:
            pipeline = dataclasses.replace(pipeline, letter_seconds=args.letter_seconds)
        return pipeline

    try:
        outcome = retry_letter(store, pipeline_of, args.id, datetime.now(UTC))
    except LookupError as exc:
        raise MailrouteError(str(exc.args[0])) from None
    print(outcome_text(outcome))
    return 0 if outcome.state != "quarantined" else EXIT_FAILURE


def _stored_text(store: Any, letter_id: int) -> str:
    """What became of a letter replayed a second time: its state and request, as stored."""
    from mailroute.ops.letters import letter_detail

    detail = letter_detail(store, letter_id) or {}
    state = detail.get("state", "stored")
    parts = [f"already stored as letter {letter_id}: {state}"]
    if detail.get("request"):
        parts.append(f"request {detail['request']}")
    if state == "quarantined":
        parts.append(f"see `mailroute quarantine show {letter_id}`")
    elif detail.get("request"):
        parts.append(f"see `mailroute tickets show {detail['request']}`")
    return "; ".join(parts) + " (nothing done again)"


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
        print(_stored_text(store, letter_id))
        return 0
    print(outcome_text(outcome))
    return 0 if outcome.state != "quarantined" else EXIT_FAILURE
