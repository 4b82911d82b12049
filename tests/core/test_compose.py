"""Reply drafts: threading headers, loop-safety headers, language, no header injection."""

from __future__ import annotations

import re
from datetime import datetime
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, compat32
from email.utils import formataddr, getaddresses
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailroute.core.compose import (
    LANGUAGES,
    NO_ADDRESS,
    Identity,
    ReplyFacts,
    Templates,
    Thread,
    _render,
    _values,
    ascii_address,
    compose,
    compose_notice,
    display_name,
    inert,
    one_line,
    thread_ids,
)
from mailroute.packaged import load_templates

IDENTITY = Identity("servicedesk@example.com", "ServiceDesk")


def facts(**overrides: object) -> ReplyFacts:
    values: dict[str, object] = {
        "number": "SD-000042", "request_type": "incident", "priority": "critical",
        "language": "ru", "subject": "Не открывается база",
        "hours": "по рабочим дням с 10:00 до 18:00 (МСК)",
    }
    return ReplyFacts(**(values | overrides))  # type: ignore[arg-type]


def render(kind: str, reply_facts: ReplyFacts, thread: Thread | None = None,
           templates: Templates | None = None):
    thread = thread or Thread("client@customer.example", "Иван", "<orig@customer.example>",
                              ("<older@customer.example>",))
    draft = compose(kind, reply_facts, thread, IDENTITY, templates or load_templates(),
                    "<reply-1@example.com>")
    return draft, message_from_bytes(draft.raw, policy=policy.default)


def test_acknowledgement_headers() -> None:
    draft, message = render("acknowledgement", facts())
    assert message["Subject"].startswith("[SD-000042] ")
    assert message["In-Reply-To"] == "<orig@customer.example>"
    assert message["References"] == "<older@customer.example> <orig@customer.example>"
    assert message["Message-ID"] == "<reply-1@example.com>"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["X-Auto-Response-Suppress"] == "All"
    assert message["X-Mailroute-Kind"] == "acknowledgement"
    assert message["X-Mailroute-Request"] == "SD-000042"
    assert message["To"].addresses[0].addr_spec == "client@customer.example"
    assert "Date" not in message  # stamped when actually sent
    assert draft.recipient == "client@customer.example"


def test_acknowledgement_body_in_russian() -> None:
    due = datetime(2026, 11, 23, 11, 0, tzinfo=ZoneInfo("Europe/Moscow"))
    _, message = render("acknowledgement", facts(first_response_due=due))
    body = message.get_content()
    assert "SD-000042" in body
    assert "Инцидент" in body and "критический" in body
    assert "23.11.2026 11:00 (МСК)" in body
    assert "10:00 до 18:00" in body
    assert "ответьте на это письмо" in body


def test_an_overdue_first_response_is_not_promised() -> None:
    past = datetime(2026, 11, 21, 11, 0, tzinfo=ZoneInfo("Europe/Moscow"))
    for language, handled, promise in (
        ("ru", "обрабатывается в первую очередь", "Первый ответ"),
        ("en", "being handled first", "will first respond by"),
    ):
        overdue = facts(language=language, first_response_due=past, first_response_overdue=True)
        body = render("acknowledgement", overdue)[1].get_content()
        assert handled in body
        assert promise not in body and "21.11.2026" not in body and "2026-11-21" not in body


def test_an_older_template_naming_the_due_time_promises_no_past_time(tmp_path: Path) -> None:
    (tmp_path / "acknowledgement.en.txt").write_text(
        "Subject: [$number] Registered\n\nWe answer $first_response. $handled_first\n",
        encoding="utf-8")
    templates = load_templates(str(tmp_path))
    past = datetime(2026, 11, 21, 11, 0, tzinfo=ZoneInfo("Europe/Moscow"))
    on_time = render("acknowledgement", facts(language="en", first_response_due=past),
                     templates=templates)[1].get_content()
    assert on_time.strip() == "We answer 2026-11-21 11:00 (Moscow time)."
    late = render("acknowledgement", facts(language="en", first_response_due=past,
                                           first_response_overdue=True),
                  templates=templates)[1].get_content()
    assert late.strip() == "We answer as a priority. Your request is being handled first."


