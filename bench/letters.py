"""Reproducible, realistic benchmark letters built from the labelled test and dev letters.

A benchmark on 40 distinct letters measures caches, not mailroute; one on synthetic
"lorem ipsum" measures nothing the rules ever see. So every letter here is a real labelled
letter (``tests/letters`` and the shared dev corpus) used as a template, varied the way a
real mailbox varies: senders, subjects, Message-IDs, dates and registration-number digits;
bodies re-encoded in utf-8, windows-1251 or koi8-r with quoted-printable, base64 or 8bit;
some turned HTML-only or multipart/alternative; about 15 % carrying 20-300 KB attachments
(random bytes behind PDF/XLSX/PNG/ZIP magic, a few repeated, as a logo or a form is);
about 5 % machine mail (the labelled auto-replies, bounces and list mail); and a few
follow-ups (In-Reply-To an earlier letter) and re-sent duplicates (same Message-ID).

Only the standard library is used, so the letters do not change when mailroute's parser
does: the same ``--seed`` gives the same bytes on every machine.

    python bench/letters.py --n 1000                 # print the mix
    python bench/letters.py --n 1000 --out DIR       # also write DIR/000001.eml ...
"""

from __future__ import annotations

import argparse
import base64
import email
import email.policy
import html
import json
import quopri
import random
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_DIRS = (ROOT / "tests" / "letters", ROOT.parent / "shared" / "corpus" / "dev")

MACHINE_SHARE = 0.05
FOLLOW_UP_SHARE = 0.04
DUPLICATE_SHARE = 0.01
REBUILT_SHARE = 0.65  # of people's letters; the rest keep the template's own MIME as it is
ATTACHMENT_SHARE = 0.15 / (1 - MACHINE_SHARE - FOLLOW_UP_SHARE - DUPLICATE_SHARE)  # 15 %
ATTACHMENT_SIZES = (20_000, 300_000)
START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)

FIRST_NAMES = ("Анна", "Ирина", "Ольга", "Сергей", "Алексей", "Наталья", "Дмитрий", "Елена",
               "Михаил", "Татьяна", "John", "Maria", "Peter", "Laura")
LAST_NAMES = ("Иванова", "Петров", "Смирнова", "Кузнецов", "Соколова", "Волков", "Морозова",
              "Лебедев", "Новикова", "Фёдоров", "Smith", "Keller", "Novak", "Rossi")
LOCAL_PARTS = ("buh", "it", "admin", "office", "support", "zakupki", "glavbuh", "kadry",
               "ivanova", "petrov", "sklad", "ceo", "finance", "helpdesk")
CHARSETS_RU = (("utf-8", 50), ("windows-1251", 30), ("koi8-r", 20))
ENCODINGS = (("quoted-printable", 45), ("base64", 40), ("8bit", 15))
LAYOUTS = (("plain", 62), ("alternative", 28), ("html", 10))
ATTACHMENT_KINDS = (
    ("application/pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", ("Скан_письма", "invoice", "Акт")),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", b"PK\x03\x04",
     ("Отчёт", "report", "Остатки")),
    ("image/png", b"\x89PNG\r\n\x1a\n", ("screenshot", "Снимок экрана", "error")),
    ("application/zip", b"PK\x03\x04", ("logs", "Журнал", "dump")),
)
# Only these get new digits: 9-10 digit runs are registration numbers in the templates.
REG_DIGITS = re.compile(r"(?<!\d)(8\d{8,9})(?!\d)")
TRANSLATE_8BIT = str.maketrans({"«": '"', "»": '"', "—": "-", "–": "-", "№": "N", "…": "...",
                                "“": '"', "”": '"', "„": '"', "’": "'", "\u00a0": " "})


@dataclass(frozen=True)
class Template:
    """One labelled letter: its bytes, and its text when it has a plain-text body."""

    name: str
    raw: bytes
    machine: bool
    subject: str
    sender_name: str
    sender_address: str
    text: str | None  # None: HTML-only or unreadable by the stdlib; used verbatim only


@dataclass
class GeneratedLetter:
    """A letter and what it was made of, for the mix statistics."""

    raw: bytes
    kind: str  # verbatim | rebuilt | machine | follow_up | duplicate
    template: str
    message_id: str
    charset: str = ""
    encoding: str = ""
    layout: str = ""
    attachments: list[int] = field(default_factory=list)


