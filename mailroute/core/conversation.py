"""The conversation policy: which request a letter continues, who may change it, and how.

Pure: the pipeline looks up the candidate requests (by our Message-IDs, by the customer's
Message-IDs, by an ``[SD-…]`` token) and passes them in as :class:`Thread` views; this module
says what the letter is to them. Keeping the rules here, away from the ORM, is what makes them
readable in one place and testable without a database.

The rules, in order:

1. A reference to one of **our** Message-IDs proves the thread (only its recipients know
   them), but only a member (the requester or a participant) may change the request; anyone
   else's letter is attached as a note for a person.
2. A **customer's** Message-ID proves nothing (everyone on Cc knows it, some software reuses
   it): it counts only for a letter from a member of that request.
3. An ``[SD-…]`` **token** can be typed by anyone: from a member it is a follow-up, from the
   requester's own non-public domain a note, from anyone else a new request.
4. A From that failed DMARC at our own receiving server is nobody's: it is not a member's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mailroute.core.subjects import without_reply_prefixes

# [SD-000042]; with several mailboxes each may number with its own prefix ([ML-000007])
TOKEN = re.compile(r"\[([A-Z]{1,8}-\d{6,})\]", re.IGNORECASE)
MEMBER_STATES = ("processed", "follow_up")  # a note's sender does not join the request
CLOSED_REPLY_NEW = "new"
PUBLIC_MAIL_DOMAINS = frozenset(  # a shared domain says nothing about the organization
    [
        "gmail.com",
        "googlemail.com",
        "yandex.ru",
        "ya.ru",
        "yandex.com",
        "mail.ru",
        "bk.ru",
        "inbox.ru",
        "list.ru",
        "rambler.ru",
        "outlook.com",
        "hotmail.com",
        "live.com",
        "yahoo.com",
        "icloud.com",
        "me.com",
        "proton.me",
        "protonmail.com",
        "gmx.de",
        "gmx.net",
        "aol.com",
    ]
)


@dataclass(frozen=True)
class Thread:
    """What the policy needs to know of a request the letter may continue."""

    number: str
    requester: str
    members: frozenset[str]  # lower-case: the requester and the senders of its member letters
    status: str = "new"
    missing: tuple[str, ...] = ()
    clarifications: int = 0


@dataclass(frozen=True)
class Candidates:
    """The requests the letter's references and subject point at, as the pipeline found them."""

    ours: Thread | None = None  # named by one of our Message-IDs
    theirs: Sequence[Thread] = ()  # whose customers' Message-IDs the letter references
    token: str | None = None  # the request number in the subject's [SD-…] token


@dataclass
class Sender:
    """Who the letter is from; ``dmarc_failed`` is asked only when the question comes up
    (it reads the letter's Authentication-Results, and the bytes may not be at hand)."""

    address: str
    dmarc_failed: Callable[[], bool] = lambda: False
    public_domains: frozenset[str] = PUBLIC_MAIL_DOMAINS

    def is_member(self, thread: Thread) -> bool:
        """The requester or a participant, by a From nobody has disproved."""
        return self._listed(thread) and not self.dmarc_failed()

    def is_colleague(self, thread: Thread) -> bool:
        """From the requester's own (non-public) domain."""
        domain = domain_of(self.address)
        return (bool(self.address) and domain == domain_of(thread.requester)
                and domain not in self.public_domains and not self.dmarc_failed())

    def why_not(self, thread: Thread) -> str:
        if self._listed(thread):
            return "From fails DMARC for its domain"
        return "sender is not the requester or a participant"

    def _listed(self, thread: Thread) -> bool:
        return bool(self.address) and self.address.lower() in thread.members


@dataclass(frozen=True)
class Join:
    """The request a letter continues; ``trusted`` when its sender may change it."""

    number: str
    trusted: bool
    reason: str = ""  # why not, when not


@dataclass(frozen=True)
class Refusal:
    """A reference or token the letter may not use: logged, and what happened instead."""

    event: str
    number: str
    reason: str
    action: str


@dataclass(frozen=True)
class ThreadDecision:
    """Where the letter goes (``join`` None: a new request) and what was refused on the way."""

    join: Join | None
    refusals: tuple[Refusal, ...] = ()


def token_in(subject: str | None) -> str | None:
    """The request number in an ``[SD-…]`` token of the subject, upper-case."""
    match = TOKEN.search(subject or "")
    return match.group(1).upper() if match else None