def test_clarification_names_each_missing_item_in_english() -> None:
    _, message = render("clarification", facts(
        language="en", missing=("organization", "registration_number"),
        unknown_registration="123"))
    body = message.get_content()
    assert "legal form" in body
    assert "registration number from your licence agreement" in body
    assert "123 is not in our registry" in body
    assert "subject for your message" not in body


def test_header_injection_is_flattened() -> None:
    evil = "Hi\r\nBcc: victim@example.org\r\n\r\nbody"
    _, message = render("acknowledgement", facts(subject=evil),
                        Thread("x@customer.example", "Eve\r\nBcc: a@b.c", None, ()))
    assert message["Bcc"] is None
    assert "\n" not in message["Subject"]
    assert "Bcc: victim@example.org" in message["Subject"]  # kept as harmless text
    assert message["In-Reply-To"] is None


def test_template_override_and_no_code_execution(tmp_path: Path) -> None:
    (tmp_path / "acknowledgement.ru.txt").write_text(
        "Subject: [$number] Принято\n\nНомер $number. ${__import__('os')} $unknown\n",
        encoding="utf-8",
    )
    _, message = render("acknowledgement", facts(), templates=load_templates(str(tmp_path)))
    assert message["Subject"] == "[SD-000042] Принято"
    body = message.get_content()
    assert "Номер SD-000042." in body
    assert "${__import__('os')}" in body and "$unknown" in body


def test_one_line() -> None:
    assert one_line("a\r\nb\tc\u2028d") == "a b c d"
    assert len(one_line("x" * 500)) == 150


# ------------------------------------------------ the byte writer against EmailMessage
# compose() writes the message as bytes; before, EmailMessage(policy=SMTP) did it at
# ~3 ms a reply.  The reference below is that implementation, kept only here.  What the
# stdlib parser reads back from the new bytes must be what the facts say (explicit
# expectations, every header and the body) and what it read from the old bytes, but
# for the old folder's own whitespace defects and the Content-Language it dropped.


def reference_compose(kind: str, reply_facts: ReplyFacts, thread: Thread, identity: Identity,
                      templates: Templates, message_id: str) -> bytes:
    lang = reply_facts.language if reply_facts.language in LANGUAGES else "ru"
    subject_line, body = _render(templates.texts[(kind, lang)], _values(reply_facts, lang))
    message = EmailMessage(policy=SMTP)
    message["From"] = formataddr((one_line(identity.name), identity.address))
    spec = ascii_address(thread.recipient)
    name = display_name(thread.recipient_name, spec or "")
    message["To"] = NO_ADDRESS if spec is None else Address(display_name=name, addr_spec=spec)
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
    message["X-Mailroute-Request"] = reply_facts.number
    message["Content-Language"] = lang  # set_content() clears Content-*: it never went out
    message.set_content(body, charset="utf-8", cte="quoted-printable")
    return message.as_bytes()


def reference_notice(kind: str, subject: str, body: str, identity: Identity, recipient: str,
                     message_id: str) -> bytes:
    message = EmailMessage(policy=SMTP)
    message["From"] = formataddr((one_line(identity.name), identity.address))
    message["To"] = recipient
    message["Subject"] = inert(one_line(subject, 250))
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    message["X-Mailroute-Kind"] = kind
    message.set_content(body, charset="utf-8", cte="quoted-printable")
    return message.as_bytes()