def _weighted(rng: random.Random, choices: tuple[tuple[str, int], ...]) -> str:
    names, weights = zip(*choices, strict=True)
    return rng.choices(names, weights)[0]


@cache
def templates() -> tuple[Template, ...]:
    """Every labelled letter found, in a fixed order (so seeds are reproducible)."""
    found: list[Template] = []
    for directory in TEMPLATE_DIRS:
        labels_file = directory / "labels.jsonl"
        if not labels_file.is_file():
            print(f"letters: {directory} not found, not used", file=sys.stderr)
            continue
        labels = {}
        for line in labels_file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                item = json.loads(line)
                labels[item["file"]] = item
        for path in sorted(directory.glob("*.eml")):
            label = labels.get(path.name, {})
            found.append(_template(f"{directory.name}/{path.name}", path.read_bytes(),
                                   label.get("action") == "ignore"))
    if not found:
        raise SystemExit("letters: no template letters found")
    return tuple(found)


def _template(name: str, raw: bytes, machine: bool) -> Template:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    text = None
    body = message.get_body(preferencelist=("plain",))
    if body is not None and not machine:
        try:
            text = body.get_content()
        except (LookupError, ValueError):
            text = None
    sender_name, sender_address = "", ""
    addresses = getaddresses([str(message.get("From", ""))])
    if addresses:
        sender_name, sender_address = addresses[0]
    return Template(name, raw, machine, str(message.get("Subject", "")), sender_name,
                    sender_address, text)


# ------------------------------------------------------------------------ header editing


def _split(raw: bytes) -> tuple[list[bytes], bytes]:
    """Header fields (each with its folded continuation lines, LF endings) and body."""
    raw = raw.replace(b"\r\n", b"\n")
    end = raw.find(b"\n\n")
    head, body = (raw, b"") if end < 0 else (raw[:end], raw[end + 2 :])
    fields: list[bytes] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\n" + line
        elif line:
            fields.append(line)
    return fields, body


def _name(field_: bytes) -> bytes:
    return field_.split(b":", 1)[0].strip().lower()


def _set(fields: list[bytes], name: str, value: str | bytes) -> None:
    """Replace the first field of this name (or add one after the others)."""
    encoded = value.encode("ascii") if isinstance(value, str) else value
    line = name.encode("ascii") + b": " + encoded
    key = name.lower().encode("ascii")
    for index, existing in enumerate(fields):
        if _name(existing) == key:
            fields[index] = line
            del_later = [i for i in range(index + 1, len(fields)) if _name(fields[i]) == key]
            for later in reversed(del_later):
                del fields[later]
            return
    fields.append(line)


def _get(fields: list[bytes], name: str) -> bytes | None:
    key = name.lower().encode("ascii")
    for existing in fields:
        if _name(existing) == key:
            return existing.split(b":", 1)[1].strip()
    return None


def _join(fields: list[bytes], body: bytes) -> bytes:
    """The wire form: CRLF everywhere, as an MTA would deliver it."""
    raw = b"\n".join(fields) + b"\n\n" + body
    return re.sub(rb"\r?\n", b"\r\n", raw)


def encode_words(text: str, charset: str, mode: str) -> str:
    """RFC 2047 encoded words of at most ~45 payload bytes, folded between words."""
    if text.isascii():
        return text
    words, chunk = [], ""
    for char in text:
        if len((chunk + char).encode(charset, "replace")) > 45:
            words.append(chunk)
            chunk = ""
        chunk += char
    words.append(chunk)
    encoded = []
    for word in words:
        data = word.encode(charset, "replace")
        if mode == "B":
            payload = base64.b64encode(data).decode("ascii")
        else:
            payload = "".join(
                chr(b) if (chr(b).isalnum() and b < 128) else "_" if b == 32 else f"={b:02X}"
                for b in data
            )
        encoded.append(f"=?{charset}?{mode}?{payload}?=")
    return "\n ".join(encoded)


# ------------------------------------------------------------------------- bodies


def _encode_body(data: bytes, encoding: str) -> bytes:
    if encoding == "base64":
        return base64.encodebytes(data)
    if encoding == "quoted-printable":
        return quopri.encodestring(data)
    return data if data.endswith(b"\n") else data + b"\n"


