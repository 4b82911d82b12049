"""Reply drafts: acknowledgement and clarification, threaded and loop-safe.

Pure: facts in, bytes out. Templates are plain text with ``$name`` placeholders
(:class:`string.Template`), so an admin's template can never run code; every
value is flattened to one line before it reaches a header, so nothing a
customer writes can add a header to our reply.

Flattening alone is not enough: the stdlib's header classes decode RFC 2047
words in any value they are given, so a subject that arrived double-encoded
(``=?utf-8?q?=0D=0ABcc:_x@y?=`` after our own decoding) would turn back into a
line break on output. Customer text therefore has its ``=?`` broken up
(:func:`inert`), ids that are not plain msg-ids are left out of the threading
headers, and an address the header cannot carry safely is not put in ``To``.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr
from importlib import resources
from pathlib import Path

KINDS = ("acknowledgement", "clarification", "limit")
LANGUAGES = ("ru", "en")

TYPE_LABELS = {
    "ru": {
        "incident": "Инцидент",
        "service_request": "Запрос на обслуживание (ЗНО)",
        "change_request": "Запрос на изменение (ЗНИ)",
        "improvement": "Предложение по усовершенствованию",
    },
    "en": {
        "incident": "Incident",
        "service_request": "Service request",
        "change_request": "Change request",
        "improvement": "Improvement suggestion",
    },
}
PRIORITY_LABELS = {
    "ru": {"critical": "критический", "normal": "обычный", "low": "низкий"},
    "en": {"critical": "critical", "normal": "normal", "low": "low"},
}
MISSING_TEXT = {
    "ru": {
        "subject": "тему письма — по ней обращение легко найти в переписке;",
        "description": "описание проблемы или вопроса: что произошло, в какой программе и что "
        "вы ожидали — без него мы не поймём, чем помочь;",
        "organization": "название вашей организации с организационно-правовой формой "
        "(например, ООО «Ромашка») — по нему мы находим ваш договор;",
        "registration_number": "регистрационный номер из лицензионного договора — "
        "без него мы не можем подтвердить право на поддержку;",
    },
    "en": {
        "subject": "a subject for your message, so the request is easy to find;",
        "description": "a description of the problem or question: what happened, in which "
        "application, and what you expected, so we know how to help;",
        "organization": "your organization's name with its legal form (e.g. Example Ltd), "
        "so we can find your contract;",
        "registration_number": "the registration number from your licence agreement, "
        "which confirms your right to support;",
    },
}
NOT_FOUND_TEXT = {
    "ru": " номер {value} не найден в нашем реестре, проверьте его, пожалуйста;",
    "en": " the number {value} is not in our registry, please check it;",
}
NO_SUBJECT = {"ru": "(без темы)", "en": "(no subject)"}
FIRST_RESPONSE = {
    "ru": "Первый ответ специалиста: до {when}.",
    "en": "A specialist will first respond by {when}.",
}
MAX_SUBJECT = 150
MAX_REFERENCES = 10  # of the customer's thread, plus the letter answered
# A msg-id the threading headers may carry: printable ASCII, no spaces or angle
# brackets inside, nothing the header classes would decode, not absurdly long.
_MSG_ID = re.compile(r"<[!-;=?-~]{1,250}>")
# An addr-spec the To header carries as is (after IDNA for the domain).
_ADDR_SPEC = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
NO_ADDRESS = "undisclosed-recipients:;"  # an empty group: delivery goes by the envelope


@dataclass(frozen=True)
class Identity:
    """Who replies: the desk's From address and name."""

    address: str
    name: str


@dataclass(frozen=True)
class ReplyFacts:
    """What a reply says about its request."""

    number: str
    request_type: str
    priority: str
    language: str
    subject: str | None
    missing: tuple[str, ...] = ()
    unknown_registration: str | None = None
    first_response_due: datetime | None = None
    hours: str = ""


@dataclass(frozen=True)
class Thread:
    """The customer's letter we answer: where the reply goes and what it threads under."""

    recipient: str
    recipient_name: str = ""
    message_id: str | None = None
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class Draft:
    """A reply ready for the outbox; ``Date`` is added when it is actually sent."""

    kind: str
    sender: str
    recipient: str
    subject: str
    message_id: str
    raw: bytes = field(repr=False)


