"""Reply drafts: acknowledgement and clarification, threaded and loop-safe.

Pure: facts in, bytes out. Templates are plain text with ``$name`` placeholders
(:class:`string.Template`), so an admin's template can never run code; every
value is flattened to one line before it reaches a header, so nothing a
customer writes can add a header to our reply.

The message is written directly as bytes (a fixed header set, one text/plain
part): customer text goes out as plain ASCII words, a quoted string or RFC 2047
encoded words, never as header structure. Flattening alone is not enough: readers
decode RFC 2047 words in any value, so a subject that arrived double-encoded
(``=?utf-8?q?=0D=0ABcc:_x@y?=`` after our own decoding) would turn back into a
line break for whoever parses and re-writes our reply. Customer text therefore
has its ``=?`` broken up (:func:`inert`), ids that are not plain msg-ids are left
out of the threading headers, and an address the header cannot carry safely is
not put in ``To``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
from base64 import b64encode
from binascii import b2a_qp
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import getaddresses

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
CONFIRM_INTRO = {
    "ru": "Пожалуйста, проверьте, верно ли мы прочли ваше письмо:",
    "en": "Please check that we read your message right:",
}
CONFIRM_FIELDS = {
    "ru": {"organization": "организация", "registration_number": "регистрационный номер"},
    "en": {"organization": "organization", "registration_number": "registration number"},
}
CONFIRM_OUTRO = {
    "ru": "Если что-то не так, ответьте на это письмо и укажите верные данные.",
    "en": "If anything is wrong, reply to this message with the right details.",
}
NO_SUBJECT = {"ru": "(без темы)", "en": "(no subject)"}
FIRST_RESPONSE = {
    "ru": "Первый ответ специалиста: до {when}.",
    "en": "A specialist will first respond by {when}.",
}
# When the first-response time has gone by before the reply goes out (a letter that
# waited over a weekend, a daemon that was down): no promise of a time already past.
HANDLED_FIRST = {
    "ru": "Ваше обращение обрабатывается в первую очередь.",
    "en": "Your request is being handled first.",
}
HANDLED_FIRST_WHEN = {"ru": "в первую очередь", "en": "as a priority"}
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
    first_response_overdue: bool = False  # the due time has passed: promise no time
    # Extracted values the customer is asked to confirm: (field, value as read).
    to_confirm: tuple[tuple[str, str], ...] = ()


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
    """Reply templates by (kind, language), read by :func:`mailroute.packaged.load_templates`."""

    texts: Mapping[tuple[str, str], str]


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


_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')


def display_name(name: str, spec: str) -> str:
    """The customer's name as our To header shows it: one line, inert, and short enough
    to stay on the line as a quoted string when it has specials.

    A quoted string is never folded (the stdlib's own folder used to unquote one, and
    "a <b tell me?" then read as an address); a name whose quoted form would not fit
    on the line has its specials turned into spaces instead.
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
    spec = ascii_address(thread.recipient)
    head = [_from(identity)]
    to = _Field("To")
    if spec is None:
        to.word(NO_ADDRESS)
    else:
        _mailbox(to, display_name(thread.recipient_name, spec), spec)
    head.append(to.text())
    head.append(_unstructured("Subject", subject_line))
    head.append(_ids("Message-ID", message_id))
    in_reply_to, references = thread_ids(thread.message_id, thread.references)
    if in_reply_to:
        head.append(_ids("In-Reply-To", in_reply_to))
    if references:
        head.append(_ids("References", references))
    head.append(_REPLY_MARKS)
    head.append(_unstructured("X-Mailroute-Kind", kind))
    head.append(_unstructured("X-Mailroute-Request", facts.number))
    head.append(f"Content-Language: {lang}\r\n")
    return Draft(
        kind=kind,
        sender=identity.address,
        recipient=spec or thread.recipient,
        subject=subject_line,
        message_id=message_id,
        raw=_message(head, body),
    )


def compose_notice(
    kind: str,
    subject: str,
    body: str,
    identity: Identity,
    recipient: str,
    message_id: str,
    *,
    html: str | None = None,
    language: str | None = None,
) -> Draft:
    """A message to the desk's own people (escalations, alerts, reports): machine-marked.

    ``body`` is the text/plain part; with ``html`` (the report's page) the message is
    multipart/alternative, the text first, so a client that shows no HTML shows the text.
    """
    subject_line = inert(one_line(subject, 250))
    head = [
        _from(identity),
        _recipients(recipient),
        _unstructured("Subject", subject_line),
        _ids("Message-ID", message_id),
        "Auto-Submitted: auto-generated\r\nX-Auto-Response-Suppress: All\r\n",
        _unstructured("X-Mailroute-Kind", kind),
    ]
    if language is not None:
        head.append(_unstructured("Content-Language", language))
    raw = _message(head, body) if html is None else _alternative(head, body, html)
    return Draft(kind, identity.address, recipient, subject_line, message_id, raw)


