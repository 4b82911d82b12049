"""The optional customer registry: who holds which licence registration number.

With a registry, a number the letter gives is checked: an unknown number counts as
missing (the clarification says it was not found), a known one brings the
organization's official name, and a sender writing from a domain that is not the
organization's is flagged for a person to look at.

Pure: the customers come in with the config (``[registry]`` and its CSV file, read by
:mod:`mailroute.config`) or from the database (``mailroute orgs import``).
"""

from __future__ import annotations

from dataclasses import dataclass

from mailroute.config import RegistryConfig, RegistryOrganization


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
