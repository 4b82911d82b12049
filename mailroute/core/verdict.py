"""What a parsed letter becomes: the pure pipeline behind `explain` and processing.

    letter ─ machine_mail (a robot wrote it? → ignore)
           ─ quotes (greeting | own words | signature | quoted history)
           ─ language, description check
           ─ classify (markers, votes, priority)   ← rules.toml + [classification]
           ─ extract (organization, registration number) ← [registry]
           ─ route (queue)                          ← [routing]

Every decision is recorded as a :class:`Reason` naming the rule, so `explain` can
say why and a rule can be tuned by name.

Pure: no IO, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from mailroute.config import ClassificationRule, Config, RoutingConfig
from mailroute.core import classify, extract, language, machine_mail, quotes, route
from mailroute.core.customers import Customer, Registry
from mailroute.core.letter import ParsedLetter
from mailroute.core.subjects import without_reply_prefixes
from mailroute.core.words import tokens

MISSING_ORDER = ("subject", "description", "organization", "registration_number")
BLANK_SUBJECTS = frozenset({"", "(без темы)", "без темы", "(no subject)", "no subject"})
MIN_DESCRIPTION_WORDS = 3
# The steps ``analyze`` tells its ``stage`` callback, in order (a worker shares the
# one it is in as an index into this: tests/core/test_verdict.py keeps it complete).
STAGES = ("analyze:quotes", "analyze:language", "analyze:machine_mail",
          "analyze:description", "analyze:classify", "analyze:organization", "analyze:route")
# Words that state nothing about the request on their own ("во вложении", "помогите").
_FILLER_STEMS = (
    "влож", "прилага", "прилож", "прикреп", "файл", "скрин", "подробн", "attach", "screenshot",
    "file", "detail",
)
_FILLER = frozenset(
    tokens(
        "в во на с со к по для от а и но же ли это вот мы я вы нам вас вам мне меня нас тут здесь "
        "ниже выше см смотрите посмотрите пожалуйста помогите помочь помощь спасибо заранее "
        "благодарю добрый доброе доброго день утро вечер здравствуйте привет коллеги уважением "
        "please see help thanks thank you hello hi dear below above here the a an is are in of "
        "and to it this find we our i me us for with мной мною позвоните перезвоните свяжитесь "
        "связаться созвониться телефону телефон жду ждем ответа ответ ответе срочно очень call "
        "contact reply answer asap urgent"
    )
)
# Covering notes of a forward or a reminder: they point at the request, not state it.
# Each begins a word: the leading \b lets the engine pass over the other positions at
# once instead of trying every case-blind alternative there (36 -> 13 us a letter).
_COVERING_NOTE = re.compile(
    r"\b(?:"
    r"(?:повторно|ещ[её] раз|снова)\s+(?:направля|отправля|пересыла|пиш|высыла)\w*|"
    r"(?:пересылаю|направляю|отправляю|высылаю)(?:\s+(?:вам|повторно|письмо|сообщение|ниже))*|"
    r"ответа?\s+(?:пока\s+|до сих пор\s+|так и\s+|всё ещё\s+|все еще\s+)?(?:не|нет)"
    r"(?:\s+(?:получили|получил\w*|было|пришло|пришел|поступило|последовало))?|"
    r"напомина\w*|жд[её]м\s+(?:вашего\s+)?ответа|см\.?\s+ниже|"
    r"(?:ошибка|проблема|ситуация)\s+(?:та\s+же|такая\s+же|прежняя|не\s+изменилась)|"
    r"(?:the\s+)?same\s+(?:error|problem|issue)(?:\s+as\s+(?:below|before))?|"
    r"(?:resending|forwarding|re-sending|sending again)(?:\s+(?:this|it|the message|below))*|"
    r"(?:still\s+)?(?:no|waiting for (?:an?|your)?)\s*(?:reply|answer|response)(?:\s+yet)?|"
    r"(?:please\s+)?see\s+(?:the\s+)?(?:below|attached|forwarded(?:\s+message)?)|fyi|"
    r"as discussed|as promised|"
    r"(?:please\s+)?let (?:me|us) know if you need (?:anything|any|more|further)[\w ]*|"
    r"if you need (?:any |more |further |additional )?(?:information|details|anything)[\w ]*|"
    r"если (?:нужн\w*|понадоб\w*|потребу\w*)[^.!?\n]{0,40}(?:ещ[её]|дополнительн\w*)[^.!?\n]*|"
    r"(?:прошу|просим)\s+(?:зарегистрировать|принять|рассмотреть)(?:\s+(?:мо[её]|наш[ау]?))?\s+"
    r"(?:обращение|заявку|запрос|письмо)|please (?:register|log|open) (?:this|my|our|a) "
    r"(?:request|ticket|case)"
    r")",
    re.IGNORECASE,
)
# The blanks around a number's ":" or "№" are taken whole (possessive): a digit or mark
# follows them, never a blank, and sharing a run between the two was quadratic.
# What is not a description: inline image references, addresses, links, requisites
# (before phone numbers: "ИНН 7701234567" goes whole) and phone numbers.  Several
# passes, each with a literal start or skipped when its mark is absent: one alternation
# with a case-blind Cyrillic branch tried every alternative at every character (3x slower).
_NOISE = (
    ("[cid:", re.compile(r"\[cid:[^\][]*+\]")),
    ("@", re.compile(r"(?<!\S)\S+@\S+")),
    ("", re.compile(r"(?:[hH][tT][tT][pP][sS]?://|[wW]{3}\.)\S+")),
    ("", re.compile(
        r"(?:[иИ][нН]{2}|[кК][пП]{2}|[оО][гГ][рР][нН]|[оО][кК][пП][оО]|[бБ][иИ][кК]|[рРкК]/[сС])"
        r"\s*+[:№]?\s*+\d+"
    )),
    ("", re.compile(r"\+?\d[\d\s()\-–]{6,}\d")),
)


@dataclass(frozen=True)
class Reason:
    """One decision: the stable rule name, what it set, and the evidence."""

    rule: str
    sets: str
    detail: str


@dataclass(frozen=True)
class Analysis:
    """Everything decided about one letter (the explain JSON is :meth:`as_dict`)."""

    letter: ParsedLetter
    own_text: str
    signature: str
    quoted: str
    action: Literal["ticket", "ignore"]
    ignore_reason: str | None
    request_type: str | None
    priority: str | None
    organization: str | None
    registration_number: str | None
    missing: tuple[str, ...]
    reply: Literal["acknowledgement", "clarification", "none"]
    language: Literal["ru", "en"]
    queue: str | None
    reasons: tuple[Reason, ...]
    unknown_registration: str | None = None  # a number the registry does not know
    # 0..1 per decided field (request_type, organization, registration_number; null when
    # the field is null) and whether a person should look: see :func:`review`.
    confidence: Mapping[str, float | None] = field(default_factory=dict)
    needs_review: bool = False
    # Extracted fields the reply asks the customer to confirm (their values are guesses).
    to_confirm: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        """The explain JSON: the nine spec fields, queue, reasons and identification."""
        return {
            "action": self.action,
            "ignore_reason": self.ignore_reason,
            "request_type": self.request_type,
            "priority": self.priority,
            "organization": self.organization,
            "registration_number": self.registration_number,
            "missing": list(self.missing),
            "reply": self.reply,
            "language": self.language,
            "queue": self.queue,
            "reasons": [{"rule": r.rule, "sets": r.sets, "detail": r.detail} for r in self.reasons],
            "message_id": self.letter.message_id,
            "subject": self.letter.subject,
            "requester": self.letter.sender.email if self.letter.sender else None,
            "requester_header": self.letter.sender_header,
            "confidence": dict(self.confidence),
            "needs_review": self.needs_review,
            "to_confirm": list(self.to_confirm),
        }


@dataclass(frozen=True)
class AnalysisContext:
    """What analysis needs from the configuration, prepared once."""

    own_addresses: frozenset[str]
    rules: classify.RuleSet
    routing: RoutingConfig = field(default_factory=RoutingConfig)  # type: ignore[arg-type]
    registry: Registry | None = None
    vendor_names: frozenset[str] = frozenset()

    @classmethod
    def from_config(
        cls, config: Config, builtin_rules: Sequence[ClassificationRule]
    ) -> AnalysisContext:
        """The built-in rules are read at the edge (:mod:`mailroute.packaged`)."""
        return cls(
            # every mailbox's addresses: a letter from any of them is a loop
            own_addresses=frozenset().union(*(m.own_addresses() for m in config.all_mailboxes())),
            rules=classify.RuleSet.build(builtin_rules, config.classification),
            routing=config.routing,
            registry=Registry.from_config(config.registry),
            vendor_names=frozenset(
                extract.normalize_org(n) for n in config.classification.vendor_names
            ),
        )


# --------------------------------------------------------------------------- pipeline


def _no_stage(name: str) -> None:
    pass


def analyze(
    letter: ParsedLetter, context: AnalysisContext, stage: Callable[[str], None] = _no_stage
) -> Analysis:
    """Decide what ``letter`` becomes. ``stage`` is told each step as it begins: a letter
    that runs over its time budget is quarantined naming the step that overran."""
    stage("analyze:quotes")
    parts = quotes.split(letter.text)
    stage("analyze:language")
    lang = language.detect(parts.own, letter.subject, letter.text)
    stage("analyze:machine_mail")
    machine = machine_mail.check(letter, context.own_addresses)
    if machine is not None:
        return _ignored(letter, parts, lang, machine)
    return _ticket(letter, parts, lang, context, stage)


def _ignored(
    letter: ParsedLetter,
    parts: quotes.Split,
    lang: language.Language,
    verdict: machine_mail.Verdict,
) -> Analysis:
    return Analysis(
        letter=letter,
        own_text=parts.own,
        signature=parts.signature,
        quoted=parts.quoted,
        action="ignore",
        ignore_reason=verdict.reason,
        request_type=None,
        priority=None,
        organization=None,
        registration_number=None,
        missing=(),
        reply="none",
        language=lang,
        queue=None,
        reasons=(Reason(verdict.rule, f"ignore_reason={verdict.reason}", verdict.detail),),
    )


@dataclass(frozen=True)
class _Identity:
    organization: str | None
    registration_number: str | None
    unknown_registration: str | None
    tier: str | None
    reasons: tuple[Reason, ...]
    organization_confidence: float | None = None
    registration_confidence: float | None = None


def _ticket(
    letter: ParsedLetter,
    parts: quotes.Split,
    lang: language.Language,
    context: AnalysisContext,
    stage: Callable[[str], None],
) -> Analysis:
    subject = clean_subject(letter.subject)
    stage("analyze:description")
    described = has_description(parts.own)
    stage("analyze:classify")
    verdict = classify.classify(_texts(letter, parts, subject, described), context.rules)
    stage("analyze:organization")
    who = _identify(letter, parts, subject, context)
    stage("analyze:route")
    missing = _missing(letter.subject, described, who)
    sender_domain = _domain(letter)
    queue = route.route(
        route.Facts(
            request_type=verdict.request_type,
            priority=verdict.priority,
            organization=who.organization,
            sender_domain=sender_domain,
            text=f"{subject}\n{parts.own}",
            tier=who.tier,
        ),
        context.routing,
    )
    confidence = {
        "request_type": type_confidence(verdict),
        "organization": who.organization_confidence,
        "registration_number": who.registration_confidence,
    }
    doubts = review(verdict, confidence)
    queue_name, queue_reason = queue.queue, Reason(
        queue.rule or "route:default", f"queue={queue.queue}", queue.detail
    )
    if doubts and context.routing.review_queue:
        # A person checks a guess before it sets an SLA; the reply does not change.
        queue_name = context.routing.review_queue
        queue_reason = Reason(
            "route:needs-review", f"queue={queue_name}", f"instead of {queue.queue}: unsure"
        )
    reasons = (
        *_classification_reasons(verdict),
        *who.reasons,
        *_missing_reasons(missing, letter.subject, described),
        *(Reason("review:doubt", "needs_review=true", doubt) for doubt in doubts),
        queue_reason,
    )
    return Analysis(
        letter=letter,
        own_text=parts.own,
        signature=parts.signature,
        quoted=parts.quoted,
        action="ticket",
        ignore_reason=None,
        request_type=verdict.request_type,
        priority=verdict.priority,
        organization=who.organization,
        registration_number=who.registration_number,
        missing=missing,
        reply="clarification" if missing else "acknowledgement",
        language=lang,
        queue=queue_name,
        reasons=reasons,
        unknown_registration=who.unknown_registration,
        confidence=confidence,
        needs_review=bool(doubts),
        to_confirm=doubtful_fields(confidence),
    )


# A vote is close when the runner-up is within this many votes of the winner (one
# "вопрос" or one "?" could have turned it), and doubtful below this confidence.
CLOSE_VOTE_MARGIN = 1.0
DOUBTFUL = 0.5


def type_confidence(verdict: classify.Verdict) -> float:
    """How sure the request type is, 0..1.

    A marker ("ЗНИ:", "Incident") is certain: 1.0. A vote is the winner's share of the
    winner's and the runner-up's votes (5 to 1 is 0.83; 3 to 3 is 0.5); no vote at all
    (the configured default type) is 0.0.
    """
    if verdict.by_marker:
        return 1.0
    ranked = sorted(verdict.scores.values(), reverse=True)
    top = ranked[0] if ranked else 0.0
    second = ranked[1] if len(ranked) > 1 else 0.0
    if top <= 0:
        return 0.0
    return round(top / (top + second), 2)


def review(verdict: classify.Verdict, confidence: Mapping[str, float | None]) -> list[str]:
    """Why a person should look before the decision is trusted (empty: no doubt).

    - a close vote: no marker, and the runner-up within CLOSE_VOTE_MARGIN votes of the
      winner, or the winner carried only by the half vote of an unrecognised description;
    - a doubtful extraction: an organization or number below DOUBTFUL confidence (a name
      inside a sentence, two names placed equally well, two different numbers).
    """
    doubts = []
    if not verdict.by_marker:
        ranked = sorted(verdict.scores.values(), reverse=True) or [0.0]
        top, second = ranked[0], (ranked[1] if len(ranked) > 1 else 0.0)
        if top - second < CLOSE_VOTE_MARGIN or top < CLOSE_VOTE_MARGIN:
            doubts.append(f"close vote for {verdict.request_type}: {top:g} to {second:g}")
    for name in ("organization", "registration_number"):
        value = confidence.get(name)
        if value is not None and value < DOUBTFUL:
            doubts.append(f"{name} is doubtful (confidence {value:g})")
    return doubts


def doubtful_fields(confidence: Mapping[str, float | None]) -> tuple[str, ...]:
    """The extracted values too doubtful to use silently: the reply asks the customer to
    confirm them rather than asking again for what the letter already holds."""
    return tuple(
        name for name in ("organization", "registration_number")
        if (value := confidence.get(name)) is not None and value < DOUBTFUL
    )


def clean_subject(subject: str | None) -> str:
    """The subject without "Re:"/"Fwd:" prefixes."""
    return without_reply_prefixes(subject)


def _texts(
    letter: ParsedLetter, parts: quotes.Split, subject: str, described: bool
) -> classify.Texts:
    """Fields for the rules; without a description only the subject speaks."""
    own = parts.own if described else ""
    return classify.Texts(
        subject=subject,
        first_line=_first_line(parts.own),
        own_text=own,
        signature=parts.signature,
        text=letter.text,
        sender=letter.sender.email if letter.sender else "",
        headers=letter.headers,
    )


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def has_description(own: str) -> bool:
    """Whether the own words state a request: a few words beyond filler, names and numbers."""
    text = _blank_spans(own, extract.organization_spans(own))
    text = _blank_spans(text, extract.registration_spans(text))
    for mark, noise in _NOISE:
        if mark in text:
            text = noise.sub(" ", text)
    text = _COVERING_NOTE.sub(" ", text)
    words = [w for w in tokens(text) if _is_content_word(w)]
    return len(words) >= MIN_DESCRIPTION_WORDS


def _is_content_word(word: str) -> bool:
    if word.isdigit() or len(word) < 2 or word in _FILLER:
        return False
    return not word.startswith(_FILLER_STEMS)


def _blank_spans(text: str, spans: list[tuple[int, int]]) -> str:
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def _domain(letter: ParsedLetter) -> str:
    email = letter.sender.email if letter.sender else ""
    return email.rpartition("@")[2].lower()


def _vendor_names(letter: ParsedLetter, context: AnalysisContext) -> frozenset[str]:
    """The vendor's names: configured, plus organizations in the desk's own display names."""
    names = set(context.vendor_names)
    for address in (*letter.to, *letter.cc):
        if address.email in context.own_addresses and address.name:
            names.update(
                extract.normalize_org(c.value)
                for c in extract.candidates([("to", address.name)])
            )
    return frozenset(names)


def _identify(
    letter: ParsedLetter, parts: quotes.Split, subject: str, context: AnalysisContext
) -> _Identity:
    sources = [("own text", parts.own), ("signature", parts.signature), ("subject", subject)]
    org = extract.find_organization(sources, _vendor_names(letter, context))
    reg = extract.find_registration_number(sources)
    reasons = []
    if org is not None:
        reasons.append(Reason(org.rule, f"organization={org.value}", org.detail))
    if reg is not None:
        reasons.append(Reason(reg.rule, f"registration_number={reg.value}", reg.detail))
    if context.registry is None or reg is None:
        return _Identity(
            org.value if org else None, reg.value if reg else None, None, None, tuple(reasons),
            org.confidence if org else None, reg.confidence if reg else None,
        )
    return _check_registry(letter, context.registry, org, reg, tuple(reasons))


def _check_registry(
    letter: ParsedLetter,
    registry: Registry,
    org: extract.Found | None,
    reg: extract.Found,
    reasons: tuple[Reason, ...],
) -> _Identity:
    customer = registry.by_number(reg.value)
    if customer is None:
        unknown = Reason(
            "registry:unknown-number",
            "registration_number=null",
            f"{reg.value} is not in the customer registry",
        )
        return _Identity(
            org.value if org else None, None, reg.value, None, (*reasons, unknown),
            org.confidence if org else None, None,
        )
    found = Reason(
        "registry:number",
        f"organization={customer.name}",
        f"{reg.value} belongs to {customer.name} (tier {customer.tier})",
    )
    extra = (found, *_domain_check(letter, customer))
    # The registry vouches for both: the number is known and names the organization.
    return _Identity(customer.name, reg.value, None, customer.tier, (*reasons, *extra), 1.0, 1.0)


def _domain_check(letter: ParsedLetter, customer: Customer) -> tuple[Reason, ...]:
    domain = _domain(letter)
    if not customer.domains or customer.owns_domain(domain):
        return ()
    return (
        Reason(
            "registry:foreign-domain",
            "flag=sender-domain",
            f"sender domain {domain or '(none)'} is not one of {customer.name}'s: "
            + ", ".join(sorted(customer.domains)),
        ),
    )


def _missing(subject: str | None, described: bool, who: _Identity) -> tuple[str, ...]:
    present = {
        "subject": clean_subject(subject).casefold() not in BLANK_SUBJECTS,
        "description": described,
        "organization": who.organization is not None,
        "registration_number": who.registration_number is not None,
    }
    return tuple(item for item in MISSING_ORDER if not present[item])


def _missing_reasons(
    missing: tuple[str, ...], subject: str | None, described: bool
) -> tuple[Reason, ...]:
    why = {
        "subject": "Subject header absent" if subject is None else f"Subject {subject!r} is blank",
        "description": "nothing but greeting, signature, quotes or filler in the own text",
        "organization": "no organization with a legal form in own text, signature or subject",
        "registration_number": "no registration number phrase with digits",
    }
    return tuple(Reason(f"missing:{item}", f"missing+={item}", why[item]) for item in missing)


def _classification_reasons(verdict: classify.Verdict) -> tuple[Reason, ...]:
    reasons = []
    if not verdict.type_hits:
        reasons.append(
            Reason("classify:default", f"request_type={verdict.request_type}", "no rule matched")
        )
    for hit in verdict.type_hits:
        how = "marker" if verdict.by_marker else f"vote {hit.rule.sets.weight:g}"
        reasons.append(
            Reason(
                hit.rule.name,
                f"request_type={verdict.request_type}",
                f"{hit.field} contains {hit.evidence!r} ({how})",
            )
        )
    if not verdict.priority_hits:
        reasons.append(
            Reason("priority:by-type", f"priority={verdict.priority}", verdict.request_type)
        )
    for hit in verdict.priority_hits:
        reasons.append(
            Reason(
                hit.rule.name,
                f"priority={verdict.priority}",
                f"{hit.field} contains {hit.evidence!r}",
            )
        )
    return tuple(reasons)