# ---------------------------------------------------------------- writing the bytes
# Written directly rather than through EmailMessage: the header set is fixed and the
# values are known text, and the stdlib's parse-then-refold costs ~2.5 ms a reply.

_LINE = 78  # RFC 5322's SHOULD; only an unbreakable token (a long msg-id, an address) passes it
_EW_BYTES = 45  # UTF-8 bytes per encoded word: "=?utf-8?b?" + 60 + "?=" is 72 <= 75 chars
_EW_COST = len(" =?utf-8?b??=")
_REPLY_MARKS = (
    "Auto-Submitted: auto-replied\r\nX-Auto-Response-Suppress: All\r\nPrecedence: auto_reply\r\n"
)
_QP_OVERLONG = re.compile(rb"^(.{74,})(=[0-9A-F]{2})$", re.MULTILINE)
_MIME_VERSION = b"MIME-Version: 1.0\r\n"
_TEXT_PLAIN = (
    b'Content-Type: text/plain; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
)
_TEXT_HTML = (
    b'Content-Type: text/html; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
)


class _Field:
    """One header field: words joined by single spaces, folded before a word that would
    pass column 78; text that is not short printable ASCII goes out as RFC 2047
    B-encoded words.

    Encoded words are cut before a space where they can be (inside a word only when
    it is longer than one encoded word): readers drop the whitespace between two
    encoded words, and Python's parser before gh-128110 wrongly keeps it in a name,
    where it then doubles a space instead of splitting a word.
    """

    __slots__ = ("bare", "done", "line")

    def __init__(self, name: str) -> None:
        self.done: list[str] = []
        self.line = name + ":"
        self.bare = True  # nothing written on this line yet

    def word(self, token: str) -> None:
        if not self.bare and len(self.line) + 1 + len(token) > _LINE:
            self._fold()
        self.line += " " + token
        self.bare = False

    def encoded(self, text: str) -> None:
        data = text.encode("utf-8")
        start = 0
        while start < len(data):
            room = max(0, (_LINE - _EW_COST - len(self.line)) // 4 * 3)
            end = start + min(_EW_BYTES, room)
            if end >= len(data):
                end = len(data)
            else:
                while end > start and data[end] & 0xC0 == 0x80:  # not inside a character
                    end -= 1
                space = data.rfind(b" ", start + 1, end + 1)
                if space > start:  # cut before a space, which opens the next word
                    end = space
                elif not self.bare:  # a word is cut only on a line of its own
                    self._fold()
                    continue
            self.line += " =?utf-8?b?" + b64encode(data[start:end]).decode("ascii") + "?="
            self.bare = False
            start = end

    def _fold(self) -> None:
        self.done.append(self.line)
        self.line = ""
        self.bare = True

    def text(self) -> str:
        self.done.append(self.line)
        return "\r\n".join(self.done) + "\r\n"


def _plain(word: str) -> bool:
    return word.isascii() and word.isprintable() and 0 < len(word) < _LINE


def _unstructured(name: str, text: str) -> str:
    """Subject and the like: ASCII words as they are, runs of other words encoded.

    Only whitespace between two encoded words is dropped by a reader, so a run of
    non-ASCII words is encoded together with the spaces inside it.
    """
    if "\r" in text or "\n" in text:
        raise ValueError(f"{name} value with a line break: {text[:80]!r}")
    out = _Field(name)
    run: list[str] = []
    for word in text.split(" ") if text else ():
        if _plain(word):
            if run:
                out.encoded(" ".join(run))
                run = []
            out.word(word)
        else:
            run.append(word)
    if run:
        out.encoded(" ".join(run))
    return out.text()


def _ids(name: str, ids: str) -> str:
    """Message-ID, In-Reply-To, References: msg-ids, which no reader decodes or splits."""
    out = _Field(name)
    for token in ids.split(" "):
        if not (token and token.isascii() and token.isprintable()):
            raise ValueError(f"{name} value that is not a msg-id: {ids[:80]!r}")
        out.word(token)
    return out.text()


def _mailbox(out: _Field, name: str, spec: str, end: str = "") -> None:
    """One mailbox, whatever the name holds: atoms, one quoted string on one line, or
    encoded words (which a reader decodes into the name only, never into structure)."""
    if not name:
        out.word(spec + end)
        return
    if name.isascii() and name.isprintable():
        if not _SPECIALS.search(name) and all(map(_plain, name.split(" "))):
            for word in name.split(" "):
                out.word(word)
            out.word(f"<{spec}>{end}")
            return
        quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if len(out.line) + len(quoted) + len(spec) + len(end) + 4 <= _LINE:
            out.word(quoted)
            out.word(f"<{spec}>{end}")
            return
    out.encoded(name)
    out.word(f"<{spec}>{end}")


def _from(identity: Identity) -> str:
    spec = ascii_address(identity.address)
    if spec is None:
        raise ValueError(f"From address {identity.address!r} cannot be written in a header")
    out = _Field("From")
    _mailbox(out, inert(one_line(identity.name)), spec)
    return out.text()


def _recipients(value: str) -> str:
    """A notice's To: each mailbox of the configured value that can be written safely."""
    if "\r" in value or "\n" in value:
        raise ValueError(f"To value with a line break: {value[:80]!r}")
    mailboxes = [(name, ascii_address(address)) for name, address in getaddresses([value])]
    kept = [(name, spec) for name, spec in mailboxes if spec is not None]
    out = _Field("To")
    for index, (name, spec) in enumerate(kept):
        _mailbox(out, inert(one_line(name, 78)), spec, "," if index < len(kept) - 1 else "")
    if not kept:
        out.word(NO_ADDRESS)
    return out.text()


def _message(head: list[str], body: str) -> bytes:
    """Header block, then the body as one text/plain part (see :func:`_quoted_printable`)."""
    return "".join(head).encode("ascii") + _MIME_VERSION + _TEXT_PLAIN + _quoted_printable(body)


def _alternative(head: list[str], text: str, html: str) -> bytes:
    """Header block, then text/plain and text/html as multipart/alternative.

    The boundary starts with "=_", which quoted-printable never leaves in a line (it
    writes "=" as "=3D"), so no body can end a part early; it is derived from the
    content, so the same message is always the same bytes.
    """
    parts = (_TEXT_PLAIN + _quoted_printable(text), _TEXT_HTML + _quoted_printable(html))
    boundary = b"=_mailroute." + hashlib.sha256(b"".join(parts)).hexdigest()[:32].encode()
    delimiter = b"\r\n--" + boundary  # its leading CRLF belongs to it, not to the part
    return (
        "".join(head).encode("ascii")
        + _MIME_VERSION
        + b'Content-Type: multipart/alternative;\r\n boundary="' + boundary + b'"\r\n\r\n'
        + b"--" + boundary + b"\r\n" + parts[0]
        + delimiter + b"\r\n" + parts[1]
        + delimiter + b"--\r\n"
    )


def _quoted_printable(text: str) -> bytes:
    """The text as quoted-printable UTF-8 with CRLF line ends, ending with a line break.

    Lines are split as the stdlib splits them (CR, LF, CRLF).  b2a_qp encodes trailing
    blanks, "=", controls, 8-bit bytes and a lone "." line; lines starting with "." are
    the SMTP client's to dot-stuff (aiosmtplib does).  Its lines reach 78 characters
    when a trailing blank is encoded at the limit; those get one more soft break, so
    every line stays within QP's 76.
    """
    data = b"\n".join(text.encode("utf-8").splitlines()) + b"\n"
    encoded = _QP_OVERLONG.sub(rb"\1=\n\2", b2a_qp(data, istext=True))
    return encoded.replace(b"\n", b"\r\n")


def _values(facts: ReplyFacts, lang: str) -> dict[str, str]:
    return {
        "number": facts.number,
        "subject": one_line(facts.subject) or NO_SUBJECT[lang],
        "request_type": TYPE_LABELS[lang].get(facts.request_type, facts.request_type),
        "priority": PRIORITY_LABELS[lang].get(facts.priority, facts.priority),
        "missing_list": _missing_list(facts, lang),
        "first_response": _first_response(facts, lang),
        "first_response_line": _first_response_line(facts, lang),
        "handled_first": HANDLED_FIRST[lang] if facts.first_response_overdue else "",
        "hours": facts.hours,
        "confirm_block": _confirm_block(facts, lang),
    }


def _confirm_block(facts: ReplyFacts, lang: str) -> str:
    """``$confirm_block``: the guessed values, for the customer to check; empty if none."""
    if not facts.to_confirm:
        return ""
    lines = [
        f"  - {CONFIRM_FIELDS[lang].get(name, name)}: {inert(one_line(value, 150))}"
        for name, value in facts.to_confirm
    ]
    return "\n".join([CONFIRM_INTRO[lang], *lines, CONFIRM_OUTRO[lang]])


def _first_response(facts: ReplyFacts, lang: str) -> str:
    """``$first_response`` of older templates: the due time, never one already past."""
    if facts.first_response_overdue:
        return HANDLED_FIRST_WHEN[lang]
    return _when(facts.first_response_due, lang)


def _first_response_line(facts: ReplyFacts, lang: str) -> str:
    if facts.first_response_overdue:
        return HANDLED_FIRST[lang]
    if facts.first_response_due is None:
        return ""
    return FIRST_RESPONSE[lang].format(when=_when(facts.first_response_due, lang))


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