def find_thread(
    candidates: Candidates, sender: Sender, named: Callable[[str], Thread | None]
) -> ThreadDecision:
    """The request this letter continues, and whether its sender may change it.

    ``named`` finds the request a token names; it is asked only when the references did not
    settle the question (it costs a query)."""
    if candidates.ours is not None:
        ours = candidates.ours
        if sender.is_member(ours):
            return ThreadDecision(Join(ours.number, trusted=True))
        return ThreadDecision(Join(ours.number, trusted=False, reason=sender.why_not(ours)))
    for thread in candidates.theirs:
        if sender.is_member(thread):
            return ThreadDecision(Join(thread.number, trusted=True))
    refusals: list[Refusal] = []
    if candidates.theirs:
        first = candidates.theirs[0]
        refusals.append(Refusal("reference from outside the request", first.number,
                                sender.why_not(first),
                                "by token" if candidates.token else "new request"))
    named_thread = named(candidates.token) if candidates.token else None
    if named_thread is None:
        return ThreadDecision(None, tuple(refusals))
    if sender.is_member(named_thread):
        return ThreadDecision(Join(named_thread.number, trusted=True), tuple(refusals))
    if sender.is_colleague(named_thread):
        join = Join(named_thread.number, trusted=False,
                    reason="token from the requester's domain")
        return ThreadDecision(join, tuple(refusals))
    refusals.append(Refusal("token from stranger", named_thread.number,
                            sender.why_not(named_thread), "new request"))
    return ThreadDecision(None, tuple(refusals))


@dataclass(frozen=True)
class Supplied:
    """What a follow-up provides of the items its request was missing, with the values."""

    items: tuple[str, ...] = ()
    values: Mapping[str, str] = field(default_factory=dict)


def supplied_by(
    missing: Iterable[str],
    found: Mapping[str, str | None],
    still_missing: Iterable[str],
    subject: str,
) -> Supplied:
    """The missing items this follow-up supplies: an organization or number it contains, a
    description when its own text has one (``still_missing`` lacks it), a subject it wrote."""
    missing, lacking = set(missing), set(still_missing)
    items: list[str] = []
    values: dict[str, str] = {}
    for name in ("organization", "registration_number"):
        value = found.get(name)
        if name in missing and value:
            items.append(name)
            values[name] = value
    if "description" in missing and "description" not in lacking:
        items.append("description")
    if "subject" in missing and subject:
        items.append("subject")
        values["subject"] = subject
    return Supplied(tuple(items), values)


def follow_up_step(
    thread: Thread, supplied: Sequence[str], closed_reply: str, max_clarifications: int
) -> str:
    """What a member's follow-up does to its request.

    ``new_linked``: a closed request stays closed and the letter opens a new, linked one
    (``[workflow] closed_reply = "new"``); ``reopen``: a resolved or closed request is
    reopened; ``attach``: the letter joins a request being worked on; ``complete``: it
    supplied the last missing item; ``clarify``: something is still missing and another
    round is allowed; ``to_humans``: the rounds are used up.
    """
    if thread.status == "closed" and closed_reply == CLOSED_REPLY_NEW:
        return "new_linked"
    if thread.status in ("resolved", "closed"):
        return "reopen"
    if thread.status != "awaiting_customer":
        return "attach"
    if not [item for item in thread.missing if item not in supplied]:
        return "complete"
    if thread.clarifications < max_clarifications:
        return "clarify"
    return "to_humans"


def our_subject_prefixes(template_subjects: Iterable[str]) -> tuple[str, ...]:
    """The fixed words our replies' subjects start with, from the templates' Subject lines
    (``[$number] Request registered: $subject`` gives ``Request registered``), so a
    customer's reply to them is not taken for a subject the customer wrote."""
    prefixes = []
    for line in template_subjects:
        text = TOKEN.sub("", line.replace("[$number]", "")).split("$", 1)[0]
        text = text.strip().rstrip(":").strip()
        if text:
            prefixes.append(text)
    return tuple(prefixes)


def new_subject(subject: str | None, ours: Sequence[str]) -> str:
    """A subject the customer wrote: without our token and reply prefixes, and empty when it
    is only our own reply's subject coming back."""
    text = without_reply_prefixes(TOKEN.sub("", subject or ""))
    return "" if any(text.startswith(prefix) for prefix in ours) else text


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()
