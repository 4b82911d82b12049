"""`tokens create|list|revoke`: keys for programs that use the API."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from mailroute.cli.common import EXIT_FAILURE, cell, load_config, open_store, print_table


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the tokens commands to the parser."""
    tokens = commands.add_parser("tokens", parents=[common], help="API tokens for programs")
    token_commands = tokens.add_subparsers(title="tokens commands", metavar="ACTION")
    create = token_commands.add_parser(
        "create", parents=[common], help="make a token and print it (once; only its hash is kept)"
    )
    create.add_argument("name", help="who uses it, e.g. tracker or bi")
    create.add_argument("--role", choices=("operator", "viewer"), default="viewer",
                        help="operator may change statuses; viewer reads only (default)")
    create.set_defaults(handler=cmd_tokens_create)
    listing = token_commands.add_parser("list", parents=[common], help="tokens, never their value")
    listing.set_defaults(handler=cmd_tokens_list)
    revoke = token_commands.add_parser("revoke", parents=[common], help="refuse a token from now")
    revoke.add_argument("name")
    revoke.set_defaults(handler=cmd_tokens_revoke)


def cmd_tokens_create(args: argparse.Namespace) -> int:
    from mailroute.web.tokens import create_token

    token = create_token(open_store(load_config(args)), args.name, args.role, datetime.now(UTC))
    print(token)
    print(f"token {args.name!r} ({args.role}) created; it is shown only now: keep it "
          "in the client's secret store", file=sys.stderr)
    return 0


def cmd_tokens_list(args: argparse.Namespace) -> int:
    from mailroute.web.tokens import list_tokens

    found = list_tokens(open_store(load_config(args)))
    if not found:
        print("no tokens yet (mailroute tokens create NAME)")
        return 0
    print_table(
        [[t.name, t.role, cell(t.created_at), cell(t.last_used_at),
          "revoked " + cell(t.revoked_at) if t.revoked_at else "active"] for t in found],
        ["name", "role", "created", "last used", "state"],
    )
    return 0


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    from mailroute.web.tokens import revoke_token

    if revoke_token(open_store(load_config(args)), args.name, datetime.now(UTC)):
        print(f"token {args.name!r} revoked")
        return 0
    print(f"mailroute: token {args.name!r} was revoked already", file=sys.stderr)
    return EXIT_FAILURE
