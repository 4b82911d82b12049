"""The optional customer registry: who holds which licence registration number.

With a registry, a number the letter gives is checked: an unknown number counts as
missing (the clarification says it was not found), a known one brings the
organization's official name, and a sender writing from a domain that is not the
organization's is flagged for a person to look at.

:func:`read_csv` is the only IO here (called while loading the config); the
lookups are pure.

CSV layout (header row required; several values in a cell separated by ";")::

    name,registration_numbers,domains,tier
    ООО «Ромашка»,800123456;800123457,romashka.ru,gold
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from mailroute.config import RegistryConfig, RegistryOrganization
from mailroute.errors import ConfigError

_COLUMNS = {
    "name": "name",
    "organization": "name",
    "registration_numbers": "registration_numbers",
    "registration_number": "registration_numbers",
    "domains": "domains",
    "domain": "domains",
    "tier": "tier",
}


@dataclass(frozen=True)
class Customer:
    """One organization of the registry."""

    name: str
    registration_numbers: frozenset[str]
    domains: frozenset[str]
    tier: str

    def owns_domain(self, domain: str) -> bool:
        """Whether ``domain`` (or a parent domain of it) is the customer's."""
        domain = domain.lower()
        return any(domain == d or domain.endswith("." + d) for d in self.domains)


@dataclass(frozen=True)
class Registry:
    """Customers indexed by registration number."""

    customers: tuple[Customer, ...]

    @classmethod
    def from_config(cls, config: RegistryConfig) -> Registry | None:
        """The registry of the config, or None when none is configured."""
        if not config.configured():
            return None
        return cls(tuple(_customer(org) for org in config.organizations))

    def by_number(self, number: str) -> Customer | None:
        """The customer holding this registration number (digits only)."""
        for customer in self.customers:
            if number in customer.registration_numbers:
                return customer
        return None


def tier_of(registry: Registry | None, number: str | None) -> str | None:
    """The support tier of the customer holding ``number``, when a registry knows it."""
    customer = registry.by_number(number) if registry and number else None
    return customer.tier if customer else None


def _customer(org: RegistryOrganization) -> Customer:
    return Customer(
        name=org.name,
        registration_numbers=frozenset(org.registration_numbers),
        domains=frozenset(org.domains),
        tier=org.tier,
    )


def read_csv(path: Path) -> list[RegistryOrganization]:
    """Customers from a CSV file; a bad row is a ConfigError naming file and line."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return list(_rows(csv.DictReader(handle), path))
    except OSError as exc:
        raise ConfigError(f"registry.csv: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"registry.csv: {path} is not UTF-8: {exc}") from None


def _rows(reader: csv.DictReader[str], path: Path) -> Iterable[RegistryOrganization]:
    columns = {c: _COLUMNS.get((c or "").strip().lower()) for c in reader.fieldnames or []}
    if "name" not in columns.values():
        raise ConfigError(f"registry.csv: {path}: header row needs a 'name' column")
    for row in reader:
        data: dict[str, object] = {}
        for column, value in row.items():
            key = columns.get(column)
            if key is None or value is None or not value.strip():
                continue
            data[key] = value.strip() if key in ("name", "tier") else _values(value)
        if not data.get("name"):
            continue
        try:
            yield RegistryOrganization.model_validate(data)
        except ValidationError as exc:
            problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{path}:{reader.line_num}: registry.csv: {problem}") from None


def _values(cell: str) -> list[str]:
    return [v for v in (p.strip() for p in re.split(r"[;|\n]", cell)) if v]
