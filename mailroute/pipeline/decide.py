"""Saved letters → pure stages → request, follow-up or ignore record + outbox row.

Letters are decided in batches, oldest first, one transaction a batch. A failure
inside a pure stage (parse, analyze, compose) is the letter's fault: it is
quarantined with the stage and the traceback, and the queue moves on. A database
failure is nobody's fault: it propagates as TransientError and the letters stay
pending for the next round.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy.exc import DataError, SQLAlchemyError
from sqlalchemy.orm import Session

from mailroute import logs
from mailroute.config import Config, MailboxConfig, SlaConfig, WorkflowConfig
from mailroute.core import conversation
from mailroute.core.authresults import authentication_results, dmarc_fails
from mailroute.core.business_calendar import BusinessCalendar
from mailroute.core.compose import (
    Draft,
    Identity,
    ReplyFacts,
    Templates,
    Thread,
    compose,
    new_message_id,
)
from mailroute.core.customers import tier_of
from mailroute.core.identity import content_key
from mailroute.core.letter import ParsedLetter, ParseLimits
from mailroute.core.reply_policy import (
    DESK_WINDOW,
    Decision,
    ReplyPolicy,
    addresses_in,
    bounced_addresses,
    decide,
)
from mailroute.core.verdict import Analysis, AnalysisContext
from mailroute.errors import TransientError
from mailroute.packaged import analysis_context, load_templates
from mailroute.pipeline.customers import merged_registry
from mailroute.pipeline.status import reopen, set_status, start_clocks
from mailroute.pipeline.workers import Fault, Understanding, Understood
from mailroute.store import Store, alerts
from mailroute.store import repository as repo
from mailroute.store.lookups import BatchLookups
from mailroute.store.models import Request, RequestEvent
from mailroute.store.repository import DecidingLetter

log = logs.get("mailroute.pipeline.decide")
HOURS_TEXT = {
    "ru": "по рабочим дням с {open} до {close} ({zone})",
    "en": "on working days from {open} to {close} ({zone})",
}


@dataclass(frozen=True)
class Outcome:
    """What became of one letter."""

    letter_id: int
    state: str
    request: str | None = None
    reply: str | None = None
    detail: str = ""
    request_type: str | None = None
    too_old: bool = False  # arrived more than ``[replies] max_age`` ago: no reply


@dataclass(frozen=True)
class Pipeline:
    """Everything processing needs, built once from the config (and again on reload)."""

    context: AnalysisContext
    calendar: BusinessCalendar
    templates: Templates
    identity: Identity
    window: str
    replies_enabled: bool
    limits: ParseLimits
    sla: SlaConfig
    workflow: WorkflowConfig
    guard: ReplyPolicy
    letter_seconds: float  # CPU budget to understand one letter (in a worker process)
    trusted_authserv_id: str = ""  # whose Authentication-Results to believe; "" nobody's
    our_subjects: tuple[str, ...] = ()  # what our replies' subjects start with (templates)
    max_age: timedelta = timedelta(days=3)  # older letters get no automatic reply
    mailbox: str = ""  # the label requests are filed under (requests.mailbox)
    request_prefix: str = repo.REQUEST_PREFIX
    # With several mailboxes: this one's addresses (replies go from the one written to),
    # and its threads and pending letters are its own.
    own_addresses: frozenset[str] = frozenset()
    scoped: bool = False
    first: bool = True  # the first mailbox also owns requests from before there were several

    @classmethod
    def from_config(
        cls, config: Config, store: Store | None = None, mailbox: MailboxConfig | None = None
    ) -> Pipeline:
        """With a store, the registry also holds the organizations imported into it. With
        ``mailbox`` (one of ``[[mailboxes]]``), as that mailbox sees it."""
        box = mailbox or config.mailbox
        desk = config.desk_addresses()
        config = config.for_mailbox(box)
        context = analysis_context(config)
        if store is not None:
            context = replace(context, registry=merged_registry(config.registry, store))
        templates = load_templates(config.replies.templates_dir)
        return cls(
            context=context,
            calendar=BusinessCalendar.from_config(config.business_hours),
            templates=templates,
            identity=Identity(config.smtp.from_address, config.smtp.from_name),
            window=config.replies.window,
            replies_enabled=config.replies.enabled,
            limits=ParseLimits.from_config(config.limits),
            sla=config.sla,
            workflow=config.workflow,
            guard=ReplyPolicy.build(
                desk,
                config.replies.no_reply_patterns,
                config.replies.per_sender_limit,
                config.replies.per_sender_window,
                config.replies.per_domain_limit,
                config.replies.desk_hourly_limit,
                config.replies.suppress_for,
            ),
            letter_seconds=config.limits.letter_seconds,
            trusted_authserv_id=config.security.trusted_authserv_id,
            our_subjects=conversation.our_subject_prefixes(
                text.partition("\n")[0].removeprefix("Subject:")
                for text in templates.texts.values()
            ),
            max_age=timedelta(seconds=config.replies.max_age),
            mailbox=box.label,
            request_prefix=box.request_prefix,
            own_addresses=box.own_addresses(),
            scoped=config.several_mailboxes,
            first=box is config.all_mailboxes()[0],
        )

    def identity_for(self, parsed: ParsedLetter) -> Identity:
        """From whom a reply to ``parsed`` goes: with several mailboxes, the address of this
        mailbox the letter was written to (an alias, say), else the mailbox's own."""
        if self.scoped:
            for address in (*parsed.to, *parsed.cc):
                if address.email in self.own_addresses:
                    return Identity(address.email, self.identity.name)
        return self.identity

    def owns(self, request: Request) -> bool:
        """Whether a follow-up read here may join ``request`` (threads stay in their mailbox)."""
        if not self.scoped:
            return True
        return request.mailbox == self.mailbox or (request.mailbox is None and self.first)

    def tier_of(self, registration_number: str | None) -> str | None:
        """The customer's support tier, when a registry knows the number."""
        return tier_of(self.context.registry, registration_number)

    def hours_text(self, language: str) -> str:
        cal = self.calendar
        zone = str(cal.zone)
        if zone == "Europe/Moscow":
            zone = "МСК" if language == "ru" else "Moscow time"
        pattern = HOURS_TEXT.get(language, HOURS_TEXT["en"])
        return pattern.format(open=f"{cal.open:%H:%M}", close=f"{cal.close:%H:%M}", zone=zone)

    def send_time(self, now: datetime) -> datetime:
        """When a reply composed now may go out."""
        return now if self.window == "always" else self.calendar.next_opening(now)

    def too_old(self, arrived: datetime, now: datetime) -> bool:
        """Whether a letter that arrived at ``arrived`` is past answering automatically.

        A first start on a mailbox with history must not answer letters from last year;
        an arrival in the future (a sender's clock) counts as now.
        """
        return now - min(arrived, now) > self.max_age


