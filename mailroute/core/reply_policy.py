"""May we answer this address now? Loop protection as pure functions.

Machine mail is already ignored before a request exists (loops.py). This is
the second line, for robots that look human: never answer the desk's own
addresses or no-reply style addresses, never answer an address whose mail
bounced permanently (until the suppression expires), and answer one address at
most ``limit`` times per ``window`` — the reply after that is one final notice,
then silence until the window has passed. Addresses are counted as people
(``mailroute.core.addresses``: ``victim+1@`` and ``victim+2@`` are one), and a domain
and the desk as a whole have caps of their own, so rotating spellings or domains
cannot turn the desk into a mail cannon.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from mailroute.core.letter import ParsedLetter

# An address is looked for only from the start of a run of the characters its local part
# is made of: from inside a run the local part ends where it would from the run's start, so
# the answer is the same, and trying every position of a long run was quadratic.
EMAIL = re.compile(r"(?<![\w.+%-])[\w.+%-]++@[\w-]++(?:\.[\w-]++)+", re.ASCII)
# The one place a run's inside matters: right after an address, whose domain can be
# followed by more local-part characters ("a@b.c+d@e.f" is two addresses).
_ADDRESS_HERE = re.compile(r"[\w.+%-]++@[\w-]++(?:\.[\w-]++)+", re.ASCII)


def addresses_in(text: str) -> list[str]:
    """Every address in the text, left to right (what ``findall`` of the plain address
    pattern returns), in time linear in the text."""
    found: list[str] = []
    position = 0
    while (match := EMAIL.search(text, position)) is not None:
        while match is not None:
            found.append(match.group())
            position = match.end()
            match = _ADDRESS_HERE.match(text, position)
    return found


@dataclass(frozen=True)
class ReplyPolicy:
    own_addresses: frozenset[str]
    no_reply: tuple[re.Pattern[str], ...]
    limit: int
    window: timedelta
    domain_limit: int = 30
    desk_limit: int = 300  # per DESK_WINDOW
    suppress_for: timedelta = timedelta(days=30)

    @classmethod
    def build(
        cls, own: Iterable[str], patterns: Iterable[str], limit: int, window_seconds: float,
        domain_limit: int = 30, desk_limit: int = 300, suppress_for_seconds: float = 30 * 86400.0,
    ) -> ReplyPolicy:
        compiled = tuple(re.compile(pattern, re.IGNORECASE) for pattern in patterns)
        return cls(frozenset(a.lower() for a in own), compiled, limit, timedelta(
            seconds=window_seconds), domain_limit, desk_limit,
            timedelta(seconds=suppress_for_seconds))


DESK_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Recent:
    """Automatic replies lately: to this person (per ``window``, and whether the final
    notice was one), to their domain (per ``window``) and by the desk (per hour)."""

    person: int = 0
    notice_sent: bool = False
    domain: int = 0
    desk: int = 0


@dataclass(frozen=True)
class Decision:
    """``send``, ``notice`` (the one final notice) or ``refuse``, with the reason."""

    action: str
    reason: str = ""
    cap: str = ""  # "address", "domain" or "desk" when a reply cap decided


def decide(address: str, policy: ReplyPolicy, recent: Recent, suppressed: bool) -> Decision:
    """What to do about a reply to ``address``, given what was sent lately."""
    address = address.strip().lower()
    if not EMAIL.fullmatch(address):
        return Decision("refuse", f"not a deliverable address: {address!r}")
    if address in policy.own_addresses:
        return Decision("refuse", "the desk's own address")
    for pattern in policy.no_reply:
        if pattern.search(address):
            return Decision("refuse", f"no-reply address (matches {pattern.pattern!r})")
    if suppressed:
        return Decision("refuse", "earlier mail to this address bounced permanently")
    if recent.person >= policy.limit:
        if recent.notice_sent:
            return Decision("refuse", f"over {policy.limit} replies in {policy.window}; "
                            "notice sent", "address")
        return Decision("notice", f"reached {policy.limit} replies in {policy.window}",
                        "address")
    if recent.domain >= policy.domain_limit:
        return Decision("refuse", f"domain cap: {policy.domain_limit} replies to its domain "
                        f"in {policy.window}", "domain")
    if recent.desk >= policy.desk_limit:
        return Decision("refuse", f"desk cap: {policy.desk_limit} automatic replies in "
                        f"{DESK_WINDOW}", "desk")
    return Decision("send")


# RFC 3463: class.subject.detail at the start of the reply text ("5.1.1 no such user").
ENHANCED_STATUS = re.compile(r"\A\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\d)", re.ASCII)


def enhanced_status(text: str) -> str:
    """The RFC 3463 enhanced status code a reply text begins with, or ""."""
    found = ENHANCED_STATUS.match(text)
    return ".".join(found.groups()) if found else ""


def rejection_names_recipient(stage: str, code: int, status: str) -> bool:
    """Does this permanent SMTP rejection say the recipient's address is bad?

    Only 5.1.x (addressing: no such mailbox, bad domain) refused at RCPT does. Policy
    (5.7.x), content (5.6.x), anything refused at MAIL FROM or DATA, or a 5xx without
    an enhanced code says nothing about the customer: the desk's relay or message is
    at fault, and suppressing the customer would punish them for it.
    """
    return stage == "RCPT" and 500 <= code < 600 and status.startswith("5.1.")


# The parts whose content bounced_addresses reads (workers keep those bytes for it).
DELIVERY_REPORT_TYPES = frozenset({"message/delivery-status", "text/delivery-status"})


def bounced_addresses(letter: ParsedLetter, candidates: Iterable[str] = ()) -> set[str]:
    """Addresses this bounce says are permanently undeliverable.

    Trusted sources: ``X-Failed-Recipients``, and ``Final-Recipient`` entries of a
    delivery-status report whose ``Status`` is 5.x.x. For free-text bounces only
    ``candidates`` (addresses we really wrote to) are looked for, and only when
    the text says the failure is permanent — a bounce cannot silence anyone else.
    """
    failed = {a.lower() for a in addresses_in(letter.headers.get("x-failed-recipients", ""))}
    for attachment in letter.attachments:
        if attachment.content_type in DELIVERY_REPORT_TYPES:
            failed |= _permanent_final_recipients(attachment.content)
    if failed:
        return failed
    text = letter.text.lower()
    if not re.search(r"\b5\.\d{1,3}\.\d{1,3}\b|\b55\d\b|permanent|fatal|does not exist|"
                     r"user unknown|unrouteable|no such user", text):
        return set()
    return {c.lower() for c in candidates if c and c.lower() in text}


def _permanent_final_recipients(report: bytes) -> set[str]:
    text = report.decode("utf-8", "replace")
    found = set()
    for block in re.split(r"\r?\n\r?\n", text):
        recipient = re.search(r"^final-recipient:\s*[\w-]+;\s*(\S+)", block, re.I | re.M)
        status = re.search(r"^status:\s*(\d)\.", block, re.I | re.M)
        if recipient and status and status.group(1) == "5":
            found.add(recipient.group(1).strip("<>").lower())
    return found
