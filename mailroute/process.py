"""One saved letter → pure stages → request, follow-up or ignore record + outbox row.

Each letter is one transaction. A failure inside a pure stage (parse, analyze,
compose) is the letter's fault: it is quarantined with the stage and the
traceback, and the queue moves on. A database failure is nobody's fault: it
propagates as TransientError and the letter stays pending for the next round.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.exc import DataError, SQLAlchemyError
from sqlalchemy.orm import Session

from mailroute import logs
from mailroute.analysis import Analysis, AnalysisContext, analyze
from mailroute.compose import (
    Draft,
    Identity,
    ReplyFacts,
    Templates,
    Thread,
    compose,
    new_message_id,
)
from mailroute.config import Config, SlaConfig, WorkflowConfig
from mailroute.errors import LetterUnreadable, TransientError
from mailroute.guard import EMAIL, Decision, ReplyPolicy, bounced_addresses, decide
from mailroute.hours import BusinessCalendar
from mailroute.organizations import merged_registry
from mailroute.parse import ParsedLetter, ParseLimits, parse
from mailroute.registry import tier_of
from mailroute.store import Store
from mailroute.store import repository as repo
from mailroute.store.models import Letter, OutboxItem, Request
from mailroute.workflow import reopen, set_status, start_clocks

log = logs.get("mailroute.process")
TOKEN = re.compile(r"\[(SD-\d{6,})\]", re.IGNORECASE)
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

    @classmethod
    def from_config(cls, config: Config, store: Store | None = None) -> Pipeline:
        """With a store, the registry also holds the organizations imported into it."""
        context = AnalysisContext.from_config(config)
        if store is not None:
            context = replace(context, registry=merged_registry(config.registry, store))
        return cls(
            context=context,
            calendar=BusinessCalendar.from_config(config.business_hours),
            templates=Templates.load(config.replies.templates_dir),
            identity=Identity(config.smtp.from_address, config.smtp.from_name),
            window=config.replies.window,
            replies_enabled=config.replies.enabled,
            limits=ParseLimits(
                max_bytes=config.limits.max_message_bytes,
                max_parts=config.limits.max_parts,
                max_depth=config.limits.max_depth,
                max_header_bytes=config.limits.max_header_bytes,
                max_text_chars=config.limits.max_text_chars,
            ),
            sla=config.sla,
            workflow=config.workflow,
            guard=ReplyPolicy.build(
                config.mailbox.own_addresses() | {config.smtp.from_address.lower()},
                config.replies.no_reply_patterns,
                config.replies.per_sender_limit,
                config.replies.per_sender_window,
            ),
        )

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


def process_pending(
    store: Store, pipeline: Pipeline, clock: Callable[[], datetime], limit: int = 1000
) -> list[Outcome]:
    """Process every saved letter still pending, oldest first."""
    with store.transaction() as session:
        ids = repo.pending_letter_ids(session, limit)
    outcomes = []
    for letter_id in ids:
        outcome = process_letter(store, pipeline, letter_id, clock())
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes


def process_letter(
    store: Store, pipeline: Pipeline, letter_id: int, now: datetime
) -> Outcome | None:
    """Decide one letter in one transaction; None if another worker already did."""
    with store.transaction() as session:
        letter = repo.lock_letter(session, letter_id)
        if letter is None or letter.state != "pending":
            return None
        try:
            # a quarantine undoes any half-made request; the lookups on the way never
            # need this letter's own pending changes, so they are written once, at the end
            with session.begin_nested(), session.no_autoflush:
                outcome = _decide(session, pipeline, letter, now)
        except _Unprocessable as fault:
            outcome = _quarantine(letter, fault.stage, fault.reason, fault.trace)
        except DataError as exc:  # the database refuses a value of this letter: its fault
            outcome = _quarantine(letter, "store", f"database refused a value: {exc.orig}")
        letter.attempts += 1  # after the savepoint, so entering it writes nothing
    _log(outcome, letter)
    return outcome


class _Unprocessable(Exception):
    """Raised inside the savepoint so that everything the letter did is rolled back."""

    def __init__(self, stage: str, reason: str, trace: str | None = None) -> None:
        super().__init__(reason)
        self.stage, self.reason, self.trace = stage, reason, trace


def _decide(session: Session, pipeline: Pipeline, letter: Letter, now: datetime) -> Outcome:
    stage = "parse"
    try:
        parsed = parse(letter.raw, pipeline.limits)
        _describe_letter(letter, parsed)
        earlier = parsed.message_id and repo.processed_with_message_id(
            session, parsed.message_id, letter.id
        )
        if earlier:
            earlier_id, letter.request_id = earlier
            letter.state = "duplicate"
            return Outcome(letter.id, "duplicate", detail=f"same Message-ID as letter {earlier_id}")
        stage = "analyze"
        analysis = analyze(parsed, pipeline.context)
        letter.analysis = analysis.as_dict()
        _store_attachments(session, letter, parsed)
        if analysis.action == "ignore":
            letter.state = "ignored"
            letter.ignore_reason = analysis.ignore_reason
            if analysis.ignore_reason == "bounce":
                _suppress_bounced(session, letter, parsed, now)
            return Outcome(letter.id, "ignored", detail=analysis.ignore_reason or "")
        stage = "thread"
        request = _find_thread(session, parsed)
        stage = "compose"
        if request is not None:
            return _follow_up(session, pipeline, letter, parsed, analysis, request, now)
        return _new_request(session, pipeline, letter, parsed, analysis, now)
    except LetterUnreadable as exc:
        raise _Unprocessable(exc.stage, exc.reason) from exc
    except (SQLAlchemyError, TransientError):
        raise  # the database's trouble, not the letter's: retry later
    except Exception as exc:  # a bug meeting an odd letter must not stop the queue
        reason = f"{type(exc).__name__}: {exc}"
        raise _Unprocessable(stage, reason, traceback.format_exc()) from exc


def _describe_letter(letter: Letter, parsed: ParsedLetter) -> None:
    letter.message_id = parsed.message_id
    letter.sender = parsed.sender.email if parsed.sender else None
    letter.subject = parsed.subject


def _quarantine(letter: Letter, stage: str, reason: str, trace: str | None = None) -> Outcome:
    letter.state = "quarantined"
    letter.stage = stage
    text = reason if trace is None else f"{reason}\n{trace}"
    letter.error = text.replace("\x00", "\\x00")  # PostgreSQL text holds no NUL
    return Outcome(letter.id, "quarantined", detail=f"{stage}: {reason}")


def _suppress_bounced(
    session: Session, letter: Letter, parsed: ParsedLetter, now: datetime
) -> None:
    """A permanent bounce of our mail: stop answering that address automatically."""
    texts = [parsed.text, *(f.text for f in parsed.forwarded)]
    headers = [" ".join(f.headers.values()) for f in parsed.forwarded]
    mentioned = EMAIL.findall(" ".join([*texts, *headers]))
    candidates = repo.recipients_we_wrote(session, mentioned)
    for address in sorted(bounced_addresses(parsed, candidates)):
        if repo.suppress(session, address, f"bounce in letter {letter.id}", now, letter.id):
            log.warning(
                "address suppressed",
                msgid=parsed.message_id,
                letter=letter.id,
                address=address,
                reason="permanent bounce",
            )


def _store_attachments(session: Session, letter: Letter, parsed: ParsedLetter) -> None:
    for item in parsed.attachments:
        repo.add_attachment(
            session,
            letter,
            filename=item.filename,
            content_type=item.content_type,
            content=item.content,
            sha256=item.sha256,
            inline=item.inline,
        )


# ---------------------------------------------------------------------------- threads


def _find_thread(session: Session, parsed: ParsedLetter) -> Request | None:
    """The request this letter continues, or None for a new one.

    A reference to one of our Message-IDs is proof enough (only recipients of
    the thread know them). A ``[SD-…]`` token alone is not: anyone can type it,
    so it attaches only when the sender already belongs to the request.
    """
    by_reference = repo.request_by_message_ids(
        session, [*parsed.in_reply_to, *reversed(parsed.references)]
    )
    if by_reference is not None:
        return by_reference
    match = TOKEN.search(parsed.subject or "")
    if not match:
        return None
    request = repo.request_by_number(session, match.group(1))
    sender = parsed.sender.email if parsed.sender else ""
    if request is None:
        return None
    if not _belongs_to(request, sender):
        log.warning(
            "token from stranger",
            msgid=parsed.message_id,
            request=request.number,
            sender=sender,
            action="new request",
        )
        return None
    return request


def _belongs_to(request: Request, sender: str) -> bool:
    if not sender:
        return False
    participants = {request.requester, *(x.sender for x in request.letters if x.sender)}
    if sender in participants:
        return True
    domain = _domain(sender)
    return domain == _domain(request.requester) and domain not in PUBLIC_MAIL_DOMAINS


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


# --------------------------------------------------------------------------- requests


def _new_request(
    session: Session,
    pipeline: Pipeline,
    letter: Letter,
    parsed: ParsedLetter,
    analysis: Analysis,
    now: datetime,
    parent: Request | None = None,
) -> Outcome:
    requester = parsed.sender.email if parsed.sender else ""
    request = Request(
        number=repo.next_request_number(session),
        status="awaiting_customer" if analysis.missing else "new",
        request_type=analysis.request_type or "service_request",
        priority=analysis.priority or "normal",
        queue=analysis.queue,
        organization=analysis.organization,
        registration_number=analysis.registration_number,
        tier=pipeline.tier_of(analysis.registration_number),
        requester=requester,
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
        start_clocks(request, letter.received_at, pipeline.calendar, pipeline.sla)
    session.add(request)
    session.flush()
    letter.request_id = request.id
    letter.state = "processed"
    repo.add_event(
        session,
        request,
        "created",
        now,
        letter=letter.id,
        status=request.status,
        parent=parent.number if parent else None,
    )
    if parent is not None:
        repo.add_event(session, parent, "continued", now, request=request.number)
    reply = _queue_reply(
        session,
        pipeline,
        request,
        letter,
        parsed,
        analysis.reply,
        now,
        analysis.unknown_registration,
    )
    return Outcome(letter.id, "processed", request.number, reply, request_type=request.request_type)


def _follow_up(
    session: Session,
    pipeline: Pipeline,
    letter: Letter,
    parsed: ParsedLetter,
    analysis: Analysis,
    request: Request,
    now: datetime,
) -> Outcome:
    """Attach to the request; reopen it, or fill in what a clarification asked for."""
    if request.status == "closed" and pipeline.workflow.closed_reply == "new":
        return _new_request(session, pipeline, letter, parsed, analysis, now, parent=request)
    letter.request_id = request.id
    letter.state = "follow_up"
    request.updated_at = now
    supplied = _supplied(request, analysis)
    repo.add_event(session, request, "follow_up", now, letter=letter.id, supplied=supplied)
    if request.status in ("resolved", "closed"):
        reopen(session, request, now, pipeline.calendar, pipeline.sla)
        return Outcome(letter.id, "follow_up", request.number, detail="reopened")
    if request.status != "awaiting_customer":
        return Outcome(letter.id, "follow_up", request.number)
    request.missing = [item for item in request.missing if item not in supplied]
    if not request.missing:
        return _complete(session, pipeline, letter, parsed, request, now)
    if request.clarifications < pipeline.workflow.max_clarifications:
        reply = _queue_reply(
            session,
            pipeline,
            request,
            letter,
            parsed,
            "clarification",
            now,
            analysis.unknown_registration,
        )
        return Outcome(letter.id, "follow_up", request.number, reply, detail="still missing")
    return _to_humans(session, pipeline, letter, request, now)


def _complete(
    session: Session,
    pipeline: Pipeline,
    letter: Letter,
    parsed: ParsedLetter,
    request: Request,
    now: datetime,
) -> Outcome:
    """The customer supplied the last missing item: the SLA starts, we acknowledge."""
    request.tier = pipeline.tier_of(request.registration_number)
    set_status(session, request, "new", now, pipeline.calendar, reason="details complete")
    start_clocks(request, now, pipeline.calendar, pipeline.sla)
    reply = _queue_reply(session, pipeline, request, letter, parsed, "acknowledgement", now)
    return Outcome(letter.id, "follow_up", request.number, reply, detail="complete")


def _to_humans(
    session: Session, pipeline: Pipeline, letter: Letter, request: Request, now: datetime
) -> Outcome:
    """Clarification rounds are used up: a person takes over, the SLA starts."""
    request.queue = pipeline.workflow.human_queue
    set_status(
        session,
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
    return Outcome(letter.id, "follow_up", request.number, detail="to human queue")


def _supplied(request: Request, analysis: Analysis) -> list[str]:
    """Which of the request's missing items this follow-up provides (and copy them over)."""
    supplied = []
    if "organization" in request.missing and analysis.organization:
        request.organization = analysis.organization
        supplied.append("organization")
    if "registration_number" in request.missing and analysis.registration_number:
        request.registration_number = analysis.registration_number
        supplied.append("registration_number")
    if "description" in request.missing and "description" not in analysis.missing:
        supplied.append("description")
    if "subject" in request.missing and _new_subject(analysis.letter.subject):
        request.subject = _new_subject(analysis.letter.subject)
        supplied.append("subject")
    return supplied


