"""Reply drafts: acknowledgement and clarification, threaded and loop-safe.

Pure: facts in, bytes out. Templates are plain text with ``$name`` placeholders
(:class:`string.Template`), so an admin's template can never run code; every
value is flattened to one line before it reaches a header, so nothing a
customer writes can add a header to our reply.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
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


def one_line(value: str | None, limit: int = MAX_SUBJECT) -> str:
    """Collapse any line breaks and control characters: header-safe text."""
    flat = re.sub(r"[\x00-\x1f\x7f\u2028\u2029\x85]+", " ", value or "")
    flat = re.sub(r"\s+", " ", flat).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


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
    message["To"] = formataddr((one_line(thread.recipient_name), thread.recipient))
    message["Subject"] = subject_line
    message["Message-ID"] = message_id
    if thread.message_id:
        message["In-Reply-To"] = thread.message_id
        message["References"] = " ".join([*thread.references[-10:], thread.message_id])
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
        recipient=thread.recipient,
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
    message["Subject"] = one_line(subject, 250)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    message["X-Mailroute-Kind"] = kind
    message.set_content(body, charset="utf-8", cte="quoted-printable")
    return Draft(kind, identity.address, recipient, one_line(subject, 250), message_id,
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
    rendered_subject = one_line(string.Template(subject).safe_substitute(values), 250)
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