def age_text(age: timedelta) -> str:
    """A duration as the config writes it: "3d", "12h", "90m", "45s"."""
    seconds = int(age.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# a reply queued in this batch and its history entry, which names the reply's id
_Queued = tuple[repo.HistoryEntry | RequestEvent, repo.QueuedReply]

_Item = TypeVar("_Item")
BATCH_LETTERS = 100  # letters decided in one transaction
BATCH_BYTES = 16 * 1024 * 1024  # of raw letters held at once; a larger letter goes alone


def process_pending(
    store: Store,
    pipeline: Pipeline,
    clock: Callable[[], datetime],
    limit: int = 1000,
    *,
    up_to: int | None = None,
    ready: Mapping[int, Understood] | None = None,
    understanding: Understanding | None = None,
    source: str | None = None,
) -> list[Outcome]:
    """Process the saved letters still pending, oldest first (only those with ids up to
    ``up_to``, if given). ``ready`` holds letters already understood, by id; the others
    are understood by ``understanding`` (or a worker started for the purpose). With
    several mailboxes, only the letters of ``source`` (its name): another mailbox's letter
    is decided by its own pipeline."""
    with store.transaction() as session:
        pending = repo.pending_letters(session, limit, up_to,
                                       mailbox=source if pipeline.scoped else None)
    outcomes = []
    for letter_ids in batches(pending):
        outcomes += process_batch(store, pipeline, letter_ids, clock(), ready, understanding)
    return outcomes


def batches(
    sized: Iterable[tuple[_Item, int]], count: int = BATCH_LETTERS, budget: int = BATCH_BYTES
) -> Iterator[list[_Item]]:
    """(item, size) pairs in order, cut into batches of at most ``count`` items and
    ``budget`` bytes; an item larger than the budget goes alone. Deciding cuts the pending
    letters so; intake cuts a backlog's FETCHes so (``intake.within_bytes``)."""
    batch: list[_Item] = []
    size = 0
    for item, item_size in sized:
        if batch and (len(batch) >= count or size + item_size > budget):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item_size
    if batch:
        yield batch


def process_letter(
    store: Store, pipeline: Pipeline, letter_id: int, now: datetime
) -> Outcome | None:
    """Decide one letter; None if another worker already did."""
    outcomes = process_batch(store, pipeline, [letter_id], now)
    return outcomes[0] if outcomes else None


def process_batch(
    store: Store,
    pipeline: Pipeline,
    letter_ids: list[int],
    now: datetime,
    ready: Mapping[int, Understood] | None = None,
    understanding: Understanding | None = None,
) -> list[Outcome]:
    """Decide these letters, oldest first, in one transaction (one commit, shared lookups).

    A letter that cannot be read or understood is quarantined within the batch. A
    fault once a letter has begun to change the database (a bug meeting an odd
    letter, a value the database refuses) rolls the whole batch back; its letters
    are then decided one per transaction, and the faulty one is quarantined alone.
    Letters another worker holds are skipped: they are not in the result.
    """
    try:
        decided = _decide_batch(store, pipeline, letter_ids, now, ready or {}, understanding)
    except (_Unprocessable, DataError) as exc:
        fault = exc.fault if isinstance(exc, _Unprocessable) else _refused(exc)
        if len(letter_ids) > 1:
            log.warning("batch decided again letter by letter", letters=len(letter_ids),
                        error=fault.reason)
            return [outcome for letter_id in letter_ids for outcome in
                    process_batch(store, pipeline, [letter_id], now, ready, understanding)]
        decided = _quarantine_alone(store, letter_ids[0], fault)
    for outcome, letter in decided:
        _log(outcome, letter)
    return [outcome for outcome, _letter in decided]


def _decide_batch(
    store: Store,
    pipeline: Pipeline,
    letter_ids: list[int],
    now: datetime,
    ready: Mapping[int, Understood],
    understanding: Understanding | None,
) -> list[tuple[Outcome, DecidingLetter]]:
    decided = []
    with store.transaction() as session:
        with_raw = any(letter_id not in ready for letter_id in letter_ids)
        letters = repo.lock_pending_letters(session, letter_ids, with_raw=with_raw)
        understood = _understood(pipeline, letters, ready, understanding)
        lookups = _lookups_for(session, pipeline, understood, now)
        history = repo.HistoryBuffer.install(session)
        attachments = repo.AttachmentBuffer.install(session)
        queued: list[_Queued] = []
        for letter, known in zip(letters, understood, strict=True):
            outcome = _decide(session, lookups, pipeline, letter, known, now, queued)
            letter.attempts += 1
            lookups.decided(letter)
            decided.append((outcome, letter))
        lookups.finish()  # writes the replies: their ids, which their history names
        for event, item in queued:
            event.detail = {**event.detail, "outbox": item.id}
        history.write(session)
        attachments.write(session)
        repo.write_decided(session, letters)
    return decided


def _understood(
    pipeline: Pipeline,
    letters: list[DecidingLetter],
    ready: Mapping[int, Understood],
    understanding: Understanding | None,
) -> list[Understood]:
    """The verdicts of ``letters``: from ``ready``, or from a worker under the budget."""
    unknown = [letter for letter in letters if letter.id not in ready]
    verdicts = dict(ready)
    if unknown:
        worker = understanding or Understanding(pipeline.context, pipeline.limits, 1,
                                                pipeline.letter_seconds)
        try:
            found = worker.understand_all([letter.raw for letter in unknown])
        finally:
            if understanding is None:
                worker.close()
        verdicts.update(zip((letter.id for letter in unknown), found, strict=True))
    return [verdicts[letter.id] for letter in letters]


def _lookups_for(
    session: Session, pipeline: Pipeline, understood: list[Understood], now: datetime
) -> BatchLookups:
    letters = [known.parsed for known in understood if known.parsed is not None]
    return BatchLookups(
        session,
        message_ids=[p.message_id for p in letters if p.message_id],
        references=[m for p in letters for m in (*p.in_reply_to, *p.references)],
        senders=[p.sender.email for p in letters if p.sender],
        replies_since=now - pipeline.guard.window,
        desk_since=now - DESK_WINDOW,
        suppressed_since=now - pipeline.guard.suppress_for,
    )


def _quarantine_alone(
    store: Store, letter_id: int, fault: Fault
) -> list[tuple[Outcome, DecidingLetter]]:
    with store.transaction() as session:
        for letter in repo.lock_pending_letters(session, [letter_id], with_raw=False):
            letter.attempts += 1
            outcome = _quarantine(letter, fault)
            repo.write_decided(session, [letter])
            return [(outcome, letter)]
    return []


def _refused(exc: DataError) -> Fault:
    return Fault("store", f"database refused a value: {exc.orig}")


class _Unprocessable(Exception):
    """A letter's fault after it began to change the database: the batch is undone."""

    def __init__(self, fault: Fault) -> None:
        super().__init__(fault.reason)
        self.fault = fault


def _decide(
    session: Session,
    lookups: BatchLookups,
    pipeline: Pipeline,
    letter: DecidingLetter,
    known: Understood,
    now: datetime,
    queued: list[_Queued],
) -> Outcome:
    parsed, analysis = known.parsed, known.analysis
    if parsed is None:
        assert known.fault is not None
        return _quarantine(letter, known.fault)
    _describe_letter(letter, parsed)
    earlier = lookups.earlier_letters(parsed.message_id)
    repeated = _repeated(letter, earlier)
    if repeated is not None:
        letter.request_id = repeated.request_id
        letter.state = "duplicate"
        return Outcome(letter.id, "duplicate",
                       detail=f"same Message-ID and content as letter {repeated.id}")
    if earlier:
        log.warning("Message-ID reused by another letter", msgid=parsed.message_id,
                    letter=letter.id, sender=letter.sender, earlier=earlier[0].id,
                    action="decided as a letter of its own")
    if analysis is None:
        assert known.fault is not None
        return _quarantine(letter, known.fault)
    steps = _Steps(session, lookups, pipeline, letter, parsed, analysis, now, queued)
    stage = "store"
    try:
        letter.analysis = analysis.as_dict()
        steps.store_attachments()
        if analysis.action == "ignore":
            letter.state = "ignored"
            letter.ignore_reason = analysis.ignore_reason
            if analysis.ignore_reason == "bounce":
                steps.suppress_bounced()
            return Outcome(letter.id, "ignored", detail=analysis.ignore_reason or "")
        stage = "thread"
        thread = _find_thread(session, lookups, parsed, _sender(letter, parsed, pipeline),
                              pipeline.owns)
        stage = "compose"
        if thread is None:
            outcome = steps.new_request()
        else:
            request, join = thread
            outcome = steps.follow_up(request) if join.trusted else steps.note(request, join.reason)
        return replace(outcome, too_old=True) if steps.withheld else outcome
    except (SQLAlchemyError, TransientError):
        raise  # the database's trouble, not the letter's: retry later
    except Exception as exc:  # the batch is half-changed: rolled back, then letter by letter
        reason = f"{type(exc).__name__}: {exc}"
        raise _Unprocessable(Fault(stage, reason, traceback.format_exc())) from exc


def _describe_letter(letter: DecidingLetter, parsed: ParsedLetter) -> None:
    letter.message_id = parsed.message_id
    letter.sender = parsed.sender.email if parsed.sender else None
    letter.subject = parsed.subject
    letter.content_key = content_key(letter.sender, parsed.text,
                                     (item.sha256 for item in parsed.attachments))


def _repeated(
    letter: DecidingLetter, earlier: list[repo.EarlierLetter]
) -> repo.EarlierLetter | None:
    """The earlier letter this one re-delivers: same Message-ID and same content.

    A Message-ID alone proves nothing (scanners and ERP exports stamp one on every
    letter), and the bytes differ between delivery paths; the content key does not.
    Letters decided before content keys were kept are compared by sender and subject.
    """
    for candidate in earlier:
        if candidate.content_key is not None:
            if candidate.content_key == letter.content_key:
                return candidate
        elif (candidate.sender or "").lower() == (letter.sender or "").lower() and (
            candidate.subject == letter.subject
        ):
            return candidate
    return None


def _quarantine(letter: DecidingLetter, fault: Fault) -> Outcome:
    letter.state = "quarantined"
    letter.stage = fault.stage
    text = fault.reason if fault.trace is None else f"{fault.reason}\n{fault.trace}"
    letter.error = text.replace("\x00", "\\x00")  # PostgreSQL text holds no NUL
    return Outcome(letter.id, "quarantined", detail=f"{fault.stage}: {fault.reason}")


# ---------------------------------------------------------------------------- threads


def _find_thread(
    session: Session,
    lookups: BatchLookups,
    parsed: ParsedLetter,
    sender: conversation.Sender,
    owns: Callable[[Request], bool] = lambda request: True,
) -> tuple[Request, conversation.Join] | None:
    """The request this letter continues (see :mod:`mailroute.core.conversation` for who may
    change it), or None for a new request; refused references and tokens are logged."""
    references = [m for m in (*parsed.in_reply_to, *reversed(parsed.references)) if m]
    found: dict[str, Request] = {}

    def view(request: Request | None) -> conversation.Thread | None:
        if request is None or not owns(request):
            return None
        found[request.number] = request
        return _thread(request, lookups)

    ours = view(lookups.request_by_our_message_ids(references))
    theirs = tuple(filter(None, map(view, lookups.requests_by_their_message_ids(references))))
    token = conversation.token_in(parsed.subject)
    candidates = conversation.Candidates(ours, theirs, token)
    decision = conversation.find_thread(
        candidates, sender, named=lambda number: view(repo.request_by_number(session, number)))
    for refusal in decision.refusals:
        log.warning(refusal.event, msgid=parsed.message_id, request=refusal.number,
                    sender=sender.address, reason=refusal.reason, action=refusal.action)
    if decision.join is None:
        return None
    return found[decision.join.number], decision.join


def _thread(request: Request, lookups: BatchLookups) -> conversation.Thread:
    """What the conversation policy sees of a request: its requester, and the senders of
    its letters (``BatchLookups.thread_letters``) in a state that makes them members."""
    members = {request.requester.lower()} if request.requester else set()
    members.update(sender.lower() for sender, state in lookups.thread_letters(request)
                   if sender and state in conversation.MEMBER_STATES)
    return conversation.Thread(
        number=request.number, requester=request.requester or "",
        members=frozenset(members), status=request.status,
        missing=tuple(request.missing or ()), clarifications=request.clarifications or 0,
    )


def _sender(
    letter: DecidingLetter, parsed: ParsedLetter, pipeline: Pipeline
) -> conversation.Sender:
    """The letter's From, and whether our receiving server says it failed DMARC (read from
    the bytes only when the policy asks)."""
    address = parsed.sender.email if parsed.sender else ""
    authserv = pipeline.trusted_authserv_id

    def dmarc_failed() -> bool:
        if not authserv or not address:
            return False
        results = authentication_results(letter.raw)
        return dmarc_fails(results, authserv, conversation.domain_of(address))

    return conversation.Sender(address, functools.cache(dmarc_failed))


# --------------------------------------------------------------------------- requests


@dataclass
class _Steps:
    """What deciding one letter does to the database, with everything it needs at hand."""

    session: Session
    lookups: BatchLookups
    pipeline: Pipeline
    letter: DecidingLetter
    parsed: ParsedLetter
    analysis: Analysis
    now: datetime
    queued: list[_Queued]  # replies whose history awaits their ids
    withheld: bool = False  # a reply was not queued: the letter is older than max_age

    def store_attachments(self) -> None:
        for item in self.parsed.attachments:
            repo.add_attachment(
                self.session,
                self.letter,
                filename=item.filename,
                content_type=item.content_type,
                size=item.size,
                sha256=item.sha256,
                inline=item.inline,
            )

    def suppress_bounced(self) -> None:
        """A permanent bounce of our mail: stop answering that address automatically."""
        parsed, letter = self.parsed, self.letter
        texts = [parsed.text, *(f.text for f in parsed.forwarded)]
        headers = [" ".join(f.headers.values()) for f in parsed.forwarded]
        mentioned = addresses_in(" ".join([*texts, *headers]))
        with self.session.no_autoflush:  # this batch's replies are not sent: none bounced
            candidates = repo.recipients_we_wrote(self.session, mentioned)
        for address in sorted(bounced_addresses(parsed, candidates)):
            reason = f"bounce in letter {letter.id}"
            if repo.suppress(self.session, address, reason, self.now, letter.id):
                self.lookups.suppressed(address)
                log.warning(
                    "address suppressed",
                    msgid=parsed.message_id,
                    letter=letter.id,
                    address=address,
                    reason="permanent bounce",
                )

    def new_request(self, parent: Request | None = None) -> Outcome:
        parsed, analysis, letter, now = self.parsed, self.analysis, self.letter, self.now
        request = Request(
            id=self.lookups.next_request_id(),
            number=self.lookups.next_request_number(self.pipeline.request_prefix),
            mailbox=self.pipeline.mailbox or None,
            status="awaiting_customer" if analysis.missing else "new",
            request_type=analysis.request_type or "service_request",
            priority=analysis.priority or "normal",
            queue=analysis.queue,
            organization=analysis.organization,
            registration_number=analysis.registration_number,
            tier=self.pipeline.tier_of(analysis.registration_number),
            requester=parsed.sender.email if parsed.sender else "",
            requester_name=parsed.sender.name if parsed.sender else None,
            subject=parsed.subject,
            language=analysis.language,
            missing=list(analysis.missing),
            reasons=[r.__dict__ for r in analysis.reasons],
            created_at=now,
            updated_at=now,
            parent_id=parent.id if parent else None,
            clarifications=0,
        )
        if not analysis.missing:
            start_clocks(request, letter.received_at, self.pipeline.calendar, self.pipeline.sla)
        self.session.add(request)
        letter.request = request  # by relationship: the id comes with the batch's flush
        letter.state = "processed"
        repo.add_event(
            self.session,
            request,
            "created",
            now,
            letter=letter.id,
            status=request.status,
            parent=parent.number if parent else None,
        )
        if parent is not None:
            repo.add_event(self.session, parent, "continued", now, request=request.number)
        reply = self.queue_reply(request, analysis.reply, analysis.unknown_registration,
                                 analysis.to_confirm)
        return Outcome(letter.id, "processed", request.number, reply,
                       request_type=request.request_type)

    def note(self, request: Request, reason: str) -> Outcome:
        """A letter on the request from someone who may not change it: kept with the
        request for a person to read; no field is merged, nothing is reopened."""
        letter = self.letter
        letter.request = request
        letter.state = "note"
        repo.add_event(self.session, request, "note", self.now, letter=letter.id,
                       sender=letter.sender, reason=reason)
        return Outcome(letter.id, "note", request.number, detail=reason)

    def follow_up(self, request: Request) -> Outcome:
        """A member's letter: fill in what a clarification asked for, reopen, or attach."""
        pipeline, letter, now, analysis = self.pipeline, self.letter, self.now, self.analysis
        supplied = conversation.supplied_by(
            request.missing,
            {"organization": analysis.organization,
             "registration_number": analysis.registration_number},
            analysis.missing,
            conversation.new_subject(analysis.letter.subject, pipeline.our_subjects),
        )
        step = conversation.follow_up_step(_thread(request, self.lookups),
                                           supplied.items,
                                           pipeline.workflow.closed_reply,
                                           pipeline.workflow.max_clarifications)
        if step == "new_linked":
            return self.new_request(parent=request)
        letter.request = request
        letter.state = "follow_up"
        request.updated_at = now
        for name, value in supplied.values.items():
            setattr(request, name, value)
        repo.add_event(self.session, request, "follow_up", now, letter=letter.id,
                       supplied=list(supplied.items))
        if step == "reopen":
            reopen(self.session, request, now, pipeline.calendar, pipeline.sla)
            return Outcome(letter.id, "follow_up", request.number, detail="reopened")
        if step == "attach":
            return Outcome(letter.id, "follow_up", request.number)
        request.missing = [item for item in request.missing if item not in supplied.items]
        if step == "complete":
            return self.complete(request)
        if step == "clarify":
            reply = self.queue_reply(request, "clarification", analysis.unknown_registration)
            return Outcome(letter.id, "follow_up", request.number, reply, detail="still missing")
        return self.to_humans(request)

    def complete(self, request: Request) -> Outcome:
        """The customer supplied the last missing item: the SLA starts, we acknowledge."""
        pipeline, now = self.pipeline, self.now
        request.tier = pipeline.tier_of(request.registration_number)
        set_status(self.session, request, "new", now, pipeline.calendar,
                   reason="details complete")
        start_clocks(request, now, pipeline.calendar, pipeline.sla)
        reply = self.queue_reply(request, "acknowledgement")
        return Outcome(self.letter.id, "follow_up", request.number, reply, detail="complete")

    def to_humans(self, request: Request) -> Outcome:
        """Clarification rounds are used up: a person takes over, the SLA starts."""
        pipeline, now = self.pipeline, self.now
        request.queue = pipeline.workflow.human_queue
        set_status(
            self.session,
            request,
            "new",
            now,
            pipeline.calendar,
            reason=f"still missing after {request.clarifications} clarifications",
        )
        start_clocks(request, now, pipeline.calendar, pipeline.sla)
        log.warning(
            "request needs a person",
            request=request.number,
            queue=request.queue,
            missing=",".join(request.missing),
        )
        return Outcome(self.letter.id, "follow_up", request.number, detail="to human queue")

    def queue_reply(
        self, request: Request, kind: str, unknown_registration: str | None = None,
        to_confirm: tuple[str, ...] = (),
    ) -> str | None:
        if kind not in ("acknowledgement", "clarification") or not request.requester:
            return None
        if kind == "clarification":
            request.clarifications += 1
        pipeline, now = self.pipeline, self.now
        if not pipeline.replies_enabled:
            return None
        if pipeline.too_old(self.letter.received_at, now):
            self.withheld = True
            repo.add_event(self.session, request, "reply_withheld", now, reply=kind,
                           reason=f"older than {age_text(pipeline.max_age)}")
            return None
        decision = self.guard(request.requester)
        if decision.cap:  # a cap reached: counted and shown by `status`
            alerts.raise_alert(self.session, f"cap:{decision.cap}",
                               f"{decision.reason} (last: {request.requester})", now)
        if decision.action == "refuse":
            repo.add_event(
                self.session, request, "reply_suppressed", now, reply=kind,
                reason=decision.reason,
            )
            log.warning(
                "reply suppressed",
                msgid=self.parsed.message_id,
                request=request.number,
                to=request.requester,
                reason=decision.reason,
            )
            return None
        if decision.action == "notice":
            kind = "limit"
        send_at = pipeline.send_time(now)
        draft = _draft(pipeline, request, self.parsed, kind, unknown_registration, send_at,
                       to_confirm)
        item = repo.QueuedReply(
            kind=draft.kind, sender=draft.sender, recipient=draft.recipient,
            subject=draft.subject, message_id=draft.message_id, raw=draft.raw,
            not_before=send_at, created_at=now, request=request, letter_id=self.letter.id,
        )
        self.lookups.reply_queued(item, request)
        event = repo.add_event(self.session, request, "reply_queued", now, reply=kind)
        self.queued.append((event, item))
        return kind

    def guard(self, address: str) -> Decision:
        recent = self.lookups.recent_replies(address)
        suppressed = self.lookups.is_suppressed(address)
        return decide(address, self.pipeline.guard, recent, suppressed)


def _draft(
    pipeline: Pipeline,
    request: Request,
    parsed: ParsedLetter,
    kind: str,
    unknown_registration: str | None,
    send_at: datetime,
    to_confirm: tuple[str, ...] = (),
) -> Draft:
    """The reply; a first-response time already past when it goes out is not promised
    (the request is breached by then: its clock runs from the letter's arrival).
    Values read with doubt are shown for the customer to confirm."""
    due = request.first_response_due
    guesses = tuple(
        (name, value) for name in to_confirm if (value := getattr(request, name, None))
    )
    facts = ReplyFacts(
        number=request.number,
        request_type=request.request_type,
        priority=request.priority,
        language=request.language,
        subject=request.subject,
        missing=tuple(request.missing),
        unknown_registration=unknown_registration,
        first_response_due=_local(pipeline, due),
        hours=pipeline.hours_text(request.language),
        first_response_overdue=due is not None and due <= send_at,
        to_confirm=guesses,
    )
    thread = Thread(
        recipient=request.requester,
        recipient_name=parsed.sender.name if parsed.sender else "",
        message_id=parsed.message_id,
        references=parsed.references,
    )
    identity = pipeline.identity_for(parsed)
    domain = conversation.domain_of(identity.address) or "mailroute.invalid"
    message_id = new_message_id(request.number, domain)
    return compose(kind, facts, thread, identity, pipeline.templates, message_id)


def _local(pipeline: Pipeline, moment: datetime | None) -> datetime | None:
    return moment.astimezone(pipeline.calendar.zone) if moment else None


def _log(outcome: Outcome, letter: DecidingLetter) -> None:
    fields = {"msgid": letter.message_id, "uid": letter.uid, "letter": letter.id}
    if outcome.state == "quarantined":
        log.error("letter quarantined", **fields, error=outcome.detail)
    elif outcome.state == "processed":
        log.info("request created", **fields, request=outcome.request, type=outcome.request_type)
    elif outcome.state == "follow_up":
        log.info("follow-up attached", **fields, request=outcome.request, detail=outcome.detail)
    elif outcome.state == "note":
        log.warning("letter attached as a note", **fields, request=outcome.request,
                    sender=letter.sender, reason=outcome.detail)
    else:
        log.info(f"letter {outcome.state}", **fields, reason=outcome.detail)
    if outcome.reply:
        log.info(
            "reply queued", msgid=letter.message_id, request=outcome.request, kind=outcome.reply
        )