def _new_subject(subject: str | None) -> str:
    """A subject the customer wrote, not our reply's subject coming back with Re:."""
    text = TOKEN.sub("", subject or "")
    text = re.sub(
        r"^\s*((re|fwd?|ответ|отв|пересл)\s*(\[\d+\])?\s*:\s*)+", "", text, flags=re.IGNORECASE
    ).strip()
    ours = (
        "Требуются уточнения",
        "More details needed",
        "Обращение зарегистрировано",
        "Request registered",
    )
    return "" if any(text.startswith(prefix) for prefix in ours) else text


def _queue_reply(
    session: Session,
    pipeline: Pipeline,
    request: Request,
    letter: Letter,
    parsed: ParsedLetter,
    kind: str,
    now: datetime,
    unknown_registration: str | None = None,
) -> str | None:
    if kind not in ("acknowledgement", "clarification") or not request.requester:
        return None
    if kind == "clarification":
        request.clarifications += 1
    if not pipeline.replies_enabled:
        return None
    decision = _guard(session, pipeline, request.requester, now)
    if decision.action == "refuse":
        repo.add_event(
            session, request, "reply_suppressed", now, reply=kind, reason=decision.reason
        )
        log.warning(
            "reply suppressed",
            msgid=parsed.message_id,
            request=request.number,
            to=request.requester,
            reason=decision.reason,
        )
        return None
    if decision.action == "notice":
        kind = "limit"
    draft = _draft(pipeline, request, parsed, kind, unknown_registration)
    item = OutboxItem(
        request_id=request.id,
        letter_id=letter.id,
        kind=kind,
        sender=draft.sender,
        recipient=draft.recipient,
        message_id=draft.message_id,
        subject=draft.subject,
        raw=draft.raw,
        state="pending",
        attempts=0,
        not_before=pipeline.send_time(now),
        created_at=now,
    )
    session.add(item)
    session.flush()
    repo.add_event(session, request, "reply_queued", now, reply=kind, outbox=item.id)
    return kind