LONG_RU = "Не открывается база после обновления конфигурации на сервере, " * 5
SUBJECTS = (
    "Не открывается база", "The server crashes on start-up", None, "", "   ", LONG_RU,
    "word " * 60, "x" * 200, "ы" * 200, "Café au lait, s'il vous plaît", "a" * 77 + " ы",
    "=?utf-8?q?=0D=0ABcc:_x@y?=", "=?utf-8?b?DQpCY2M6IHhAeQ==?=", "a=?b ?= =?= ?=_",
    "Hi\r\nBcc: victim@example.org\r\n\r\nbody", "nul\x00here", "a\u2028b\u2029c\x85d\x7fe",
    "\ud800 lone surrogate", "🙂" * 60, "e\u0301" * 70, "日本語のテキスト" * 12,
    "\u202eevil\u202c \ufeffbom", "tab\there", '"quoted" \\back\\ <angle> (paren)',
    "$number ${hours} {0.__class__} %s", "<script>alert(1)</script>", "Ж" + " " * 10 + "ж",
    "mixed ascii and кириллица and ascii again " * 4, "?= _ = ?", "ends with space ы ",
)  # fmt: skip
NAMES = (
    "", "Иван", "Иван Петрович Сидоров-Длиннофамильный (ООО «Ромашка»)", "Лена <> Bcc: x@y",
    "a <victim@example.org>, d", 'Eve" <x@y>', "../../etc/passwd Не",
    "=?utf-8?q?=0D=0ABcc:_x@y?=", "Иван (Boss", "Ω <victim@example.org>, <", ",;:",
    "Nina Patel < tell me whether our licence covers a second database for testing?",
    "a <victim@example.org> and a name long enough to need folding, x@y; z@w",
    'back\\slash "quoted"', "O'Brien", "Ivan I. Petrov", "Eve\r\nBcc: a@b.c", "\x00", "a\u2028b",
    "Я" * 120, "x" * 100, "🙂 Smiley", "John Smith", "  spaced   out  ", "\ud800",
)  # fmt: skip
ADDRESSES = (
    "client@customer.example", "ivan@почта.рф", "иван@почта.рф",
    "=?utf-8?q?=0D=0ABcc:_x?=@client.ru", "a..b@client.ru", "", "no-at-sign", "a@b@c.ru",
    "user+tag@sub.example.co.uk", "l" * 64 + "@" + ".".join(["d" * 60] * 3) + ".example",
    "x@y.z", "Ivan@Client.RU",
)  # fmt: skip
REFERENCES = (
    (), ("<older@customer.example>",), tuple(f"<{i}.thread@customer.example>" for i in range(15)),
    ("<" + "r" * 250 + ">", "<ok@customer.example>", "<x=?utf-8?b?DQpCY2M6IHhAeQ==?=>", "bad id",
     "<a b@c>", "<orig@customer.example>"),
)  # fmt: skip
MESSAGE_IDS = (
    "<orig@customer.example>", None, "<x=?utf-8?b?DQpCY2M6IHhAeQ==?=>", "<" + "m" * 250 + ">",
    "not an id", "",
)  # fmt: skip
IDENTITIES = (
    IDENTITY, Identity("desk@example.com", "Служба поддержки «Ромашка»"),
    Identity("desk@example.com", "Service\r\nDesk"),
    Identity("desk@example.com", 'Desk "Main", Inc.'),
    Identity("desk@example.com", ""), Identity("desk@example.com", "Длинное имя службы " * 6),
    Identity("desk@example.com", "Help Desk of a Company With a Long Name " * 3),
)  # fmt: skip
BODY_LINES = (
    "Subject: [$number] $subject\n\n"
    ".\n.leading dot\n..two dots\nFrom here on\nFrom: not a header\ntrailing spaces   \n"
    "trailing tab\t\n \n\t\n" + "x" * 200 + "\n" + "Привет, мир! " * 20 + "\n=3D is not an escape\n"
    "a = b ?= c =?utf-8?q?x?=\nform\x0cfeed and nul \x00\nunicode\u2028separator\n"
    + "y" * 75 + " \n" + "z" * 76 + ".\n" + "w" * 75 + "=\nsubject: $subject\ntype $request_type"
    " / $priority\n$missing_list\n\n\n\n$first_response_line\n$hours\nend without newline"
)  # fmt: skip
EVERY_HEADER = (
    "From", "To", "Subject", "Message-ID", "In-Reply-To", "References", "Auto-Submitted",
    "X-Auto-Response-Suppress", "Precedence", "X-Mailroute-Kind", "X-Mailroute-Request",
    "Content-Language", "Content-Type", "Content-Transfer-Encoding", "MIME-Version",
)  # fmt: skip
_LONG_OK = re.compile(r"(?:[!-~]+:)? ?[!-~]+")  # one unbreakable token on the line


