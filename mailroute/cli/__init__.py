"""The ``mailroute`` command. The only place that prints for people or exits.

Each command group is a module here with a ``register(commands, common)`` that adds its
sub-commands and their handlers; the work itself belongs to ``ops/``, ``pipeline/`` and
``service/``.

Exit codes: 0 success, 1 failure, 2 bad configuration or usage, 3 database not
ready (run ``mailroute db upgrade``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mailroute import __version__, startup
from mailroute.cli import (
    customers,
    explain,
    letters,
    replies,
    report,
    run,
    status,
    storage,
    tickets,
    tokens,
    web,
)
from mailroute.cli.common import EXIT_CONFIG, EXIT_DATABASE, EXIT_FAILURE
from mailroute.errors import ConfigError, DatabaseNotReady, MailrouteError

GROUPS = (
    run, explain, tickets, report, status, letters, replies, customers, storage, tokens, web
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_CONFIG
    if not getattr(args, "settles_itself", False):  # `run` does, once its daemon is built
        startup.settle()
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
    finally:
        startup.settle()


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: the shared --config, then each group's commands."""
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
    for group in GROUPS:
        group.register(commands, common)
    return parser


if __name__ == "__main__":
    sys.exit(main())