@dataclass(frozen=True)
class Templates:
    """Reply templates by (kind, language); overrides come from a directory."""

    texts: Mapping[tuple[str, str], str]

    @classmethod
    def load(cls, override_dir: str | None = None) -> Templates:
        """Built-in templates, each replaced by ``KIND.LANG.txt`` in ``override_dir``."""
        builtin = resources.files("mailroute") / "templates"
        texts = {}
        for kind in KINDS:
            for lang in LANGUAGES:
                name = f"{kind}.{lang}.txt"
                custom = Path(override_dir) / name if override_dir else None
                source = custom if custom and custom.is_file() else builtin / name
                texts[(kind, lang)] = source.read_text(encoding="utf-8")
        return cls(texts)


def new_message_id(number: str, domain: str) -> str:
    """A Message-ID nobody can predict: it is the proof that a reply belongs to a thread.

    ``email.utils.make_msgid`` draws from the ``random`` module, whose state a
    correspondent can reconstruct from a few hundred of our earlier replies.
    """
    return f"<{secrets.token_hex(16)}.{number}@{domain or 'mailroute.invalid'}>"


def one_line(value: str | None, limit: int = MAX_SUBJECT) -> str:
    """Collapse any line breaks and control characters: header-safe text."""
    flat = re.sub(r"[\x00-\x1f\x7f\u2028\u2029\x85]+", " ", value or "")
    flat = re.sub(r"\s+", " ", flat).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def inert(text: str) -> str:
    """Text the header classes will not decode: every RFC 2047 opener "=?" broken up.

    Nobody writes "=?" in a subject or a name on purpose; a value that still holds
    one after our decoding was encoded twice, which is how line breaks are smuggled.
    Surrogates (undecodable bytes) become U+FFFD so the value can be encoded at all.
    """
    text = text.encode("utf-8", "replace").decode("utf-8")
    while "=?" in text:
        text = text.replace("=?", "= ?")
    return text


def thread_ids(message_id: str | None, references: tuple[str, ...]) -> tuple[str | None, str]:
    """In-Reply-To and References for a reply: only plain msg-ids, the last few of them.

    A hostile letter's ids may be megabytes long, carry encoded words or be legion;
    they are left out rather than repaired (threading falls back on the [SD-…] token).
    """
    reply_to = message_id if message_id and _plain_id(message_id) else None
    kept = [r for r in references if _plain_id(r) and r != reply_to]
    chain = [*kept[-MAX_REFERENCES:], *([reply_to] if reply_to else [])]
    return reply_to, " ".join(chain)


def _plain_id(value: str) -> bool:
    return _MSG_ID.fullmatch(value) is not None and "=?" not in value


def ascii_address(address: str) -> str | None:
    """The address as a plain ASCII addr-spec (an IDN domain in its xn-- form), or None
    when it cannot be one: a non-ASCII local part, or specials that would split it."""
    local, at, domain = address.rpartition("@")
    if at and not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    spec = f"{local}@{domain}"
    if not at or len(spec) > 254 or "=?" in spec or _ADDR_SPEC.fullmatch(spec) is None:
        return None  # "=?" too: the header classes would decode it as an encoded word
    return spec


def address_header(name: str, address: str) -> Address | str:
    """A To value naming exactly that one mailbox, or an empty group when the address
    cannot be written safely (the envelope still carries it).

    An ``Address`` object, not formataddr()'s string: the stdlib re-parses a string
    and writes the ASCII words of a non-ASCII name unquoted, so "Лена <> Bcc: x@y"
    or "../etc Не" would come out as more mailboxes or as a header it cannot read
    back; an Address keeps the whole name in one quoted string or encoded word.
    """
    spec = ascii_address(address)
    if spec is None:
        return NO_ADDRESS
    return Address(display_name=display_name(name, spec), addr_spec=spec)


_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')


def display_name(name: str, spec: str) -> str:
    """The customer's name as our To header shows it: one line, inert, and safe to fold.

    A non-ASCII name becomes encoded words, which fold safely.  An ASCII name with
    specials becomes a quoted string, which the stdlib unquotes when it has to fold
    the line ("a <b tell me?" would turn into an address); when the line would be
    folded, the specials become spaces.
    """
    text = inert(one_line(name, 78))
    if text.isascii() and _SPECIALS.search(text):
        quoted = len(text) + 2 + text.count("\\") + text.count('"')
        if len("To: ") + quoted + len(" <>") + len(spec) > 78:
            text = one_line(_SPECIALS.sub(" ", text), 78)
    return text