def reply_cases() -> list[tuple[str, ReplyFacts, Thread, Identity, Templates]]:
    builtin = load_templates()
    lines = Templates({key: BODY_LINES for key in builtin.texts})
    due = datetime(2026, 11, 23, 11, 0, tzinfo=ZoneInfo("Europe/Moscow"))
    cases = []
    index = 0
    for kind, lang in [*builtin.texts, ("acknowledgement", "de")]:
        for subject in SUBJECTS:
            index += 1
            reply_facts = facts(
                language=lang, subject=subject,
                request_type=("incident", "weird\rtype\n")[index % 2],
                priority=("low", "normal", "critical", "")[index % 4],
                missing=(("subject", "description", "organization", "registration_number"),
                         ("registration_number",), ())[index % 3],
                unknown_registration=("800 123 456", "\r\nBcc: x@y ы" * 5, None)[index % 3],
                first_response_due=(due, None)[index % 2],
                hours=("по рабочим дням с 10:00 до 18:00 (МСК)", "9-18 " * 40)[index % 2],
            )  # fmt: skip
            thread = Thread(
                ADDRESSES[index % len(ADDRESSES)], NAMES[index % len(NAMES)],
                MESSAGE_IDS[index % len(MESSAGE_IDS)], REFERENCES[index % len(REFERENCES)],
            )  # fmt: skip
            templates = lines if index % 5 == 0 else builtin
            identity = IDENTITIES[index % len(IDENTITIES)]
            cases.append((kind, reply_facts, thread, identity, templates))
    for offset, name in enumerate(NAMES):  # every name with every kind of address
        for step in range(0, len(ADDRESSES), 3):
            address = ADDRESSES[(offset + step) % len(ADDRESSES)]
            cases.append(("acknowledgement", facts(), Thread(address, name), IDENTITY, builtin))
    return cases


def check_wire_format(raw: bytes) -> None:
    """CRLF lines within 998 bytes; header lines within 78 unless one token cannot be
    broken; encoded words within 75; body lines within QP's 76."""
    assert raw.isascii() and b"\x00" not in raw
    assert raw.endswith(b"\r\n")
    lines = raw.decode("ascii").split("\r\n")
    assert all("\r" not in line and "\n" not in line for line in lines), "bare CR or LF"
    assert max(len(line) for line in lines) <= 998
    blank = lines.index("")
    head, body = lines[:blank], lines[blank + 1 : -1]
    for line in head:
        assert re.match(r"[A-Za-z-]+: |[A-Za-z-]+:$| \S", line), line  # a field or a fold
        assert line.strip(), "whitespace-only header line"
        assert len(line) <= 78 or _LONG_OK.fullmatch(line), line
        assert all(len(word) <= 75 for word in re.findall(r"=\?[^ ]*\?=", line)), line
    assert all(len(line) <= 76 for line in body)


def mailboxes(header: object) -> object:
    """Groups and mailboxes as policy.default reads them, names without their spaces:
    Python's parser before gh-128110 keeps the whitespace between two encoded words in
    a display name (a space where a word was cut, or a doubled one), so the exact names
    are checked by :func:`rfc2047_mailboxes`."""
    if header is None:
        return None
    groups = header.groups  # type: ignore[attr-defined]
    return [(g.display_name, [(a.display_name.replace(" ", ""), a.addr_spec) for a in g.addresses])
            for g in groups]  # fmt: skip


def rfc2047_mailboxes(raw: bytes, name: str) -> list[tuple[str, str]]:
    """The header's mailboxes as RFC 2047 reads them (whitespace between encoded words
    dropped): the legacy parser and decode_header, independent of policy.default."""
    value = str(message_from_bytes(raw, policy=compat32)[name]).replace("\r\n", "")
    return [(str(make_header(decode_header(n))), a) for n, a in getaddresses([value])]


def read_back(raw: bytes) -> dict[str, object]:
    """What a reader gets from the message: header names, every value, the body."""
    message = message_from_bytes(raw, policy=policy.default)
    assert message.get_content_type() == "text/plain" and not message.is_multipart()
    names = [name.lower() for name in message]
    assert len(names) == len(set(names)), names
    values: dict[str, object] = {"names": set(names), "body": message.get_content()}
    for name in EVERY_HEADER:
        header = message[name]
        values[name] = mailboxes(header) if name in ("From", "To") else header
    return values


