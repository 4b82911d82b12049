"""`orgs import|list`: the customer registry in the database."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailroute.cli.common import load_config, open_store, print_rows


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the customers commands to the parser."""
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
    print_rows(rows, args.json, ("name", "registration_numbers", "domains", "tier"))
    return 0
