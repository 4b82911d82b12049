"""What deciding a batch of letters asks the database, asked once for the whole batch.

Deciding a letter looks up earlier letters with its Message-ID, whether its sender
bounced, how many replies went to them lately and whether an attachment's content
is stored, and it takes the next request number. Asked letter by letter that was
most of a backlog's time. Here each is one query for the batch, before its first
letter is decided, and what the batch itself adds is counted in memory as it goes,
so every answer is the one a query at that moment would have given: a follow-up
finds a request made earlier in the batch, a re-delivery the letter it repeats.
Questions the batch did not foresee (a follow-up's requester is not the letter's
sender) fall back on a query; the session's autoflush makes that see the batch's
own rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.orm import Session

from mailroute.core.addresses import counted_as, domain_of
from mailroute.core.reply_policy import Recent
from mailroute.store import repository as repo
from mailroute.store.models import Request

# Request ids reserved at a time: as many as a decided batch holds (decide.BATCH_LETTERS),
# so a batch reserves once (PostgreSQL: those it does not use are a gap in the ids).
ID_BLOCK = 100


class BatchLookups:
    """Answers for one transaction that decides several letters in turn."""

    def __init__(
        self,
        session: Session,
        *,
        message_ids: Iterable[str],
        references: Iterable[str],
        senders: Iterable[str],
        replies_since: datetime,
        desk_since: datetime | None = None,
        suppressed_since: datetime | None = None,
    ) -> None:
        self.session = session
        self._earlier = repo.processed_with_message_ids(session, message_ids)
        self._decided_here: dict[str, list[repo.EarlierLetter]] = {}
        self._joined: dict[int, list[repo.DecidingLetter]] = {}
        self._replies_of, self._letters_of = repo.threads_of(session, references)
        self._replies_here: dict[str, Request] = {}
        self._letters_here: dict[str, list[Request | int]] = {}
        owners = {*self._replies_of.values(),
                  *(owner for ids in self._letters_of.values() for owner in ids)}
        self._requests = repo.requests_by_id(session, owners)  # held: the identity map is weak
        # Who the members of those threads are, read once for the batch instead of once
        # for each letter that may continue one (a round trip a follow-up).
        self._stored_members = repo.letter_senders_of_each(session, self._requests.keys())
        addresses = {address.lower() for address in senders if address}
        self._asked = addresses
        self._suppressed_since = suppressed_since
        self._suppressed = repo.suppressed_among(session, addresses, suppressed_since)
        self._since = replies_since
        people = {counted_as(address) for address in addresses}
        self._people = people
        self._replies = repo.replies_to_each_since(session, people, replies_since)
        self._domains = {domain_of(address) for address in addresses}
        self._domain_replies = repo.replies_to_domains_since(session, self._domains,
                                                             replies_since)
        self._desk_replies = (repo.automatic_replies_since(session, desk_since)
                              if desk_since is not None else 0)
        self._queued_here: Counter[str] = Counter()
        self._domain_queued_here: Counter[str] = Counter()
        self._notices_here: set[str] = set()
        self.replies = repo.ReplyBuffer()  # this batch's replies, written at its end
        self._counter: int | None = None
        self._numbers_taken = 0
        self._ids: list[int] = []
        self._last_id: int | None = None
        self._prefix = repo.REQUEST_PREFIX

    # ------------------------------------------------------------------ letters

    def earlier_letters(self, message_id: str | None) -> list[repo.EarlierLetter]:
        """The decided letters with this Message-ID, oldest first: the database's, then
        this batch's (which are not written until its end)."""
        if not message_id:
            return []
        return [*self._earlier.get(message_id, ()), *self._decided_here.get(message_id, ())]

    def decided(self, letter: repo.DecidingLetter) -> None:
        """``letter`` now has a final state in this transaction."""
        owner = letter.owner_id()
        if owner is not None:
            self._joined.setdefault(owner, []).append(letter)
        if not letter.message_id:
            return
        if letter.state in repo.ORIGINAL_LETTER_STATES:
            self._decided_here.setdefault(letter.message_id, []).append(repo.EarlierLetter(
                letter.id, owner, letter.content_key, letter.sender, letter.subject))
        # a request this batch made or found is there as an object, not yet in the database
        joined: Request | int | None = (
            letter.request if letter.request is not None else letter.request_id)
        if joined is not None:
            self._letters_here.setdefault(letter.message_id, []).append(joined)

    def thread_letters(self, request: Request) -> list[tuple[str | None, str]]:
        """(sender, state) of the letters under ``request``: the database's, then those
        this batch joined to it (not written until its end).

        The database's were read with the batch's other lookups when its references named
        the request, as of the batch's start (deciding changes no letter but the batch's
        own; another instance's joined meanwhile are seen by the next batch); otherwise
        they are asked for now, without flushing the batch: a flush per follow-up split
        the batch's one flush into many (a quarter of the time deciding took in a
        backlog's profile).
        """
        if request.id in self._requests:
            stored = self._stored_members.get(request.id, [])
        elif request in self.session.new:  # made by this batch: none stored
            stored = []
        else:
            with self.session.no_autoflush:
                stored = repo.letter_senders_of(self.session, request.id)
        joined = self._joined.get(request.id, ())
        return [*stored, *((letter.sender, letter.state) for letter in joined)]

    # ------------------------------------------------------------------ threads

    def request_by_our_message_ids(self, message_ids: Iterable[str]) -> Request | None:
        """The request a reply of ours with one of these Message-IDs belongs to (the first
        id in the given order that is one of ours)."""
        for message_id in message_ids:
            owner = self._replies_of.get(message_id) or self._replies_here.get(message_id)
            if owner is not None:
                return self._request(owner)
        return None

    def requests_by_their_message_ids(self, message_ids: Iterable[str]) -> list[Request]:
        """The requests customers' letters with these Message-IDs joined, in the order of
        the ids given, then oldest first: more than one when a Message-ID was reused."""
        found: list[Request] = []
        for message_id in message_ids:
            owners = [*self._letters_of.get(message_id, ()),
                      *self._letters_here.get(message_id, ())]
            for owner in owners:
                request = self._request(owner)
                if request is not None and all(request is not seen for seen in found):
                    found.append(request)
        return found

    def _request(self, owner: Request | int) -> Request | None:
        if isinstance(owner, Request):
            return owner
        if owner not in self._requests:
            found = self.session.get(Request, owner)
            if found is None:
                return None
            self._requests[owner] = found
        return self._requests[owner]

    # ------------------------------------------------------------------ replies

    def recent_replies(self, address: str) -> Recent:
        """What the outbox says was sent lately to the person at ``address``, to their
        domain and by the whole desk, counting what this batch queued."""
        person, domain = counted_as(address), domain_of(address)
        if person in self._people:  # asked before the batch: add what it queued since
            count, notice = self._replies.get(person, (0, False))
            count, notice = count + self._queued_here[person], notice or (
                person in self._notices_here)
        else:  # the query sees this batch's rows too (written first)
            self.replies.write(self.session)
            count, notice = repo.replies_to_since(self.session, address, self._since)
        if domain in self._domains:
            to_domain = self._domain_replies.get(domain, 0) + self._domain_queued_here[domain]
        else:
            self.replies.write(self.session)
            to_domain = repo.replies_to_domains_since(self.session, [domain], self._since).get(
                domain, 0)
        return Recent(count, notice, to_domain, self._desk_replies)

    def reply_queued(self, item: repo.QueuedReply, request: Request) -> None:
        """``item`` is queued in this batch (held in :attr:`replies` until written)."""
        self.replies.add(item)
        person = counted_as(item.recipient)
        self._queued_here[person] += 1
        self._domain_queued_here[domain_of(item.recipient)] += 1
        self._desk_replies += item.kind in repo.AUTOMATIC_REPLIES
        if item.kind == "limit":
            self._notices_here.add(person)
        self._replies_here[item.message_id] = request

    def is_suppressed(self, address: str) -> bool:
        address = address.lower()
        if address not in self._asked:
            return repo.is_suppressed(self.session, address, self._suppressed_since)
        return address in self._suppressed

    def suppressed(self, address: str) -> None:
        """``address`` was suppressed in this transaction."""
        self._suppressed.add(address.lower())

    # ------------------------------------------------------------------ numbers

    def next_request_id(self) -> int:
        """An id for a request this batch makes, reserved ahead (``repo.reserve_request_ids``)
        so that the flush inserts the batch's requests in one executemany: an id the
        database picks must be read back, one ``INSERT ... RETURNING`` a request."""
        if not self._ids:
            self._ids = repo.reserve_request_ids(self.session, ID_BLOCK, after=self._last_id)
            self._last_id = self._ids[-1]
        return self._ids.pop(0)

    def next_request_number(self, prefix: str = repo.REQUEST_PREFIX) -> str:
        """The next request number; the counter row is locked at the first, written at
        :meth:`finish`, so the numbers stay gapless if the transaction is rolled back."""
        if self._counter is None:
            self._counter = repo.bump_counter(self.session, repo.request_counter(prefix), 0)
            self._prefix = prefix
        elif prefix != self._prefix:
            raise ValueError(f"one batch numbers with one prefix ({self._prefix}), not {prefix}")
        self._numbers_taken += 1
        return f"{prefix}{self._counter + self._numbers_taken:06d}"

    def finish(self) -> None:
        """Write back what was kept in memory; call once, before the commit (the
        replies' ids are known after it)."""
        self.replies.write(self.session)
        if self._numbers_taken:
            counter = repo.request_counter(self._prefix)
            repo.bump_counter(self.session, counter, self._numbers_taken)
            self._numbers_taken = 0
            self._counter = None