def _text_entity(text: str, subtype: str, charset: str, encoding: str) -> tuple[list[bytes], bytes]:
    data = text.encode(charset, "replace")
    if encoding == "8bit" and charset == "us-ascii":
        encoding = "7bit"
    fields = [f'Content-Type: text/{subtype}; charset="{charset}"'.encode(),
              f"Content-Transfer-Encoding: {encoding}".encode()]
    return fields, _encode_body(data, encoding)


def _html(text: str, rng: random.Random, charset: str) -> str:
    """HTML as Outlook or a webmail writes it: head with styles, one block per line."""
    style = ("p.MsoNormal, li.MsoNormal {margin:0cm; font-size:11.0pt; "
             "font-family:\"Calibri\",sans-serif;}\n") * rng.randint(1, 6)
    lines = "\n".join(
        f"<p class=MsoNormal>{html.escape(line) or '&nbsp;'}</p>" for line in text.split("\n")
    )
    return (f'<html><head><meta http-equiv="Content-Type" content="text/html; '
            f'charset={charset}">\n<style>\n{style}</style></head>\n'
            f'<body lang=RU><div class=WordSection1>\n{lines}\n</div></body></html>\n')


def _multipart(subtype: str, parts: list[tuple[list[bytes], bytes]], boundary: str,
               ) -> tuple[list[bytes], bytes]:
    body = b"This is a multi-part message in MIME format.\n\n"
    for fields, content in parts:
        body += b"--" + boundary.encode() + b"\n" + b"\n".join(fields) + b"\n\n" + content
        if not content.endswith(b"\n"):
            body += b"\n"
    body += b"--" + boundary.encode() + b"--\n"
    return [f'Content-Type: multipart/{subtype}; boundary="{boundary}"'.encode()], body


def _attachment(rng: random.Random, pool: list[tuple[list[bytes], bytes, int]],
                ) -> tuple[list[bytes], bytes, int]:
    """A binary attachment; one in five is a recent file sent again (same bytes, one blob)."""
    if pool and rng.random() < 0.2:
        return rng.choice(pool)
    content_type, magic, names = rng.choice(ATTACHMENT_KINDS)
    size = rng.randint(*ATTACHMENT_SIZES)
    data = magic + rng.randbytes(size - len(magic))
    extension = {"application/pdf": "pdf", "image/png": "png", "application/zip": "zip"}.get(
        content_type, "xlsx")
    filename = f"{rng.choice(names)}_{rng.randint(1, 9999)}.{extension}"
    if filename.isascii():
        disposition = f'attachment; filename="{filename}"'
    else:
        quoted = "".join(c if (c.isascii() and c.isalnum()) or c in "._-" else
                         "".join(f"%{b:02X}" for b in c.encode()) for c in filename)
        disposition = f"attachment; filename*=utf-8''{quoted}"
    fields = [f'Content-Type: {content_type}; name="{filename}"'.encode(),
              b"Content-Transfer-Encoding: base64",
              f"Content-Disposition: {disposition}".encode()]
    item = (fields, base64.encodebytes(data), size)
    pool.append(item)
    if len(pool) > 20:  # bounded: the generator must not grow with N
        del pool[0]
    return item


# ------------------------------------------------------------------------ the factory