def expected_reply(kind: str, reply_facts: ReplyFacts, thread: Thread, identity: Identity,
                   templates: Templates) -> dict[str, object]:
    """What the reply must say, from the facts, independent of any implementation."""
    lang = reply_facts.language if reply_facts.language in LANGUAGES else "ru"
    subject, body = _render(templates.texts[(kind, lang)], _values(reply_facts, lang))
    spec = ascii_address(thread.recipient)
    to = [(NO_ADDRESS[:-2], [])] if spec is None else [
        (None, [(display_name(thread.recipient_name, spec).replace(" ", ""), spec)])]
    in_reply_to, references = thread_ids(thread.message_id, thread.references)
    lines = re.sub(r"\r\n?", "\n", body)  # CR, LF and CRLF end lines; \x0c, U+2028 do not
    names = {n.lower() for n in EVERY_HEADER} - {"in-reply-to", "references"}
    return {
        "names": names | ({"in-reply-to"} if in_reply_to else set())
        | ({"references"} if references else set()),
        "body": (lines if lines.endswith("\n") else lines + "\n").replace("\n", "\r\n"),
        "From": [(None, [(inert(one_line(identity.name)).replace(" ", ""), identity.address)])],
        "To": to, "Subject": subject, "Message-ID": "<r-1@x.y>", "In-Reply-To": in_reply_to,
        "References": references or None, "Auto-Submitted": "auto-replied",
        "X-Auto-Response-Suppress": "All", "Precedence": "auto_reply", "X-Mailroute-Kind": kind,
        "X-Mailroute-Request": reply_facts.number, "Content-Language": lang,
        "Content-Type": 'text/plain; charset="utf-8"',
        "Content-Transfer-Encoding": "quoted-printable", "MIME-Version": "1.0",
    }  # fmt: skip


def test_writer_reads_back_as_the_email_message_did() -> None:
    """Every case: the new bytes read back exactly as the facts say, and as the
    EmailMessage bytes did, except where the stdlib's folder itself lost a space (it
    glued an ASCII word to the next encoded word, or left a leading space) and for
    Content-Language, which set_content() removed."""
    checked, stdlib_defects = 0, []
    for kind, reply_facts, thread, identity, templates in reply_cases():
        args = (kind, reply_facts, thread, identity, templates, "<r-1@x.y>")
        try:
            old = reference_compose(*args)
        except UnicodeEncodeError:  # a lone surrogate in the body: it could never be sent
            with pytest.raises(UnicodeEncodeError):
                compose(*args)
            continue
        draft = compose(*args)
        check_wire_format(draft.raw)
        expected = expected_reply(kind, reply_facts, thread, identity, templates)
        new = read_back(draft.raw)
        for name, value in expected.items():
            assert new[name] == value, (name, kind, reply_facts.subject, thread, identity)
        assert draft.subject == expected["Subject"]
        spec = ascii_address(thread.recipient)
        assert draft.recipient == (spec or thread.recipient)
        if spec is not None:
            assert rfc2047_mailboxes(draft.raw, "To") == [
                (display_name(thread.recipient_name, spec), spec)]
        assert rfc2047_mailboxes(draft.raw, "From") == [
            (inert(one_line(identity.name)), identity.address)]
        reference = read_back(old)
        reference["names"] = reference["names"] | {"content-language"}  # type: ignore[operator]
        reference["Content-Language"] = expected["Content-Language"]
        differ = sorted(name for name in expected if reference[name] != new[name])
        if differ:
            assert differ == ["Subject"], (differ, kind, reply_facts.subject, thread)
            assert squeeze(reference["Subject"]) == squeeze(new["Subject"])  # only a space
            stdlib_defects.append(reply_facts.subject)
        checked += 1
    assert checked > 250
    assert len(stdlib_defects) < checked / 10, stdlib_defects


def squeeze(value: object) -> str:
    return "".join(str(value).split())


