"""Nothing a letter says gets into our reply's headers, our database's columns or our disk.

Hostile values in the Subject, the From display name, Message-ID, In-Reply-To and
References of an incoming letter: raw CR/LF, RFC 2047 words that decode to CR/LF
(``=?utf-8?q?=0D=0ABcc:_x@y?=``), words encoded twice, NUL, U+2028/2029/0085.
The unit tests take the real path of bytes → parse → compose; the end-to-end tests
run ``mailroute run --once`` on a Maildir with a real SMTP server (aiosmtpd) and check
the bytes it received, the rows in ``attachments`` and ``blobs``, and that nothing
was written to the filesystem.

Threading: our Message-IDs are the only proof of belonging to a thread, so they
must not be guessable; a stranger's ``[SD-…]`` token is covered by
tests/pipeline/test_conversation.py (test_token_from_a_stranger_opens_a_new_request).
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import re
import subprocess
import sys
import time
from email import message_from_bytes, policy
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from support.configs import write_config
from support.smtp import SmtpSink
from test_fuzz import OUR_HEADERS, Core, check_reply, check_storable

from mailroute.core.compose import (
    NO_ADDRESS,
    Identity,
    ReplyFacts,
    Thread,
    compose,
)
from mailroute.core.letter import MAX_IDS, ParsedLetter, ParseLimits, parse
from mailroute.core.verdict import analyze
from mailroute.packaged import load_templates
from mailroute.pipeline import decide
from mailroute.store import Store
from mailroute.store import repository as repo
from mailroute.store.models import AttachmentRecord, Blob, Letter, OutboxItem, Request

MAILROUTE = [sys.executable, "-m", "mailroute"]
DESK = "servicedesk@example.com"
IDENTITY = Identity(DESK, "ServiceDesk")
BCC = re.compile(rb"^(bcc|cc|x-injected):", re.IGNORECASE | re.MULTILINE)

# Values that try to end a header line and start another.
HOSTILE = {
    "crlf": b"Hi\r\nBcc: victim@example.org",
    "lf": b"Hi\nBcc: victim@example.org",
    "cr": b"Hi\rBcc: victim@example.org",
    "q-word": b"=?utf-8?q?=0D=0ABcc:_victim@example.org?=",
    "b-word": b"=?utf-8?b?" + base64.b64encode(b"Hi\r\nBcc: victim@example.org") + b"?=",
    "twice": b"=?utf-8?b?" + base64.b64encode(b"=?utf-8?q?=0D=0ABcc:_victim@example.org?=") + b"?=",
    "nul": b"Hi\x00Bcc: victim@example.org",
    "u2028": "Hi\u2028Bcc: victim@example.org".encode(),
    "u2029": "Hi\u2029Bcc: victim@example.org".encode(),
    "nel": "Hi\x85Bcc: victim@example.org".encode(),
    "blank-line": b"Hi\r\n\r\n<html><body>owned</body></html>",
    "x-header": b"=?utf-8?q?x=0D=0AX-Injected:_1=0D=0A=0D=0Abody?=",
}


BODY = b"The server does not start since the update.\r\n"


def letter(*headers: bytes, body: bytes = BODY) -> bytes:
    """An incoming letter; the defaults are replaced by any header given."""
    given = {h.split(b":", 1)[0].lower() for h in headers}
    defaults = [
        b"From: Ivan Petrov <ivan@client.ru>",
        b"To: ServiceDesk <servicedesk@example.com>",
        b"Subject: Server down",
        b"Message-ID: <orig-1@client.ru>",
        b"Date: Mon, 16 Nov 2026 12:00:00 +0300",
    ]
    lines = [d for d in defaults if d.split(b":", 1)[0].lower() not in given]
    return b"\r\n".join([*lines, *headers, b"", b""]) + body


@pytest.fixture(scope="module")
def core() -> Core:
    return Core()


def reply_to(core: Core, raw: bytes) -> bytes:
    """The reply the real pipeline composes for this incoming letter, checked."""
    reply = maybe_reply(core, raw)
    assert reply is not None
    return reply


def maybe_reply(core: Core, raw: bytes) -> bytes | None:
    """The reply, or None when the letter names no address to answer (nothing to inject)."""
    parsed = parse(raw)
    analysis = analyze(parsed, core.context)
    check_storable(parsed, analysis)
    assert analysis.action == "ticket"
    draft = core.reply(parsed, analysis)
    if draft is None:
        return None
    check_reply(draft, parsed)
    return draft.raw


def head_of(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


# ------------------------------------------------------------------- header values


@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.parametrize(
    "field",
    ["Subject: {}", "From: {} <ivan@client.ru>", 'From: "{}" <ivan@client.ru>',
     "Message-ID: <{}@client.ru>", "In-Reply-To: <{}@client.ru>",
     "References: <a@client.ru> <{}@client.ru>"],
)  # fmt: skip
def test_hostile_values_never_become_headers(core: Core, field: str, name: str) -> None:
    raw = letter(field.encode().replace(b"{}", HOSTILE[name]))
    reply = maybe_reply(core, raw)
    if reply is None:  # a raw line break cut the From header short: no address, no reply
        assert field.startswith("From") and name in ("crlf", "lf", "cr", "blank-line")
        return
    head = head_of(reply)
    assert not BCC.search(head), head.decode()
    assert b"victim@example.org>" not in head.replace(b"\r\n ", b" ").split(b"\r\nTo:")[0]
    assert b"<html>" not in reply and b"owned" not in head
    message = message_from_bytes(reply, policy=policy.default)
    assert set(message.keys()) <= {k.title() for k in OUR_HEADERS} | {"MIME-Version", "Message-ID"}


def test_subject_encoded_twice_stays_visible_text(core: Core) -> None:
    """Found by fuzzing: our decoding left "=?utf-8?q?=0D=0ABcc...?=", the stdlib's
    header class decoded it again and wrote a Bcc line into the reply."""
    reply = reply_to(core, letter(b"Subject: " + HOSTILE["twice"]))
    subject = message_from_bytes(reply, policy=policy.default)["Subject"]
    assert "\n" not in subject and "\r" not in subject
    assert "Bcc:_victim@example.org" in subject  # shown, as the customer typed it, inert


def test_message_id_carrying_an_encoded_word_is_not_threaded(core: Core) -> None:
    """Found by fuzzing: Message-ID <x=?utf-8?b?DQpCY2M6IHhAeQ==?=> became In-Reply-To
    and References lines ending in a Bcc header.  Such an id is left out."""
    raw = letter(b"Message-ID: <x=?utf-8?b?DQpCY2M6IHhAeQ==?=>",
                 b"References: <ok-1@client.ru> <y=?utf-8?q?=0D=0ABcc:_x@y?=@z>")
    message = message_from_bytes(reply_to(core, raw), policy=policy.default)
    assert message["In-Reply-To"] is None
    assert str(message["References"]) == "<ok-1@client.ru>"


@pytest.mark.parametrize(
    "name",
    ["Лена <> Bcc: x@y", "a <victim@example.org>, d", 'Eve" <x@y>', "../../etc/passwd Не",
     "=?utf-8?q?=0D=0ABcc:_x@y?=", "Иван (Boss", "Ω <victim@example.org>, <", ",;:",
     "Nina Patel < tell me whether our licence covers a second database for testing?",
     "a <victim@example.org> and a name long enough to need folding, x@y; z@w"],
)  # fmt: skip
def test_display_name_stays_one_mailbox(name: str) -> None:
    """Found by fuzzing: formataddr() strings were re-parsed by the stdlib and the ASCII
    words of a non-ASCII name written unquoted: "Лена <> Bcc: x@y" became more mailboxes
    and "../../etc/passwd Не" a To header the stdlib cannot read back.  Found by atheris:
    a long ASCII name with specials lost its quotes when the stdlib folded the line
    (tests/hostile/unclosed-angle-long-name.eml)."""
    draft = compose("acknowledgement", facts(), Thread("ivan@client.ru", name), IDENTITY,
                    load_templates(), "<r-1@example.com>")
    to = message_from_bytes(draft.raw, policy=policy.default)["To"]
    assert [(a.addr_spec) for a in to.addresses] == ["ivan@client.ru"]
    assert len(to.addresses) == 1


@pytest.mark.parametrize(
    ("address", "header", "envelope"),
    [
        ("ivan@почта.рф", "ivan@xn--80a1acny.xn--p1ai", "ivan@xn--80a1acny.xn--p1ai"),
        ("иван@почта.рф", None, "иван@почта.рф"),  # EAI: only the envelope can carry it
        ("=?utf-8?q?=0D=0ABcc:_x?=@client.ru", None, "=?utf-8?q?=0D=0ABcc:_x?=@client.ru"),
        ("a..b@client.ru", None, "a..b@client.ru"),
    ],
)
def test_recipient_the_header_cannot_carry(address: str, header: str | None, envelope: str) -> None:
    """Found by fuzzing: a non-ASCII address made compose raise (letter quarantined)."""
    draft = compose("acknowledgement", facts(), Thread(address, "Иван"), IDENTITY,
                    load_templates(), "<r-1@example.com>")
    message = message_from_bytes(draft.raw, policy=policy.default)
    if header is None:
        assert str(message["To"]) == NO_ADDRESS
    else:
        assert [a.addr_spec for a in message["To"].addresses] == [header]
    assert draft.recipient == envelope


def test_sender_with_specials_is_no_address(core: Core) -> None:
    """"<postmaster,x@evil.example>" would reach aiosmtplib, whose address parser cuts it
    to "postmaster": our reply would go to a mailbox of our own relay.  Now the envelope
    is an address that parser leaves as it is, or there is none."""
    for value in (b"Eve <postmaster,x@evil.example>", b"Eve <postmaster>x@evil.example>",
                  b'Eve <post"master@evil.example>', b"Eve <postmaster;x@evil.example>"):
        parsed = parse(letter(b"From: " + value))
        email = parsed.sender.email if parsed.sender else ""
        assert email in ("", "x@evil.example", "master@evil.example"), email
        assert not email or parseaddr(email)[1] == email  # what aiosmtplib puts in RCPT TO


# ----------------------------------------------------------------- references, ids


def test_hostile_references_do_not_bloat_replies(core: Core) -> None:
    """A megabyte of distinct ids: parsed linearly, the newest 100 kept, 10 in the reply."""
    ids = b" ".join(b"<%d.thread@client.ru>" % i for i in range(60_000))
    assert len(ids) > 1_000_000 - 100_000
    raw = letter(b"References: " + ids + b" <" + b"L" * 400 + b"@client.ru>")
    started = time.thread_time()
    parsed = parse(raw, limits_with_big_headers())
    assert time.thread_time() - started < 1.0  # was 35 s: a list scanned once per id
    assert len(parsed.references) == MAX_IDS
    assert parsed.references[-2] == "<59999.thread@client.ru>"
    assert any("kept the last 100" in d for d in parsed.defects)
    reply = reply_to_parsed(core, parsed)
    references = str(message_from_bytes(reply, policy=policy.default)["References"]).split()
    assert len(references) == 11
    assert references[-2:] == ["<59999.thread@client.ru>", "<orig-1@client.ru>"]  # long id left out
    assert len(head_of(reply)) < 2000


def test_ids_the_database_cannot_hold_are_dropped(core: Core) -> None:
    """NUL (PostgreSQL text refuses it) and ids longer than the 998-wide column."""
    parsed = parse(letter(b"Message-ID: <a\x00b@client.ru>",
                          b"In-Reply-To: <" + b"m" * 2000 + b"@client.ru>",
                          b"References: <r\x01\x00s@client.ru>"))
    assert parsed.message_id == "<ab@client.ru>"
    assert parsed.in_reply_to == ()
    assert parsed.references == ("<rs@client.ru>",)
    check_storable(parsed, analyze(parsed, core.context))


def test_values_bound_for_columns_fit_them(core: Core) -> None:
    """A NUL in the sender, a 300-byte or NUL-carrying Content-Type: each left a letter
    pending forever on PostgreSQL (DataError, retried as a database outage)."""
    raw = (
        b"From: Eve <ev\x00e@client.ru>\r\nSubject: x\r\nMessage-ID: <cols@client.ru>\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
        b"The server does not start.\r\n--b\r\nContent-Type: application/" + b"x" * 300
        + b"\r\nContent-Disposition: attachment; filename=a.bin\r\n\r\nzz\r\n--b\r\n"
        b"Content-Type: application/x\x00y\r\nContent-Disposition: attachment; filename=b.bin"
        b"\r\n\r\nzz\r\n--b--\r\n"
    )  # fmt: skip
    parsed = parse(raw)
    assert parsed.sender is not None and parsed.sender.email == ""
    assert [a.content_type for a in parsed.attachments] == ["text/plain", "text/plain"]
    assert any("malformed Content-Type" in d for d in parsed.defects)
    check_storable(parsed, analyze(parsed, core.context))


# ------------------------------------------------------------- templates, plain text


@pytest.mark.parametrize(
    "subject",
    ["$number $subject ${hours}", "${__import__('os').system('touch /tmp/owned')}",
     "{0.__class__.__mro__}", "%(number)s %s", "{{7*7}} <%= 7*7 %>"],
)  # fmt: skip
def test_template_values_are_text_not_code(core: Core, tmp_path: Path, subject: str) -> None:
    """string.Template substitutes the template once; a value is never substituted or
    formatted again, so whatever the customer wrote comes back as written, in the
    subject and (with a template that shows it) in the body."""
    reply = reply_to(core, letter(b"Subject: " + subject.encode()))
    message = message_from_bytes(reply, policy=policy.default)
    assert subject in message["Subject"]
    assert "49" not in message["Subject"]
    (tmp_path / "acknowledgement.en.txt").write_text(
        "Subject: [$number] $subject\n\nYou wrote: $subject ($number)\n", encoding="utf-8")
    draft = compose("acknowledgement", facts(language="en", subject=subject),
                    Thread("ivan@client.ru"), IDENTITY, load_templates(str(tmp_path)), "<r@x>")
    body = message_from_bytes(draft.raw, policy=policy.default).get_content()
    assert f"You wrote: {subject} (SD-000042)" in body
    assert not Path("/tmp/owned").exists()


def test_replies_are_plain_text_never_html(core: Core) -> None:
    """Every kind and language: one text/plain part; markup from a letter stays text."""
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    templates = load_templates()
    for kind in ("acknowledgement", "clarification"):
        for lang in ("ru", "en"):
            draft = compose(kind, facts(language=lang, subject=evil, missing=("organization",)),
                            Thread("ivan@client.ru", evil), IDENTITY, templates, "<r@example.com>")
            message = message_from_bytes(draft.raw, policy=policy.default)
            assert message.get_content_type() == "text/plain"
            assert not message.is_multipart()
            assert b"text/html" not in draft.raw.lower()
            assert evil in message["Subject"]
            assert str(message["To"]).startswith(f'"{evil}"')  # quoted, one mailbox


def facts(**overrides: object) -> ReplyFacts:
    values: dict[str, object] = {
        "number": "SD-000042", "request_type": "incident", "priority": "normal",
        "language": "ru", "subject": "Не открывается база",
    }  # fmt: skip
    return ReplyFacts(**(values | overrides))  # type: ignore[arg-type]


def limits_with_big_headers() -> ParseLimits:
    return ParseLimits(max_header_bytes=4 * 1024 * 1024)


def reply_to_parsed(core: Core, parsed: ParsedLetter) -> bytes:
    analysis = analyze(parsed, core.context)
    draft = core.reply(parsed, analysis)
    assert draft is not None
    check_reply(draft, parsed)
    return draft.raw


# ------------------------------------------------------------------- end to end

HOSTILE_NAMES = {
    "traversal": b'filename="../../etc/passwd"',
    "windows": b'filename="C:\\\\x\\\\evil.exe"',
    "device": b'filename="con"',
    "device-ext": b'filename="CON.txt"',
    "nul": b'filename="a\x00b.txt"',
    "crlf": b'filename="=?utf-8?b?' + base64.b64encode(b"a\r\nb.txt") + b'?="',
    "long": b'filename="' + b"x" * 10_000 + b'.txt"',
    "rfc2231": b"filename*=utf-8''%2E%2E%2F%2E%2E%2Fetc%2Fshadow",
    "rfc2231-split": b"filename*0*=utf-8''%2E%2E%2F; filename*1=\"..%2Fboot.ini\"",
    "dotfile": b'filename=".bashrc"',
    "rtl": "filename=\"\u202etxt.exe\"".encode(),
}


def attachment_letter(number: int) -> bytes:
    parts = [b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe server does not start, "
             b"the logs are attached.\r\n"]
    for index, (label, param) in enumerate(HOSTILE_NAMES.items()):
        parts.append(b"--b\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Disposition: attachment; " + param + b"\r\n"
                     b"Content-Transfer-Encoding: base64\r\n\r\n"
                     + base64.encodebytes(f"{label} {index}".encode()) + b"\r\n")
    return letter(b"Message-ID: <files-%d@client.ru>" % number,
                  b"Content-Type: multipart/mixed; boundary=b",
                  body=b"".join(parts) + b"--b--\r\n")


def maildir(root: Path) -> Path:
    box = root / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    return box


def deliver(box: Path, raws: list[bytes]) -> None:
    """Files in new/, in this order (the Maildir source sorts by mtime)."""
    base = time.time() - 1000
    for order, raw in enumerate(raws):
        path = box / "new" / f"{time.time_ns()}.hostile{order}.host"  # a fresh uid each
        path.write_bytes(raw)
        os.utime(path, (base + order, base + order))


def run_once(config: Path, cwd: Path, env: dict[str, str] | None = None) -> None:
    for args in (["db", "upgrade"], ["run", "--once"]):
        result = subprocess.run(
            [*MAILROUTE, "--config", str(config), *args], capture_output=True, text=True,
            timeout=300, check=False, cwd=cwd, env={**os.environ, **(env or {})},
        )
        assert result.returncode == 0, result.stderr[-3000:]


def rows(url: str, model: type) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(select(model)))
    finally:
        engine.dispose()


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_hostile_letters_end_to_end(
    tmp_path: Path, smtp_sink: SmtpSink, database_url: str
) -> None:
    """Header injections and hostile attachment names through the daemon: what the SMTP
    server receives, what the attachments table holds, and no file written anywhere."""
    box = maildir(tmp_path)  # one sender each: the reply guard caps replies per sender
    injections = [
        letter(b"Subject: " + HOSTILE[name], b"Message-ID: <subj-%s@client.ru>" % name.encode(),
               b"From: " + HOSTILE[name].replace(b"\x00", b"")
               + b" <u%d@client.ru>" % number,
               b"References: <a@client.ru> <x" + HOSTILE["q-word"] + b"@client.ru>")
        for number, name in enumerate(HOSTILE)
    ]
    injections.append(letter(b"Message-ID: <x=?utf-8?b?DQpCY2M6IHhAeQ==?=>",
                             b"From: Ivan <u100@client.ru>"))
    injections.append(letter(b"Message-ID: <refs@client.ru>", b"From: Ivan <u101@client.ru>",
                             b"References: " + b" ".join(b"<%d@t>" % i for i in range(20_000))))
    raws = [*injections, attachment_letter(1)]
    deliver(box, raws)
    workdir, scratch = tmp_path / "cwd", tmp_path / "scratch"
    workdir.mkdir()
    scratch.mkdir()
    config = write_config(tmp_path / "config.toml", account=None, sink=smtp_sink,
                          database_url=database_url, maildir=box)
    before = files_under(tmp_path) - {"config.toml"}

    run_once(config, workdir, {"TMPDIR": str(scratch), "HOME": str(scratch)})

    letters = rows(database_url, Letter)
    assert sorted(x.state for x in letters) == ["processed"] * len(raws)
    # a raw line break inside From leaves no address: such a letter is registered, unanswered
    answerable = [raw for raw in raws if (p := parse(raw)).sender and p.sender.email]
    assert len(answerable) == len(raws) - 4
    received = smtp_sink.wait_for(len(answerable))
    time.sleep(0.5)
    assert len(smtp_sink.received()) == len(answerable)
    assert len({mail.rcpt_tos for mail in received}) == len(answerable)
    for mail in received:
        head = head_of(mail.content)
        names = {line.split(b":", 1)[0].decode().lower()
                 for line in head.split(b"\r\n") if line[:1] not in (b" ", b"\t")}
        assert names <= OUR_HEADERS | {"date"}, names
        assert not BCC.search(head)
        (recipient,) = mail.rcpt_tos
        assert re.fullmatch(r"u\d+@client\.ru|ivan@client\.ru", recipient), recipient
        assert [a.addr_spec for a in mail.message["To"].addresses] == [recipient]
        assert mail.message.get_content_type() == "text/plain"
        assert b"\x00" not in mail.content
        assert max(len(line) for line in mail.content.split(b"\r\n")) <= 998
        assert len(str(mail.message.get("References", "")).split()) <= 11

    stored = rows(database_url, AttachmentRecord)
    assert len(stored) == len(HOSTILE_NAMES)
    for row in stored:
        name = row.filename
        assert name and len(name) <= 150
        assert not set(name) & set("/\\\x00\r\n:<>|?*\"")
        assert not name.startswith(".") and ".." not in name.split(".")[0]
        assert name.split(".")[0].lower() not in {"con", "prn", "aux", "nul"}
        assert "\u202e" not in name
    names = sorted(row.filename.replace("x" * 146, "x…") for row in stored)
    assert names == [
        "%2Fboot.ini",  # an unencoded RFC 2231 section is literal: "%2F" is no slash
        "_CON.txt", "_con", "ab.txt", "ab.txt", "bashrc", "evil.exe", "passwd", "shadow",
        "txt.exe",  # the right-to-left override that disguised it as .txt is gone
        "x….txt",
    ]  # fmt: skip
    store = Store(database_url)
    try:  # every file is read back from its letter's bytes, under its own hash
        with store.reading() as session:
            for row in stored:
                record = session.get(AttachmentRecord, row.id)
                assert record is not None
                content = repo.attachment_content(session, record, ParseLimits())
                assert content is not None and hashlib.sha256(content).hexdigest() == row.sha256
    finally:
        store.dispose()
    assert rows(database_url, Blob) == []

    assert files_under(workdir) == set() and files_under(scratch) == set()
    after = files_under(tmp_path) - {"config.toml"}
    moved = {f for f in after - before if f.startswith("Maildir/.Processed/cur/")}
    ours = {f for f in after - before if f.startswith("mailroute.db")}  # SQLite and its lock
    assert after - before - moved - ours == {"Maildir/.Processed/maildirfolder"}
    assert len(moved) == len(raws) and not files_under(box / "new")


def test_nul_in_message_id_does_not_block_the_mailbox(
    request: pytest.FixtureRequest, tmp_path: Path, database_url: str
) -> None:
    """The letter is saved and filed and the next one processed, on either database."""
    box = maildir(tmp_path)
    deliver(box, [letter(b"Message-ID: <a\x00b@client.ru>"),
                  letter(b"Message-ID: <next@client.ru>", b"From: Olga <olga@client.ru>")])
    config = write_config(tmp_path / "config.toml", account=None, sink=None,
                          database_url=database_url, maildir=box,
                          extra={"replies": {"enabled": False}})
    run_once(config, tmp_path)
    states = sorted((x.message_id, x.state) for x in rows(database_url, Letter))
    assert states == [("<ab@client.ru>", "processed"), ("<next@client.ru>", "processed")]


# ------------------------------------------------------------------------ threading


def test_our_message_ids_are_not_derived_from_the_request_number() -> None:
    """Knowing SD-000001 (it is in every subject) does not give the Message-ID: 128
    random bits from the operating system stand between them, new for every reply."""
    from mailroute.core.compose import new_message_id

    assert decide.new_message_id is new_message_id  # decide.py's own ids come from here
    ids = [new_message_id("SD-000001", "example.com") for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    randoms = {int(i[1:].split(".")[0], 16) for i in ids}
    assert len(randoms) == len(ids)
    assert max(randoms).bit_length() >= 124
    assert {i.split(".", 1)[1] for i in ids} == {"SD-000001@example.com>"}


def test_a_guessed_reference_does_not_attach(
    tmp_path: Path, smtp_sink: SmtpSink, sqlite_url: str
) -> None:
    """A stranger who knows a request's number, our domain, the time and even our pid,
    but not the random part of the reply's Message-ID, opens a request of his own."""
    box = maildir(tmp_path)
    config = write_config(tmp_path / "config.toml", account=None, sink=smtp_sink,
                          database_url=sqlite_url, maildir=box)
    deliver(box, [letter()])
    run_once(config, tmp_path)
    (ack,) = smtp_sink.wait_for(1)
    ours = ack.message["Message-ID"]
    assert ours.endswith(".SD-000001@example.com>")
    guesses = " ".join(  # the number and domain right, the random part guessed
        f"<{random.getrandbits(128):032x}.SD-000001@example.com>" for _ in range(100)
    )
    stranger = letter(b"From: Mallory <mallory@evil.example>",
                      b"Message-ID: <m-1@evil.example>", b"Subject: Re: [SD-000001] details",
                      b"In-Reply-To: " + guesses.split()[0].encode(),
                      b"References: " + guesses.encode())
    deliver(box, [stranger])
    run_once(config, tmp_path)
    requests = {r.number: r for r in rows(sqlite_url, Request)}
    assert sorted(requests) == ["SD-000001", "SD-000002"]
    assert requests["SD-000002"].requester == "mallory@evil.example"
    assert ours not in guesses