class LetterFactory:
    """Letters number 1..n for one seed; each call of ``generate`` starts afresh."""

    def __init__(self, seed: int = 7, attachment_share: float = ATTACHMENT_SHARE) -> None:
        self.seed = seed
        self.attachment_share = attachment_share
        every = templates()
        self.people = [t for t in every if not t.machine]
        self.rebuildable = [t for t in self.people if t.text]
        self.machines = [t for t in every if t.machine]

    def generate(self, n: int) -> Iterator[GeneratedLetter]:
        rng = random.Random(self.seed)
        pool: list[tuple[list[bytes], bytes, int]] = []
        sent: list[GeneratedLetter] = []  # people's letters, for follow-ups and re-sends
        moment = START
        for number in range(1, n + 1):
            moment += timedelta(seconds=rng.randint(5, 240))
            roll = rng.random()
            if roll < MACHINE_SHARE or not self.people:
                letter = self._machine(rng, number, moment)
            elif sent and roll < MACHINE_SHARE + DUPLICATE_SHARE:
                letter = self._duplicate(rng, rng.choice(sent), moment)
            elif sent and roll < MACHINE_SHARE + DUPLICATE_SHARE + FOLLOW_UP_SHARE:
                letter = self._follow_up(rng, number, rng.choice(sent[-200:]), moment)
            else:
                letter = self._person(rng, number, moment, pool)
                sent.append(letter)
                if len(sent) > 2000:
                    del sent[:1000]
            yield letter

    # -- kinds of letters ------------------------------------------------------------

    def _machine(self, rng: random.Random, number: int, moment: datetime) -> GeneratedLetter:
        template = rng.choice(self.machines)
        fields, body = _split(template.raw)
        message_id = f"<{rng.getrandbits(64):016x}.{number}@{_domain(template.sender_address)}>"
        _set(fields, "Message-ID", message_id)
        _set(fields, "Date", format_datetime(moment))
        fields.insert(0, _received(rng, moment))
        return GeneratedLetter(_join(fields, body), "machine", template.name, message_id)

    def _person(self, rng: random.Random, number: int, moment: datetime,
                pool: list[tuple[list[bytes], bytes, int]]) -> GeneratedLetter:
        rebuild = self.rebuildable and rng.random() < REBUILT_SHARE
        template = rng.choice(self.rebuildable if rebuild else self.people)
        address = _vary_address(rng, template.sender_address, number)
        message_id = f"<{rng.getrandbits(80):020x}@{_domain(address)}>"
        if rebuild:
            assert template.text is not None
            letter = self._rebuilt(rng, template, number, address, message_id, moment)
        else:
            letter = self._verbatim(rng, template, number, address, message_id, moment)
        if rng.random() < self.attachment_share:
            letter = _with_attachments(rng, letter, pool)
        return letter

    def _verbatim(self, rng: random.Random, template: Template, number: int, address: str,
                  message_id: str, moment: datetime) -> GeneratedLetter:
        """The template's own MIME and charset, with new identity headers."""
        fields, body = _split(template.raw)
        old_from = _get(fields, "From") or b""
        if template.sender_address:
            old = template.sender_address.encode("ascii", "replace")
            _set(fields, "From", old_from.replace(old, address.encode("ascii")))
        subject = _get(fields, "Subject")
        if subject is not None and rng.random() < 0.6:
            _set(fields, "Subject", subject + f" #{rng.randint(10, 99999)}".encode())
        _set(fields, "Message-ID", message_id)
        _set(fields, "Date", format_datetime(moment))
        fields.insert(0, _received(rng, moment))
        return GeneratedLetter(_join(fields, body), "verbatim", template.name, message_id)

    def _rebuilt(self, rng: random.Random, template: Template, number: int, address: str,
                 message_id: str, moment: datetime) -> GeneratedLetter:
        """The template's words in a new charset, transfer encoding and layout."""
        text = _vary_numbers(rng, template.text or "")
        subject = template.subject
        if rng.random() < 0.6:
            subject += f" #{rng.randint(10, 99999)}"
        name = template.sender_name or f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        return self._compose(rng, template.name, "rebuilt", text, subject, name, address,
                             message_id, moment)

    def _compose(self, rng: random.Random, template: str, kind: str, text: str, subject: str,
                 name: str, address: str, message_id: str, moment: datetime,
                 extra: tuple[tuple[str, str], ...] = ()) -> GeneratedLetter:
        cyrillic = any("а" <= c.lower() <= "я" for c in text + subject)
        charset = _weighted(rng, CHARSETS_RU) if cyrillic else rng.choice(("utf-8", "us-ascii"))
        if charset != "utf-8":
            text, subject, name = (s.translate(TRANSLATE_8BIT) for s in (text, subject, name))
            if not all(_fits(s, charset) for s in (text, subject, name)):
                charset = "utf-8"
        encoding = _weighted(rng, ENCODINGS)
        layout = _weighted(rng, LAYOUTS)
        mode = rng.choice("BQ")
        if layout == "plain":
            content_fields, body = _text_entity(text, "plain", charset, encoding)
        elif layout == "html":
            content_fields, body = _text_entity(_html(text, rng, charset), "html", charset,
                                                encoding)
        else:
            content_fields, body = _multipart(
                "alternative",
                [_text_entity(text, "plain", charset, encoding),
                 _text_entity(_html(text, rng, charset), "html", charset, encoding)],
                f"----=_NextPart_{rng.getrandbits(48):012X}",
            )
        fields = [
            _received(rng, moment),
            f"From: {encode_words(name, charset, mode)} <{address}>".encode(),
            b"To: servicedesk@example.com",
            f"Subject: {encode_words(subject, charset, mode)}".encode(),
            f"Date: {format_datetime(moment)}".encode(),
            f"Message-ID: {message_id}".encode(),
            *(f"{key}: {value}".encode() for key, value in extra),
            b"MIME-Version: 1.0",
            *content_fields,
        ]
        return GeneratedLetter(_join(fields, body), kind, template, message_id, charset,
                               encoding, layout)

    def _follow_up(self, rng: random.Random, number: int, earlier: GeneratedLetter,
                   moment: datetime) -> GeneratedLetter:
        """The customer answers in the thread: In-Reply-To, Re:, the earlier letter quoted."""
        original = email.message_from_bytes(earlier.raw, policy=email.policy.default)
        subject = f"Re: {original.get('Subject', '')}"
        names = getaddresses([str(original.get("From", ""))])
        name, address = names[0] if names else ("", f"client{number}@example.org")
        body = original.get_body(preferencelist=("plain",))
        quoted = ""
        if body is not None:
            try:
                quoted = "\n".join(f"> {line}" for line in str(body.get_content()).splitlines())
            except (LookupError, ValueError):
                quoted = ""
        text = rng.choice((
            "Добрый день!\n\nДополняю: ошибка повторяется и сегодня, прошу ускорить.\n",
            "Здравствуйте.\n\nРегистрационный номер указан в письме ниже. Спасибо!\n",
            "Hello,\n\nany news on this? The problem is still there.\n",
        )) + f"\n{name}\n\n{format_datetime(moment)}, {address}:\n{quoted}\n"
        message_id = f"<{rng.getrandbits(80):020x}@{_domain(address)}>"
        return self._compose(rng, earlier.template, "follow_up", text, subject, name, address,
                             message_id, moment,
                             (("In-Reply-To", earlier.message_id),
                              ("References", earlier.message_id)))

    def _duplicate(self, rng: random.Random, earlier: GeneratedLetter,
                   moment: datetime) -> GeneratedLetter:
        """The same letter delivered again (another relay hop): same Message-ID, new bytes."""
        fields, body = _split(earlier.raw)
        fields.insert(0, _received(rng, moment))
        return GeneratedLetter(_join(fields, body), "duplicate", earlier.template,
                               earlier.message_id, earlier.charset, earlier.encoding,
                               earlier.layout, list(earlier.attachments))


