"""The customer registry the pipeline decides with: the config's customers and the imported ones.

``mailroute orgs import`` (:mod:`mailroute.ops.customers`) fills the table; the daemon reads it
here when it starts and on every reload.
"""

from __future__ import annotations

from sqlalchemy import select

from mailroute.config import RegistryConfig, RegistryOrganization
from mailroute.core.customers import Registry
from mailroute.store import Store
from mailroute.store.models import Organization


def imported(store: Store) -> list[RegistryOrganization]:
    """The customers imported into the database, in import order."""
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
