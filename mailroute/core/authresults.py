"""What our receiving server said of a letter's sender: RFC 8601 Authentication-Results (pure).

Anyone can write an Authentication-Results header into a letter, so only those that
bear the authserv-id of our own receiving server (``[security] trusted_authserv_id``)
are read. They are used one way only: a letter whose From fails DMARC for its
domain is not trusted to join a request by its From address alone. A forged
``dmarc=pass`` gains nothing, since a pass grants nothing a missing result does not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import authres

HEADER_BLOCK_LIMIT = 1024 * 1024  # what parse accepts; a longer block is never decided
_FIELD = re.compile(rb"^authentication-results:", re.IGNORECASE)


def authentication_results(raw: bytes) -> list[str]:
    """The unfolded values of the letter's top-level Authentication-Results fields."""
    head = _header_block(raw)
    values: list[str] = []
    current: bytes | None = None
    for line in head.split(b"\n"):
        line = line.rstrip(b"\r")
        if line[:1] in (b" ", b"\t") and current is not None:
            current += b" " + line.strip()
            continue
        if current is not None:
            values.append(current.decode("utf-8", "replace"))
        current = line.split(b":", 1)[1].strip() if _FIELD.match(line) else None
    if current is not None:
        values.append(current.decode("utf-8", "replace"))
    return values


def dmarc_fails(values: Iterable[str], trusted_authserv_id: str, from_domain: str) -> bool:
    """Whether a result from our server says the From domain failed DMARC."""
    trusted = trusted_authserv_id.strip().lower()
    domain = from_domain.strip().lower()
    for value in values:
        try:
            header = authres.AuthenticationResultsHeader.parse(
                f"Authentication-Results: {value}"
            )
        except authres.AuthResError:
            continue  # unreadable: says nothing either way
        if str(header.authserv_id).lower() != trusted:
            continue
        for result in header.results:
            if str(result.method).lower() != "dmarc" or str(result.result).lower() != "fail":
                continue
            named = [str(p.value).lower() for p in result.properties
                     if str(p.type).lower() == "header" and str(p.name).lower() == "from"]
            if not named or domain in named:
                return True
    return False


def _header_block(raw: bytes) -> bytes:
    ends = [index for index in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if index >= 0]
    return raw[: min(ends) if ends else HEADER_BLOCK_LIMIT][:HEADER_BLOCK_LIMIT]