def _guard(session: Session, pipeline: Pipeline, address: str, now: datetime) -> Decision:
    policy = pipeline.guard
    recent, notice_sent = repo.replies_to_since(session, address.lower(), now - policy.window)
    return decide(address, policy, recent, notice_sent, repo.is_suppressed(session, address))


def _draft(
    pipeline: Pipeline,
    request: Request,
    parsed: ParsedLetter,
    kind: str,
    unknown_registration: str | None = None,
) -> Draft:
    facts = ReplyFacts(
        number=request.number,
        request_type=request.request_type,
        priority=request.priority,
        language=request.language,
        subject=request.subject,
        missing=tuple(request.missing),
        unknown_registration=unknown_registration,
        first_response_due=_local(pipeline, request.first_response_due),
        hours=pipeline.hours_text(request.language),
    )
    thread = Thread(
        recipient=request.requester,
        recipient_name=parsed.sender.name if parsed.sender else "",
        message_id=parsed.message_id,
        references=parsed.references,
    )
    domain = _domain(pipeline.identity.address) or "mailroute.invalid"
    message_id = new_message_id(request.number, domain)
    return compose(kind, facts, thread, pipeline.identity, pipeline.templates, message_id)


def _local(pipeline: Pipeline, moment: datetime | None) -> datetime | None:
    return moment.astimezone(pipeline.calendar.zone) if moment else None


def _log(outcome: Outcome, letter: Letter) -> None:
    fields = {"msgid": letter.message_id, "uid": letter.uid, "letter": letter.id}
    if outcome.state == "quarantined":
        log.error("letter quarantined", **fields, error=outcome.detail)
    elif outcome.state == "processed":
        log.info("request created", **fields, request=outcome.request, type=outcome.request_type)
    elif outcome.state == "follow_up":
        log.info("follow-up attached", **fields, request=outcome.request, detail=outcome.detail)
    else:
        log.info(f"letter {outcome.state}", **fields, reason=outcome.detail)
    if outcome.reply:
        log.info(
            "reply queued", msgid=letter.message_id, request=outcome.request, kind=outcome.reply
        )