def _untemper(value: int) -> int:
    """Invert MT19937's output tempering: the generator word behind one 32-bit output."""
    value ^= value >> 18
    value ^= (value << 15) & 0xEFC60000
    result = value
    for _ in range(5):
        result = value ^ ((result << 7) & 0x9D2C5680)
    value = result & 0xFFFFFFFF
    result = value
    for _ in range(3):
        result = value ^ (result >> 11)
    return result & 0xFFFFFFFF


def test_message_ids_are_not_predictable_from_earlier_replies() -> None:
    """What an attacker who wrote 156 letters and kept our acknowledgements can do.

    Were the ids drawn from the `random` module (as `email.utils.make_msgid`'s are),
    624 of its 32-bit outputs would rebuild its state and predict the next id.
    """
    from mailroute.core.compose import new_message_id

    seen = [new_message_id("SD-000100", "example.com") for _ in range(156)]
    words: list[int] = []
    for msgid in seen:
        bits = int(msgid[1:].split(".")[0], 16)
        words += [(bits >> (32 * i)) & 0xFFFFFFFF for i in range(4)]
    clone = random.Random()
    clone.setstate((3, (*(_untemper(w) for w in words[:624]), 624), None))
    predicted = clone.getrandbits(128)
    victim = new_message_id("SD-000101", "example.com")
    assert int(victim[1:].split(".")[0], 16) != predicted
    assert len({*seen, victim}) == 157


def test_outbox_message_ids_differ_between_installations(
    tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    """Two fresh databases both call their first request SD-000001; their replies'
    Message-IDs still have nothing in common but the number and the domain."""
    found = []
    for run in ("a", "b"):
        root = tmp_path / run
        box = maildir(root)
        config = write_config(root / "config.toml", account=None, sink=smtp_sink,
                              database_url=f"sqlite:///{root / 'db.sqlite'}", maildir=box)
        deliver(box, [letter()])
        run_once(config, root)
        (item,) = rows(f"sqlite:///{root / 'db.sqlite'}", OutboxItem)
        found.append(item.message_id)
    first, second = (m.strip("<>").split(".", 1) for m in found)
    assert first[1] == second[1] == "SD-000001@example.com"
    assert first[0] != second[0]
