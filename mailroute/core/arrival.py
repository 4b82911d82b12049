"""When a letter arrived: the server's INTERNALDATE, unless it cannot be true.

SLA clocks run from the arrival time, so a server clock (or an imported letter)
claiming 1970 made a request breached within seconds, and one claiming 2099 made
it never breach. An arrival more than a day before the letter says it was written,
or more than a day after the moment mailroute first saw it, is replaced by that
moment. Pure: the caller logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

SLACK = timedelta(days=1)
HEADER_LIMIT = 65536  # bytes of the header block searched for Date:
DATE = re.compile(rb"^date:[ \t]*([^\r\n]{1,200})", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Arrival:
    """The arrival time to keep and, when the server's was replaced, why."""

    at: datetime
    replaced: str | None = None


def plausible_arrival(reported: datetime | None, raw: bytes, first_seen: datetime) -> Arrival:
    """``reported`` (INTERNALDATE) if plausible, else ``first_seen`` with the reason."""
    if reported is None:
        return Arrival(first_seen)
    if reported.tzinfo is None:
        reported = reported.replace(tzinfo=UTC)
    if reported > first_seen + SLACK:
        return Arrival(first_seen, f"arrival {reported.isoformat()} is more than a day "
                                   f"after the letter was first seen")
    written = header_date(raw)
    if written is not None and reported < written - SLACK:
        return Arrival(first_seen, f"arrival {reported.isoformat()} is more than a day "
                                   f"before the letter's Date {written.isoformat()}")
    return Arrival(reported)


def header_date(raw: bytes) -> datetime | None:
    """The Date header of the header block, aware (UTC if it gave no zone); None if absent
    or unreadable."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    head = raw[: end if 0 <= end < HEADER_LIMIT else HEADER_LIMIT]
    match = DATE.search(head)
    if match is None:
        return None
    try:
        written = parsedate_to_datetime(match.group(1).decode("ascii", "replace").strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return written if written.tzinfo is not None else written.replace(tzinfo=UTC)
