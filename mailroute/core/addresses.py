"""Who an address is, for counting: one person however they spell their address.

``Victim+1@Example.com`` and ``victim+2@example.com`` reach one mailbox, and Gmail
ignores dots in the local part, so a cap that counted spellings was no cap at all.
Only counting uses this: replies still go to the address exactly as the customer
wrote it.
"""

from __future__ import annotations

# Domains whose mailboxes ignore dots in the local part (Google's documented convention).
DOTLESS_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
# Aliases of one mail system: counted under the first name.
DOMAIN_ALIASES = {"googlemail.com": "gmail.com"}


def domain_of(address: str) -> str:
    """The domain, lower-case (empty when the address has none)."""
    _, at, domain = address.strip().rpartition("@")
    return domain.lower().rstrip(".") if at else ""


def counted_as(address: str) -> str:
    """The address a reply is counted against: lower-case, ``+tag`` removed, and for
    Gmail the dots of the local part removed and googlemail.com read as gmail.com."""
    local, at, domain = address.strip().lower().rpartition("@")
    if not at:
        return address.strip().lower()
    domain = domain.rstrip(".")
    local = local.split("+", 1)[0] or local
    if domain in DOTLESS_DOMAINS:
        local = local.replace(".", "")
    return f"{local}@{DOMAIN_ALIASES.get(domain, domain)}"