def test_body_lines_survive_quoted_printable() -> None:
    """Lines starting with "." or "From ", trailing blanks, "=" and long lines: the QP
    body decodes to exactly the text, and a lone "." never reaches SMTP as is."""
    templates = Templates({("acknowledgement", "en"): BODY_LINES})
    draft = compose("acknowledgement", facts(language="en", subject="s"), Thread("a@b.cc"),
                    IDENTITY, templates, "<r@x.y>")
    body = draft.raw.split(b"\r\n\r\n", 1)[1]
    assert b"\r\n.\r\n" not in b"\r\n" + body
    assert all(not line.endswith((b" ", b"\t")) for line in body.split(b"\r\n"))
    text = message_from_bytes(draft.raw, policy=policy.default).get_content()
    assert text.startswith(".\r\n.leading dot\r\n..two dots\r\nFrom here on\r\n")
    assert "trailing spaces   \r\ntrailing tab\t\r\n \r\n\t\r\n" + "x" * 200 + "\r\n" in text
    assert "y" * 75 + " \r\n" + "z" * 76 + ".\r\n" + "w" * 75 + "=\r\n" in text
    assert "form\x0cfeed and nul \x00\r\n" in text


NOTICE_RECIPIENTS = (
    "boss@example.com", "a@b.example, c@d.example", "Big Boss <boss@x.com>",
    "Начальник смены <boss@example.com>", '"Boss, Big" <boss@example.com>',
)  # fmt: skip


def test_notice_reads_back_as_the_email_message_did() -> None:
    for index, subject in enumerate(SUBJECTS):
        identity = IDENTITIES[index % len(IDENTITIES)]
        recipient = NOTICE_RECIPIENTS[index % len(NOTICE_RECIPIENTS)]
        body = BODY_LINES if index % 2 else f"Request SD-000042 breached.\n{subject}\n"
        args = ("escalation", subject or "", body, identity, recipient, "<n-1@x.y>")
        try:
            old = reference_notice(*args)
        except UnicodeEncodeError:
            with pytest.raises(UnicodeEncodeError):
                compose_notice(*args)
            continue
        draft = compose_notice(*args)
        check_wire_format(draft.raw)
        new, reference = read_back(draft.raw), read_back(old)
        assert new["names"] == reference["names"]
        for name in ("body", *EVERY_HEADER):
            if name != "Subject":
                assert new[name] == reference[name], name
        assert new["Subject"] == draft.subject == inert(one_line(subject, 250))
        assert squeeze(reference["Subject"]) == squeeze(new["Subject"])
        assert rfc2047_mailboxes(draft.raw, "From") == [
            (inert(one_line(identity.name)), identity.address)]
        assert draft.recipient == recipient and draft.sender == identity.address