def _with_attachments(rng: random.Random, letter: GeneratedLetter,
                      pool: list[tuple[list[bytes], bytes, int]]) -> GeneratedLetter:
    """Wrap the letter's content entity in multipart/mixed with one to three files."""
    fields, body = _split(letter.raw)
    content = [f for f in fields if _name(f).startswith(b"content-")]
    rest = [f for f in fields if not _name(f).startswith(b"content-")]
    if not content:
        content = [b'Content-Type: text/plain; charset="us-ascii"']
    files = [_attachment(rng, pool) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
    mixed_fields, mixed_body = _multipart(
        "mixed", [(content, body), *((f, data) for f, data, _size in files)],
        f"----=_Part_{rng.getrandbits(48):012x}",
    )
    if not any(_name(f) == b"mime-version" for f in rest):
        rest.append(b"MIME-Version: 1.0")
    letter.raw = _join(rest + mixed_fields, mixed_body)
    letter.attachments = [size for _f, _data, size in files]
    return letter


def _fits(text: str, charset: str) -> bool:
    try:
        text.encode(charset)
    except UnicodeEncodeError:
        return False
    return True


def _received(rng: random.Random, moment: datetime) -> bytes:
    relay = rng.choice(("mx1.example.net", "mx2.example.net", "relay.mail.example.org"))
    return (f"Received: from {relay} ([10.{rng.randint(0, 255)}.{rng.randint(0, 255)}."
            f"{rng.randint(1, 254)}])\n\tby mail.example.com with ESMTPS id "
            f"{rng.getrandbits(40):010X}; {format_datetime(moment)}").encode()


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "example.org"


def _vary_address(rng: random.Random, address: str, number: int) -> str:
    """A different person at the template's organization (its domain is evidence)."""
    domain = _domain(address) if address.isascii() else "example.org"
    local = rng.choice((address.partition("@")[0] if address.isascii() else "",
                        rng.choice(LOCAL_PARTS))) or "client"
    return f"{local}{number}@{domain}"


def _vary_numbers(rng: random.Random, text: str) -> str:
    """New digits for registration-number-like runs, the same number the same way."""
    mapping: dict[str, str] = {}

    def replace(match: re.Match[str]) -> str:
        old = match.group(1)
        if old not in mapping:
            mapping[old] = old[:2] + "".join(rng.choice("0123456789") for _ in old[2:])
        return mapping[old]

    return REG_DIGITS.sub(replace, text)


def generate(n: int, seed: int = 7) -> Iterator[GeneratedLetter]:
    """N letters for this seed (shortcut for ``LetterFactory(seed).generate(n)``)."""
    return LetterFactory(seed).generate(n)


def big_letter(size: int = 50_000_000, seed: int = 7) -> bytes:
    """One letter of about ``size`` bytes: a short request with one huge scanned PDF.

    The default 50 MB stays under mailroute's default 50 MiB ``max_message_bytes``, so the
    letter is processed rather than quarantined for its size.
    """
    rng = random.Random(seed)
    factory = LetterFactory(seed)
    letter = factory._person(rng, 1, START, [])
    fields, body = _split(letter.raw)
    content = [f for f in fields if _name(f).startswith(b"content-")]
    rest = [f for f in fields if not _name(f).startswith(b"content-")]
    # base64 lines: 57 bytes become 76 characters and CRLF on the wire.
    wanted = max(size - len(letter.raw) - 2000, 1000) * 57 // 78
    data = b"%PDF-1.7\n" + rng.randbytes(wanted)
    pdf = [b'Content-Type: application/pdf; name="scan.pdf"',
           b"Content-Transfer-Encoding: base64",
           b'Content-Disposition: attachment; filename="scan.pdf"']
    mixed_fields, mixed_body = _multipart(
        "mixed", [(content or [b"Content-Type: text/plain"], body),
                  (pdf, base64.encodebytes(data))], "big-letter-boundary")
    return _join(rest + mixed_fields, mixed_body)


class Mix:
    """Running statistics of the letters made, so a reader can judge the benchmark input."""

    def __init__(self) -> None:
        self.n = 0
        self.total = 0
        self.largest = 0
        self.kinds: Counter[str] = Counter()
        self.charsets: Counter[str] = Counter()
        self.encodings: Counter[str] = Counter()
        self.layouts: Counter[str] = Counter()
        self.templates: set[str] = set()
        self.with_files = 0
        self.files = 0
        self.attached = 0

    def add(self, letter: GeneratedLetter) -> None:
        self.n += 1
        self.total += len(letter.raw)
        self.largest = max(self.largest, len(letter.raw))
        self.kinds[letter.kind] += 1
        if letter.charset:
            self.charsets[letter.charset] += 1
            self.encodings[letter.encoding] += 1
            self.layouts[letter.layout] += 1
        self.templates.add(letter.template)
        if letter.attachments:
            self.with_files += 1
            self.files += len(letter.attachments)
            self.attached += sum(letter.attachments)

    def __str__(self) -> str:
        n = self.n or 1

        def share(counter: Counter[str]) -> str:
            whole = sum(counter.values()) or 1
            return ", ".join(f"{key} {value / whole:.0%}" for key, value in counter.most_common())

        return "\n".join([
            f"letters: {self.n}, {self.total / 1e6:.1f} MB in all, mean "
            f"{self.total / n / 1e3:.1f} KB, largest {self.largest / 1e3:.0f} KB",
            f"kinds: {share(self.kinds)}",
            f"re-encoded letters: charsets {share(self.charsets)}; transfer encodings "
            f"{share(self.encodings)}; layouts {share(self.layouts)}",
            f"with attachments: {self.with_files / n:.1%} ({self.files} files, "
            f"{self.attached / 1e6:.1f} MB decoded)",
            f"templates used: {len(self.templates)} of {len(templates())}",
        ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, help="write the letters here as NNNNNN.eml")
    args = parser.parse_args()
    mix = Mix()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    for number, letter in enumerate(generate(args.n, args.seed), 1):
        if args.out:
            (args.out / f"{number:06d}.eml").write_bytes(letter.raw)
        mix.add(letter)
    print(mix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
