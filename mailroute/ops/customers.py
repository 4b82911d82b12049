"""The customer registry kept in the database: imported from CSV, merged with the config's.

`mailroute orgs import FILE.csv` replaces the imported set in one transaction
(the file is the source of truth, as exported from the vendor's CRM); a
running daemon picks it up on reload (SIGHUP). `explain` reads only the
config's registry: it touches no database.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, select

from mailroute.config import RegistryConfig, RegistryOrganization, read_csv
from mailroute.core.customers import Registry
from mailroute.store import Store
from mailroute.store.models import Organization


def import_csv(store: Store, path: Path, now: datetime) -> int:
    """Replace the imported organizations with the file's; returns how many."""
    rows = read_csv(path)
    with store.transaction() as session:
        session.execute(delete(Organization))
        session.add_all(
            Organization(
                name=row.name,
                registration_numbers=row.registration_numbers,
                domains=row.domains,
                tier=row.tier,
                imported_at=now,
            )
            for row in rows
        )
    return len(rows)


def imported(store: Store) -> list[RegistryOrganization]:
    with store.transaction() as session:
        return [
            RegistryOrganization(
                name=o.name,
                registration_numbers=o.registration_numbers,
                domains=o.domains,
                tier=o.tier,
            )
            for o in session.scalars(select(Organization).order_by(Organization.id))
        ]


def merged_registry(config: RegistryConfig, store: Store) -> Registry | None:
    """The config's customers, then the imported ones; None when there are neither."""
    organizations = [*config.organizations, *imported(store)]
    if not organizations:
        return Registry.from_config(config)
    return Registry.from_config(RegistryConfig(csv=None, organizations=organizations))
