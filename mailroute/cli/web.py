"""`users add|list|disable|enable` and `web`: the people of the console, and the console
served alone."""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, datetime
from typing import Any

from mailroute.cli.common import EXIT_CONFIG, load_config, open_store, print_rows


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the console commands to the parser."""
    users = commands.add_parser("users", parents=[common], help="people of the console")
    user_commands = users.add_subparsers(title="users commands", metavar="ACTION")
    add = user_commands.add_parser(
        "add", parents=[common],
        help="add a user (or set a user's password and role); the password is read from stdin")
    add.add_argument("name")
    add.add_argument("--role", choices=["operator", "viewer"], default="operator")
    add.set_defaults(handler=cmd_users_add)
    listing = user_commands.add_parser("list", parents=[common], help="the console's users")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_users_list)
    for action, help_text in (("disable", "stop a user logging in; their sessions end now"),
                              ("enable", "let a disabled user log in again")):
        toggle = user_commands.add_parser(action, parents=[common], help=help_text)
        toggle.add_argument("name")
        toggle.set_defaults(handler=cmd_users_toggle, disabled=action == "disable")
    web = commands.add_parser(
        "web", parents=[common], help="serve the console alone on [web] listen (reads only "
        "the database; no intake)")
    web.set_defaults(handler=cmd_web)


def cmd_users_add(args: argparse.Namespace) -> int:
    from mailroute.web.auth import add_user

    store = open_store(load_config(args))
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    add_user(store, args.name, args.role, password, datetime.now(UTC))
    print(f"user {args.name} ({args.role}) saved")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    from mailroute.web.auth import list_users

    rows = list_users(open_store(load_config(args)))
    print_rows(rows, args.json, ("name", "role", "created_at", "disabled"))
    return 0


def cmd_users_toggle(args: argparse.Namespace) -> int:
    from mailroute.web.auth import set_disabled

    set_disabled(open_store(load_config(args)), args.name, args.disabled)
    print(f"user {args.name} {'disabled' if args.disabled else 'enabled'}")
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    from mailroute.web.serve import server_for

    config = load_config(args)
    if not config.web.listen:
        print('mailroute: set [web] listen (e.g. "127.0.0.1:8025") to serve the console',
              file=sys.stderr)
        return EXIT_CONFIG
    server_for(open_store(config, name="mailroute console"), config, config.web.listen).run()
    return 0