def test_notice_with_html_is_multipart_alternative_read_back_exactly() -> None:
    """The report's shape: text/plain then text/html, each part decoding to exactly its
    text (line ends aside), however hostile the text; no line of either part, not even
    one spelling our boundary, ends a part early; the same input gives the same bytes."""
    boundary_lookalike = "--=_mailroute.0123456789abcdef0123456789abcdef\n--\n"
    text = BODY_LINES + "\n" + boundary_lookalike
    page = "<!DOCTYPE html>\n<p>" + "a &amp; b " * 300 + "</p>\n" + boundary_lookalike
    args = ("report", "Отчёт – неделя", text, IDENTITY, "boss@example.com", "<n-1@x.y>")
    draft = compose_notice(*args, html=page, language="en")
    check_wire_format(draft.raw)
    message = message_from_bytes(draft.raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert message.get_content_type() == "multipart/alternative"
    assert not message.defects
    plain, html = message.iter_parts()
    assert (plain.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert plain.get_content().replace("\r\n", "\n") == text  # both end with a line break
    assert html.get_content().replace("\r\n", "\n") == page
    assert message["Content-Language"] == "en"
    assert message["Subject"] == draft.subject == "Отчёт – неделя"
    assert compose_notice(*args, html=page, language="en") == draft
    assert compose_notice(*args).raw.count(b"Content-Type:") == 1  # text only, as before


@pytest.mark.parametrize(
    ("recipient", "expected"),
    [("boss@почта.рф", [("", "boss@xn--80a1acny.xn--p1ai")]), ("босс@почта.рф", []), ("", []),
     ("not an address", []),
     ('"Лена <> Bcc: x@y" <boss@example.com>', [("Лена <> Bcc: x@y", "boss@example.com")])],
)  # fmt: skip
def test_notice_recipient_the_header_cannot_carry(recipient: str, expected: list[object]) -> None:
    """A configured address the header cannot carry is left to the envelope (the stdlib
    wrote encoded words into the address, or an empty To)."""
    draft = compose_notice("escalation", "s", "b\n", IDENTITY, recipient, "<n@x.y>")
    check_wire_format(draft.raw)
    to = message_from_bytes(draft.raw, policy=policy.default)["To"]
    assert [(a.display_name, a.addr_spec) for a in to.addresses] == expected
    assert expected or str(to) == NO_ADDRESS
    assert draft.recipient == recipient
    with pytest.raises(ValueError, match="line break"):
        compose_notice("escalation", "s", "b\n", IDENTITY, "a@b.cc\r\nBcc: x@y", "<n@x.y>")


def test_from_name_is_inert() -> None:
    """The desk's own name gets the customer's treatment: an "=?" in it stays text
    (EmailMessage decoded it, so a configured name could carry a line break)."""
    identity = Identity("desk@example.com", "=?utf-8?q?=0D=0ABcc:_x@y?= Desk")
    draft = compose("acknowledgement", facts(), Thread("a@b.cc"), identity, load_templates(),
                    "<r@x.y>")
    check_wire_format(draft.raw)
    sender = message_from_bytes(draft.raw, policy=policy.default)["From"].addresses
    assert [(a.display_name, a.addr_spec) for a in sender] == [
        ("= ?utf-8?q?=0D=0ABcc:_x@y?= Desk", "desk@example.com")]
    with pytest.raises(ValueError, match="From address"):
        compose("acknowledgement", facts(), Thread("a@b.cc"), Identity("desk <x>", "D"),
                load_templates(), "<r@x.y>")


def test_internal_values_cannot_break_the_header() -> None:
    """The kind and the number are ours, yet no control character reaches the wire:
    a line break is refused (as EmailMessage refused it), anything else encoded."""
    draft = compose("acknowledgement", facts(number="SD-1\x00\x7f\x1b"), Thread("a@b.cc"),
                    IDENTITY, load_templates(), "<r@x.y>")
    check_wire_format(draft.raw)
    assert read_back(draft.raw)["X-Mailroute-Request"] == "SD-1\x00\x7f\x1b"
    for number in ("SD-1\r\nBcc: x@y", "SD-1\nBcc: x@y", "SD-1\rBcc: x@y"):
        with pytest.raises(ValueError, match="line break"):
            compose("acknowledgement", facts(number=number), Thread("a@b.cc"), IDENTITY,
                    load_templates(), "<r@x.y>")
    with pytest.raises(ValueError, match="msg-id"):
        compose("acknowledgement", facts(), Thread("a@b.cc"), IDENTITY, load_templates(),
                "<r@x.y>\r\nBcc: x@y")


@pytest.mark.parametrize("kind", ["acknowledgement", "clarification"])
@pytest.mark.parametrize(("language", "intro", "label"), [
    ("ru", "проверьте, верно ли мы прочли", "организация: ООО «Грин-Парк»"),
    ("en", "check that we read your message right", "organization: ООО «Грин-Парк»"),
])
def test_a_value_read_with_doubt_is_shown_for_the_customer_to_confirm(
    kind: str, language: str, intro: str, label: str
) -> None:
    """A guess is not used silently, nor asked for again: the reply shows what was read."""
    doubtful = facts(language=language, missing=("registration_number",),
                     to_confirm=(("organization", "ООО «Грин-Парк»"),))
    body = render(kind, doubtful)[1].get_content()
    assert intro in body and label in body
    sure = render(kind, facts(language=language, missing=("registration_number",)))[1]
    assert intro not in sure.get_content() and "$confirm_block" not in sure.get_content()