def compose(
    kind: str,
    facts: ReplyFacts,
    thread: Thread,
    identity: Identity,
    templates: Templates,
    message_id: str,
) -> Draft:
    """Render one reply: subject and body from the template, threading headers set."""
    lang = facts.language if facts.language in LANGUAGES else "ru"
    subject_line, body = _render(templates.texts[(kind, lang)], _values(facts, lang))
    message = EmailMessage(policy=SMTP)
    message["From"] = formataddr((one_line(identity.name), identity.address))
    message["To"] = address_header(thread.recipient_name, thread.recipient)
    message["Subject"] = subject_line
    message["Message-ID"] = message_id
    in_reply_to, references = thread_ids(thread.message_id, thread.references)
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
    if references:
        message["References"] = references
    message["Auto-Submitted"] = "auto-replied"
    message["X-Auto-Response-Suppress"] = "All"
    message["Precedence"] = "auto_reply"
    message["X-Mailroute-Kind"] = kind
    message["X-Mailroute-Request"] = facts.number
    message["Content-Language"] = lang
    message.set_content(body, charset="utf-8", cte="quoted-printable")
    return Draft(
        kind=kind,
        sender=identity.address,
        recipient=ascii_address(thread.recipient) or thread.recipient,
        subject=subject_line,
        message_id=message_id,
        raw=message.as_bytes(),
    )


def compose_notice(
    kind: str, subject: str, body: str, identity: Identity, recipient: str, message_id: str
) -> Draft:
    """A message to the desk's own people (escalations, reports): plain, machine-marked."""
    message = EmailMessage(policy=SMTP)
    message["From"] = formataddr((one_line(identity.name), identity.address))
    message["To"] = recipient
    message["Subject"] = inert(one_line(subject, 250))
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    message["X-Mailroute-Kind"] = kind
    message.set_content(body, charset="utf-8", cte="quoted-printable")
    return Draft(kind, identity.address, recipient, inert(one_line(subject, 250)), message_id,
                 message.as_bytes())


def _values(facts: ReplyFacts, lang: str) -> dict[str, str]:
    return {
        "number": facts.number,
        "subject": one_line(facts.subject) or NO_SUBJECT[lang],
        "request_type": TYPE_LABELS[lang].get(facts.request_type, facts.request_type),
        "priority": PRIORITY_LABELS[lang].get(facts.priority, facts.priority),
        "missing_list": _missing_list(facts, lang),
        "first_response": _when(facts.first_response_due, lang),
        "first_response_line": (
            FIRST_RESPONSE[lang].format(when=_when(facts.first_response_due, lang))
            if facts.first_response_due
            else ""
        ),
        "hours": facts.hours,
    }


def _render(template: str, values: Mapping[str, str]) -> tuple[str, str]:
    head, _, body = template.partition("\n\n")
    subject = head.removeprefix("Subject:").strip() if head.startswith("Subject:") else ""
    if not subject:
        head, body = "", template
    rendered_subject = inert(one_line(string.Template(subject).safe_substitute(values), 250))
    rendered_body = string.Template(body).safe_substitute(values)
    return rendered_subject, re.sub(r"\n{3,}", "\n\n", rendered_body).strip() + "\n"


def _missing_list(facts: ReplyFacts, lang: str) -> str:
    lines = []
    for item in facts.missing:
        text = MISSING_TEXT[lang].get(item, item)
        if item == "registration_number" and facts.unknown_registration:
            text = text.rstrip(";") + ":" + NOT_FOUND_TEXT[lang].format(
                value=one_line(facts.unknown_registration, 40)
            )
        lines.append(f"  - {text}")
    return "\n".join(lines)


def _when(moment: datetime | None, lang: str) -> str:
    if moment is None:
        return ""
    zone = moment.tzname() or ""
    if str(moment.tzinfo) == "Europe/Moscow":
        zone = "МСК" if lang == "ru" else "Moscow time"
    stamp = f"{moment:%d.%m.%Y %H:%M}" if lang == "ru" else f"{moment:%Y-%m-%d %H:%M}"
    return f"{stamp} ({zone})"
