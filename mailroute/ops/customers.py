"""The customer registry kept in the database: imported from CSV, merged with the config's.

`mailroute orgs import FILE.csv` replaces the imported set in one transaction
(the file is the source of truth, as exported from the vendor's CRM); a
running daemon picks it up on reload (SIGHUP). `explain` reads only the
config's registry: it touches no database.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import delete

from mailroute.config import read_csv
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
