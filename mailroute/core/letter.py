"""Pure MIME parsing: raw letter bytes in, a `ParsedLetter` out.

Real mail is messy: mislabelled charsets, raw 8-bit headers, broken base64,
stub plain-text parts next to the real HTML body, forwarded letters nested in
letters.  This module repairs what it can and writes down what it repaired in
``ParsedLetter.defects``; it raises ``LetterUnreadable`` only when nothing
useful can be made of the bytes or a resource limit is exceeded.

The structure is split here too (bytes.find on boundaries, no line-by-line
reading), as are header decoding, charsets, transfer encodings and body
selection: the stdlib ``email`` parser is slower on letters with attachments
and its policies either give up on broken headers or hide the raw bytes that
charset repair needs.  Only ``email.utils.parsedate_tz`` is borrowed.
"""

from __future__ import annotations

import binascii
import bisect
import codecs
import hashlib
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email import utils as email_utils
from urllib.parse import unquote_to_bytes

from mailroute.errors import LetterUnreadable

__all__ = ["Address", "Attachment", "ParseLimits", "ParsedLetter", "parse"]


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Address:
    """One mailbox of an address header."""

    name: str  # decoded display name, "" if none
    email: str  # lower-cased addr-spec, "" if unparseable


@dataclass(frozen=True)
class Attachment:
    """A non-body part of a letter (file, inline image, delivery report)."""

    filename: str
    content_type: str
    size: int
    sha256: str
    inline: bool
    content_id: str | None
    content: bytes = field(repr=False, compare=False)


class HeaderMap(Mapping[str, str]):
    """Immutable, hashable mapping of lower-case header names to decoded values."""

    __slots__ = ("_data", "_hash")

    def __init__(self, data: dict[str, str]) -> None:
        self._data = data
        self._hash: int | None = None

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._data) == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"HeaderMap({self._data!r})"


@dataclass(frozen=True)
class ParsedLetter:
    """Everything the rest of mailroute needs to know about one letter."""

    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str | None
    sender: Address | None
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    return_path: str | None
    date: datetime | None
    headers: Mapping[str, str]
    content_type: str
    text: str
    html: bool
    attachments: tuple[Attachment, ...]
    forwarded: tuple[ParsedLetter, ...]
    defects: tuple[str, ...]


@dataclass(frozen=True)
class ParseLimits:
    """Resource limits; exceeding one makes the letter unreadable (quarantined)."""

    max_bytes: int = 50 * 1024 * 1024
    max_parts: int = 1000
    max_depth: int = 30
    max_header_bytes: int = 1024 * 1024
    # The body text analysed: nobody writes a request longer than this, and rule
    # matching over tens of megabytes of pasted logs takes minutes and gigabytes.
    # The raw letter is stored whole; only its reading is cut.
    max_text_chars: int = 200_000


# ---------------------------------------------------------------------- charsets

_CHARSET_ALIASES = {
    "utf8": "utf-8",
    "utf-8": "utf-8",
    "unicode-1-1-utf-8": "utf-8",
    "x-unicode20utf8": "utf-8",
    "win-1251": "cp1251",
    "win1251": "cp1251",
    "windows1251": "cp1251",
    "windows-1251": "cp1251",
    "cp-1251": "cp1251",
    "cp1251": "cp1251",
    "x-cp1251": "cp1251",
    "x-win-1251": "cp1251",
    "ansi-1251": "cp1251",
    "koi8r": "koi8-r",
    "koi8-r": "koi8-r",
    "koi-8-r": "koi8-r",
    "koi8": "koi8-r",
    "x-koi8-r": "koi8-r",
    "koi8-u": "koi8-u",
    "cp-866": "cp866",
    "ibm866": "cp866",
    "x-ibm866": "cp866",
    "dos-866": "cp866",
    "x-mac-cyrillic": "mac-cyrillic",
    "maccyrillic": "mac-cyrillic",
    "x-mac-ukrainian": "mac-cyrillic",
    "iso-8859-5": "iso8859-5",
    "iso8859-5": "iso8859-5",
    "us-ascii": "ascii",
    "ascii": "ascii",
    "ansi_x3.4-1968": "ascii",
    "iso-8859-1": "cp1252",  # what senders labelled latin-1 almost always is
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "unknown-8bit": "",
    "x-unknown": "",
    "unknown": "",
    "default": "",
}

# Letter frequencies of Russian prose (percent).  Text decoded with the wrong
# Cyrillic charset scrambles letters into rare ones and inverts letter case, so
# the mean log-frequency separates right from wrong even on one short word.
_RU_PERCENT = {
    "о": 10.97, "е": 8.45, "а": 8.01, "и": 7.35, "н": 6.70, "т": 6.26, "с": 5.47, "р": 4.73,
    "в": 4.54, "л": 4.40, "к": 3.49, "м": 3.21, "д": 2.98, "п": 2.81, "у": 2.62, "я": 2.01,
    "ы": 1.90, "ь": 1.74, "г": 1.70, "з": 1.65, "б": 1.59, "ч": 1.44, "й": 1.21, "х": 0.97,
    "ж": 0.94, "ш": 0.73, "ю": 0.64, "ц": 0.48, "щ": 0.36, "э": 0.32, "ф": 0.26, "ъ": 0.04,
    "ё": 0.20,
}  # fmt: skip
_RU_LOGP = {
    **{k: math.log(v) for k, v in _RU_PERCENT.items()},
    **{k.upper(): math.log(v) for k, v in _RU_PERCENT.items()},
}
_NON_RUSSIAN_LOGP = -4.0  # Ђ, Ѓ, і...: what cp1251 bytes look like in other charsets
_INVERTED_CASE = re.compile(r"(?<!\w)[а-яё][А-ЯЁ]{2,}")
_CAPITALIZED = re.compile(r"(?<!\w)[А-ЯЁ][а-яё]{2,}")
_CYRILLIC = re.compile("[\u0400-\u04ff]")
_SCORE_SAMPLE = 1000


def _codec_name(charset: str) -> str | None:
    """Map a declared charset label to a Python codec name; None when unknown."""
    label = charset.strip().strip("\"'").lower()
    if "*" in label:  # RFC 2231 language suffix: utf-8*ru
        label = label.split("*", 1)[0]
    if label in _CHARSET_ALIASES:
        return _CHARSET_ALIASES[label] or None
    try:
        return codecs.lookup(label).name
    except (LookupError, ValueError):
        return None


def _russian_score(text: str) -> float:
    """Mean log-frequency of the Cyrillic letters, with a bonus for sane capitalisation.

    Russian prose scores about 2.0, cp1251/koi8-r mojibake about 0.4; 0.0 when
    there are no Cyrillic letters at all.
    """
    sample = text[:_SCORE_SAMPLE]
    total = 0.0
    letters = 0
    for ch, count in Counter(sample).items():
        if "\u0400" <= ch <= "\u04ff":
            total += _RU_LOGP.get(ch, _NON_RUSSIAN_LOGP) * count
            letters += count
    if letters == 0:
        return 0.0
    inverted = len(_INVERTED_CASE.findall(sample))
    capitalized = len(_CAPITALIZED.findall(sample))
    return total / letters + 0.5 * (capitalized - inverted) / max(1, capitalized + inverted)


def _cyrillic_count(text: str) -> int:
    """Cyrillic letters in the scored sample (enough for every threshold used)."""
    return len(_CYRILLIC.findall(text, 0, _SCORE_SAMPLE))


def _is_utf8_with_multibyte(data: bytes) -> bool:
    """True when `data` is valid UTF-8 and contains non-ASCII (so it is UTF-8)."""
    if data.isascii():
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _guess_decode(data: bytes) -> tuple[str, str]:
    """Decode bytes of unknown charset; returns (text, codec).

    UTF-8 is taken when valid (8-bit text in another charset practically never
    is).  Between cp1251 and koi8-r the letter-frequency score decides; when it
    cannot (too few letters), charset-normalizer restricted to the charsets
    Russian mail really uses breaks the tie.
    """
    if data.isascii():
        return data.decode("ascii"), "ascii"
    if _is_utf8_with_multibyte(data):
        return data.decode("utf-8"), "utf-8"
    mostly = _mostly_utf8(data)
    if mostly is not None:
        return mostly
    as_1251 = data.decode("cp1251", "replace")
    as_koi = data.decode("koi8-r", "replace")
    s_1251, s_koi = _russian_score(as_1251), _russian_score(as_koi)
    if abs(s_1251 - s_koi) >= 0.2 and max(_cyrillic_count(as_1251), _cyrillic_count(as_koi)) >= 2:
        return (as_1251, "cp1251") if s_1251 > s_koi else (as_koi, "koi8-r")
    if _normalizer_guess(data) == "koi8-r":
        return as_koi, "koi8-r"
    return as_1251, "cp1251"


def _mostly_utf8(data: bytes) -> tuple[str, str] | None:
    """UTF-8 spoilt by a few bytes (a letter cut mid-character, one stray byte).

    Decoding all of it as cp1251 would turn every Russian letter into mojibake
    to save a handful; the bad bytes become U+FFFD instead.
    """
    text = data.decode("utf-8", "replace")
    bad = text.count("\ufffd")
    extra = len(text.encode("utf-8")) - len(text) - 2 * bad  # ~ one per Cyrillic letter
    if extra >= 20 and bad * 50 <= extra:
        return text, f"utf-8 ({bad} invalid bytes replaced)"
    return None


def _normalizer_guess(data: bytes) -> str | None:
    """charset-normalizer restricted to the charsets Russian mail really uses."""
    from charset_normalizer import from_bytes

    try:
        match = from_bytes(data, cp_isolation=["utf_8", "cp1251", "koi8_r"]).best()
    except Exception:  # the guesser is a heuristic; never let it break parsing
        return None
    if match is None:
        return None
    return _codec_name(match.encoding)


_MOJIBAKE_UTF8_AS_1251 = re.compile(
    "[РС][\u0402\u0403\u201a\u0453\u201e\u2026\u2020\u2021\u20ac\u2030\u0409\u2039"
    "\u040a\u040c\u040b\u040f\u0452\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u2122"
    "\u0459\u203a\u045a\u045c\u045b\u045f\u00a0\u040e\u045e\u0408\u00a4\u0490\u00a6"
    "\u00a7\u0401\u00a9\u0404\u00ab\u00ac\u00ad\u00ae\u0407\u00b0\u00b1\u0406\u0456"
    "\u0491\u00b5\u00b6\u00b7\u0451\u2116\u0454\u00bb\u0458\u0405\u0455\u0457]"
)
_MOJIBAKE_UTF8_AS_LATIN = re.compile(
    "[\u00d0\u00d1][\u0080-\u00bf\u0152\u0153\u0160\u0161"
    "\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013\u2014"
    "\u2018-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]"
)
_LATIN_HIGH = re.compile("[\u00c0-\u00ff]")


def _fix_mojibake(text: str) -> tuple[str, str] | None:
    """Undo the usual double-decoding accidents; returns (fixed, description).

    Only a repair that turns the text into clearly better Russian is accepted,
    so genuine Latin-1 text (German, French) is left alone.
    """
    if len(_MOJIBAKE_UTF8_AS_1251.findall(text, 0, _SCORE_SAMPLE)) >= 3:
        fixed = _recode(text, "cp1251", "utf-8")
        if _russian_score(fixed) > _russian_score(text) + 0.5:
            return fixed, "UTF-8 text that had been decoded as cp1251"
    if len(_MOJIBAKE_UTF8_AS_LATIN.findall(text, 0, _SCORE_SAMPLE)) >= 3:
        fixed = _recode(text, "cp1252", "utf-8")
        if _russian_score(fixed) > max(_russian_score(text), 1.2) or _is_cleaner(fixed, text):
            return fixed, "UTF-8 text that had been decoded as latin-1"
    if len(_LATIN_HIGH.findall(text, 0, _SCORE_SAMPLE)) >= 8 and not _cyrillic_count(text):
        fixed = _recode(text, "cp1252", "cp1251")
        if _russian_score(fixed) > 1.5:
            return fixed, "cp1251 text that had been decoded as latin-1"
    return None


def _recode(text: str, wrong: str, right: str) -> str:
    """Re-encode with the single-byte codec that was wrongly used, decode with the right one.

    Characters the wrong codec cannot encode (C1 controls from latin-1, U+FFFD)
    become their latin-1 byte or '?', so one lost byte does not stop the repair.
    """
    try:
        data = text.encode(wrong)
    except UnicodeEncodeError:
        out = bytearray()
        for ch in text:
            try:
                out += ch.encode(wrong)
            except UnicodeEncodeError:
                out += bytes([ord(ch)]) if ord(ch) < 256 else b"?"
        data = bytes(out)
    return data.decode(right, "replace")


def _is_cleaner(fixed: str, text: str) -> bool:
    """Non-Russian repair check: fewer accented Latin letters and few U+FFFD."""
    accents_before = len(_LATIN_HIGH.findall(text))
    accents_after = len(_LATIN_HIGH.findall(fixed))
    return fixed.count("\ufffd") * 20 < len(fixed) and accents_after * 2 < accents_before


def decode_bytes(data: bytes, charset: str | None, what: str, defects: list[str]) -> str:
    """Decode `data` declared as `charset`, repairing mislabels; notes go to `defects`."""
    codec = _codec_name(charset) if charset else None
    if charset and codec is None:
        text, guessed = _guess_decode(data)
        if not data.isascii():
            defects.append(f"{what}: unknown charset {charset.strip()!r}, guessed {guessed}")
        return text
    if codec is None or codec == "ascii":
        if data.isascii():
            return data.decode("ascii")
        text, guessed = _guess_decode(data)
        label = "declared us-ascii" if codec else "no charset declared"
        defects.append(f"{what}: {label} but 8-bit content, guessed {guessed}")
        return text
    try:
        text = data.decode(codec)
    except UnicodeDecodeError:
        text, guessed = _guess_decode(data)
        defects.append(f"{what}: declared charset {charset} failed, guessed {guessed}")
        return text
    except LookupError:  # pragma: no cover - codec_name already looked it up
        return data.decode("utf-8", "replace")
    return _check_declared(data, text, codec, charset or codec, what, defects)


_HIGH_BYTES = bytes(range(128, 256))
_CYRILLIC_SINGLE_BYTE = frozenset(
    ["cp1251", "koi8-r", "koi8-u", "iso8859-5", "cp866", "mac-cyrillic"]
)


def _looks_russian(text: str, high: int) -> bool:
    """Cheap first look: lower-case о, е, а, и, н, т make ~40% of Russian letters.

    cp1251/koi8-r mojibake inverts letter case, so it fails this; only such
    text (or all-caps text) gets the full scoring.
    """
    sample = text[:_SCORE_SAMPLE]
    common = sum(sample.count(ch) for ch in "оеаинт")
    return common * 4 >= min(high, _SCORE_SAMPLE)


def _check_cyrillic(
    data: bytes, text: str, codec: str, charset: str, what: str, defects: list[str]
) -> str:
    """A Cyrillic single-byte label decodes anything; switch only to clearly better Russian."""
    high = len(data) - len(data.translate(None, _HIGH_BYTES))
    if high < 8 or _looks_russian(text, high):
        return text
    best, best_text, best_score = codec, text, _russian_score(text) + 0.8  # the label's bonus
    for other in ("cp1251", "koi8-r"):
        if other != codec:
            alt = data.decode(other, "replace")
            alt_score = _russian_score(alt)
            if alt_score > best_score:
                best, best_text, best_score = other, alt, alt_score
    if best != codec:
        defects.append(f"{what}: declared charset {charset} but content is {best}")
    return best_text


def _check_declared(
    data: bytes, text: str, codec: str, charset: str, what: str, defects: list[str]
) -> str:
    """A declared charset decoded without error; catch the ones that still lie."""
    if data.isascii():
        return text
    if codec != "utf-8" and _is_utf8_with_multibyte(data):
        defects.append(f"{what}: declared charset {charset} but content is utf-8")
        return data.decode("utf-8")
    if codec in _CYRILLIC_SINGLE_BYTE:
        return _check_cyrillic(data, text, codec, charset, what, defects)
    fixed = _fix_mojibake(text)
    if fixed is not None:
        defects.append(f"{what}: {fixed[1]}, repaired")
        return fixed[0]
    return text


# ------------------------------------------------------------------ header words

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*?)\?=")
_WSP_ONLY = re.compile(r"[ \t\r\n]*")
_WSP_RUN = re.compile(r"\s+")
_FOLD = re.compile(r"\r?\n(?=[ \t])|\r(?=[ \t])")


def _q_decode(payload: str) -> bytes:
    """RFC 2047 Q: '_' is space, =XX hex; stray '=' stays as is."""
    raw = payload.replace("_", " ").encode("utf-8", "surrogateescape")
    return binascii.a2b_qp(raw)


_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]+")


def b64_decode(payload: bytes) -> bytes:
    """Base64 that tolerates junk characters and broken or missing padding."""
    try:  # the C decoder already skips line breaks and junk; only padding trips it
        return binascii.a2b_base64(payload)
    except binascii.Error:
        pass
    cleaned = _B64_JUNK.sub(b"", payload)
    rest = len(cleaned) % 4
    if rest == 1:
        cleaned = cleaned[:-1]
    elif rest:
        cleaned += b"=" * (4 - rest)
    return binascii.a2b_base64(cleaned)


_B64_WORD = re.compile(r"[A-Za-z0-9+/]*={0,3}")


def _word_bytes(enc: str, payload: str) -> bytes | None:
    """Bytes of one encoded word, None when it cannot be decoded at all."""
    if enc in "qQ":
        return _q_decode(payload)
    if _B64_WORD.fullmatch(payload) is None:
        return None
    try:
        return b64_decode(payload.encode("ascii", "surrogateescape"))
    except (binascii.Error, ValueError):
        return None


def _raw_to_text(raw: str, defects: list[str], what: str) -> str:
    """Text of header bytes carried as surrogate escapes: utf-8, else guessed."""
    if raw.isascii():
        return raw
    data = raw.encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        text, guessed = _guess_decode(data)
        defects.append(f"{what}: raw 8-bit header, guessed {guessed}")
        return text


def decode_header(raw: str, defects: list[str], what: str = "header") -> str:
    """Decode an unfolded header value: RFC 2047 words, raw 8-bit, mixed text.

    Adjacent encoded words in the same charset are joined as bytes before
    decoding, so a multibyte character split across two words survives.
    """
    if "=?" not in raw:
        return _raw_to_text(raw, defects, what)
    out: list[str] = []
    pending: list[bytes] = []
    pending_charset = ""
    pos = 0

    def flush() -> None:
        nonlocal pending_charset
        if pending:
            out.append(decode_bytes(b"".join(pending), pending_charset, what, defects))
            pending.clear()
        pending_charset = ""

    for match in _ENCODED_WORD.finditer(raw):
        gap = raw[pos : match.start()]
        charset, enc, payload = match.group(1), match.group(2), match.group(3)
        data = _word_bytes(enc, payload)
        if data is None:
            flush()
            out.append(_raw_to_text(gap, defects, what))
            out.append(_raw_to_text(match.group(0), defects, what))
            defects.append(f"{what}: broken encoded word left as is")
            pos = match.end()
            continue
        joinable = pending and _WSP_ONLY.fullmatch(gap) is not None
        if joinable and charset.lower() == pending_charset.lower():
            pending.append(data)
        else:
            if not joinable:
                flush()
                out.append(_raw_to_text(gap, defects, what))
            else:
                flush()
            pending_charset = charset
            pending.append(data)
        pos = match.end()
    flush()
    out.append(_raw_to_text(raw[pos:], defects, what))
    return scrub("".join(out))


def scrub(text: str) -> str:
    """Replace lone surrogates (undecodable raw bytes) so the text is valid Unicode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def unfold(value: str) -> str:
    """Remove header folding (CRLF before whitespace) and stray line breaks."""
    return _FOLD.sub("", value).replace("\r", " ").replace("\n", " ")


def collapse(text: str) -> str:
    """Single spaces, no leading/trailing whitespace, no control characters."""
    return _WSP_RUN.sub(" ", _strip_controls(text)).strip()


_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _strip_controls(text: str) -> str:
    return _CONTROLS.sub("", text)


# --------------------------------------------------------------------- addresses

_ANGLE_ADDR = re.compile(r"<([^<>]*)>\s*$")
# Possessive and anchored to token starts: a long run without '@' must not backtrack.
_BARE_EMAIL = re.compile(r"(?<![^\s<>()\"',;:])[^\s<>()\"',;:@]++@[^\s<>()\"',;:@]++")
# No specials: "a,b@c" or "x>y@z" would be cut to "a" or "x" by an SMTP client's
# address parser, sending our reply to a local mailbox of the relay.
_EMAIL_SHAPE = re.compile(r"[^@\s<>()\[\],;:\"\\]++@[^@\s<>()\[\],;:\"\\]++")


def _split_addresses(value: str) -> list[str]:
    """Split an address list on commas outside quotes, angle brackets and comments."""
    items: list[str] = []
    buf: list[str] = []
    quoted = False
    angle = 0
    comment = 0
    escape = False
    for ch in value:
        if escape:
            buf.append(ch)
            escape = False
            continue
        if ch == "\\" and (quoted or comment):
            escape = True
        elif ch == '"' and not comment:
            quoted = not quoted
        elif not quoted:
            if ch == "(":
                comment += 1
            elif ch == ")" and comment:
                comment -= 1
            elif ch == "<" and not comment:
                angle += 1
            elif ch == ">" and angle:
                angle -= 1
            elif ch in ",;" and not angle and not comment:
                items.append("".join(buf))
                buf = []
                continue
        buf.append(ch)
    items.append("".join(buf))
    return [item for item in (i.strip() for i in items) if item]


def _clean_name(name: str) -> str:
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1]
    elif name.startswith('"'):
        name = name[1:]
    name = name.replace('\\"', '"').replace("\\\\", "\\").strip().strip('"').strip()
    if name.startswith("'") and name.endswith("'") and len(name) >= 2:
        name = name[1:-1]
    return collapse(name)


MAX_ADDRESS = 254  # RFC 5321; the requester columns are 320 wide


def _clean_email(addr: str) -> str:
    """The lower-cased addr-spec; "" when it is no address (or one no server could take:
    longer than RFC 5321 allows, or holding controls such as NUL)."""
    addr = addr.strip().strip("'\"").strip()
    if addr.lower().startswith("mailto:"):
        addr = addr[7:]
    addr = "".join(addr.split()).lower()
    if len(addr) > MAX_ADDRESS or _CONTROLS.search(addr):
        return ""
    return addr if _EMAIL_SHAPE.fullmatch(addr) else ""


def parse_address(item: str, defects: list[str], what: str) -> Address | None:
    """One mailbox; tolerant of unbalanced quotes and names that hold '<' or '@'."""
    item = item.strip()
    if ":" in item and "<" not in item.split(":", 1)[0] and '"' not in item.split(":", 1)[0]:
        head, rest = item.split(":", 1)
        if "@" not in head:  # group syntax "team: a@b" / "undisclosed-recipients:"
            item = rest.strip()
    if not item:
        return None
    match = _ANGLE_ADDR.search(item)
    if match:
        email = _clean_email(match.group(1))
        name = item[: match.start()]
    else:
        comment = re.search(r"\(([^()]*)\)", item)
        bare = item if comment is None else item[: comment.start()] + item[comment.end() :]
        found = _BARE_EMAIL.search(bare)
        email = _clean_email(found.group(0)) if found else ""
        if found:
            name = comment.group(1) if comment else bare.replace(found.group(0), "")
        else:
            name = item
    name = _clean_name(decode_header(name, defects, what))
    if not email:
        found = _BARE_EMAIL.search(item)
        if found:
            email = _clean_email(found.group(0))
    if email and name.lower() == email:
        name = ""
    if not name and not email:
        return None
    return Address(name=name, email=email)


def parse_address_list(raw: str, defects: list[str], what: str) -> tuple[Address, ...]:
    """All mailboxes of an address header (raw 8-bit decoded first, 2047 per name)."""
    value = unfold(_raw_to_text(raw, defects, what))
    out: list[Address] = []
    for item in _merge_unquoted_commas(_split_addresses(value)):
        address = parse_address(item, defects, what)
        if address is not None:
            out.append(address)
    return tuple(out)


def _merge_unquoted_commas(items: list[str]) -> list[str]:
    """Glue "Ivanov, Ivan <i@x.ru>" back together: a piece without any address
    is the first half of a display name with an unquoted comma."""
    merged: list[str] = []
    carry: list[str] = []
    for item in items:
        if "@" not in item and "<" not in item and ":" not in item:
            carry.append(item)
            continue
        if carry and not _ANGLE_ADDR.match(item.strip()) and "<" in item:
            item = ", ".join([*carry, item])
        elif carry:
            merged.append(", ".join(carry))
        carry = []
        merged.append(item)
    if carry:
        merged.append(", ".join(carry))
    return merged


# ---------------------------------------------------------------- ids and dates

_MSGID = re.compile(r"<([^<>]*)>")


MAX_ID_CHARS = 998  # a header line; also the width of letters.message_id
MAX_IDS = 100  # References kept (the newest): threading needs a few, a query takes them all


def _clean_id(inner: str) -> str | None:
    """An id without whitespace or controls; None when empty or longer than a header line.

    A NUL or a 2 KB id would be refused by the database (PostgreSQL text holds no
    NUL; the column is 998 wide), and a refused letter would stay pending forever.
    """
    inner = _CONTROLS.sub("", "".join(inner.split()))
    if not inner or len(inner) + 2 > MAX_ID_CHARS:
        return None
    return f"<{inner}>"


def parse_message_id(raw: str) -> str | None:
    """The first "<...>" id; a bare token is wrapped; blank gives None."""
    value = unfold(raw).strip()
    match = _MSGID.search(value)
    if match:
        return _clean_id(match.group(1))
    token = value.split()[0] if value.split() else ""
    return _clean_id(token.strip("<>"))


def parse_id_list(
    raw: str, defects: list[str] | None = None, what: str = "References"
) -> tuple[str, ...]:
    """The "<...>" ids in order, tolerating junk between them; no duplicates.

    Only the last MAX_IDS are kept (the newest of a thread): a hostile header of
    a hundred thousand ids must not cost a quadratic scan or a query with more
    parameters than the database takes.
    """
    value = unfold(raw)
    found = [m.group(1) for m in _MSGID.finditer(value)]
    if not found:
        found = [t for t in re.split(r"[\s,]+", value) if "@" in t]
    ids = tuple(dict.fromkeys(c for c in map(_clean_id, found) if c))
    if len(ids) > MAX_IDS:
        if defects is not None:
            defects.append(f"{what}: {len(ids)} ids, kept the last {MAX_IDS}")
        ids = ids[-MAX_IDS:]
    return ids


_RU_MONTHS = {
    "янв": "Jan", "фев": "Feb", "мар": "Mar", "апр": "Apr", "мая": "May", "май": "May",
    "июн": "Jun", "июл": "Jul", "авг": "Aug", "сен": "Sep", "окт": "Oct", "ноя": "Nov",
    "дек": "Dec",
}  # fmt: skip
_RU_MONTH_RE = re.compile("(" + "|".join(_RU_MONTHS) + r")[а-я]*\.?", re.IGNORECASE)


# Zones parsedate_tz does not know but Russian servers write.
_ZONE_OFFSETS = {
    "MSK": "+0300", "MSD": "+0400", "SAMT": "+0400", "YEKT": "+0500", "OMST": "+0600",
    "NOVT": "+0700", "KRAT": "+0700", "IRKT": "+0800", "YAKT": "+0900", "VLAT": "+1000",
    "MAGT": "+1100", "PETT": "+1200", "EET": "+0200", "EEST": "+0300", "CET": "+0100",
    "CEST": "+0200", "BST": "+0100", "IST": "+0530",
}  # fmt: skip
_ZONE_NAME = re.compile(r"(?<=\d )(" + "|".join(_ZONE_OFFSETS) + r")\b", re.IGNORECASE)


def parse_date(raw: str, defects: list[str]) -> datetime | None:
    """Aware datetime from a Date header; UTC assumed when no zone is given."""
    value = collapse(unfold(raw))
    if not value:
        return None
    value = _RU_MONTH_RE.sub(lambda m: _RU_MONTHS[m.group(1).lower()[:3]], value)
    value = re.sub(r"^[^\d,]*,\s*", "", value)  # weekday in any language
    value = _ZONE_NAME.sub(lambda m: _ZONE_OFFSETS[m.group(1).upper()], value)
    parsed = email_utils.parsedate_tz(value)
    if parsed is None:
        defects.append(f"Date header unparseable: {value[:80]!r}")
        return None
    year, month, day, hour, minute, second = parsed[:6]
    offset = parsed[9]
    if offset is None:
        defects.append(f"Date header has no time zone, UTC assumed: {value[:80]!r}")
    try:
        tz = UTC if offset is None else timezone(timedelta(seconds=offset))
        return datetime(year, month, day, hour, minute, second, tzinfo=tz)
    except (ValueError, OverflowError):
        defects.append(f"Date header out of range: {value[:80]!r}")
        return None


# -------------------------------------------------------------------- parameters

_PARAM_2231 = re.compile(r"^([^*]+)(?:\*(\d+))?(\*)?$")


def _split_params(value: str) -> list[str]:
    """Split a structured header on ';' outside quotes."""
    parts: list[str] = []
    buf: list[str] = []
    quoted = False
    escape = False
    for ch in value:
        if escape:
            buf.append(ch)
            escape = False
            continue
        if ch == "\\" and quoted:
            escape = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    parts.append("".join(buf))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    elif value.startswith('"'):
        value = value[1:]
    return value


def parse_structured(raw: str, defects: list[str], what: str) -> tuple[str, dict[str, str]]:
    """Value and parameters of Content-Type / Content-Disposition (RFC 2231, 2047)."""
    pieces = _split_params(unfold(raw))
    head = pieces[0].strip()
    if " " in head or "\t" in head:  # "text/plain charset=utf-8": a lost ';'
        head, _, rest = head.replace("\t", " ").partition(" ")
        pieces.insert(1, rest)
        defects.append(f"{what}: missing ';' in {collapse(raw)[:60]!r}")
    main = head.lower()
    simple: dict[str, str] = {}
    continued: dict[str, dict[int, tuple[str, bool]]] = {}
    for piece in pieces[1:]:
        if "=" not in piece:
            continue
        key, _, val = piece.partition("=")
        key = key.strip().lower()
        match = _PARAM_2231.match(key) if "*" in key else None
        if match:
            name, index, star = match.group(1), match.group(2), match.group(3)
            continued.setdefault(name, {})[int(index or 0)] = (_unquote(val), bool(star))
        elif key and key not in simple:
            simple[key] = _unquote(val)
    params = {
        k: v if k == "boundary" else decode_header(v, defects, f"{what} {k}")
        for k, v in simple.items()
    }
    for name, sections in continued.items():
        params[name] = _join_2231(sections, defects, f"{what} {name}")
    return main, params


def _join_2231(sections: dict[int, tuple[str, bool]], defects: list[str], what: str) -> str:
    """Join RFC 2231 continuations; the charset of section 0 decodes encoded ones."""
    charset = ""
    data = bytearray()
    order = sorted(sections)
    for index in order:
        value, encoded = sections[index]
        raw = value.encode("utf-8", "surrogateescape")
        if encoded:
            if index == order[0] and raw.count(b"'") >= 2:
                charset_raw, _lang, raw = raw.split(b"'", 2)
                charset = charset_raw.decode("ascii", "replace")
            data += unquote_to_bytes(raw)
        else:
            data += raw
    return decode_bytes(bytes(data), charset or "utf-8", what, defects)


# ---------------------------------------------------------------------- filenames

_RESERVED_NAMES = frozenset(
    ["con", "prn", "aux", "nul", "clock$", "conin$", "conout$"]
    + [f"com{i}" for i in range(10)]
    + [f"lpt{i}" for i in range(10)]
)
_UNSAFE_CHARS = re.compile(r'[<>:"|?*\\/]')
_EXTENSIONS = {
    "image/png": ".png", "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/pjpeg": ".jpg",
    "image/gif": ".gif", "image/bmp": ".bmp", "image/tiff": ".tif", "image/webp": ".webp",
    "image/svg+xml": ".svg", "image/heic": ".heic", "application/pdf": ".pdf",
    "application/zip": ".zip", "application/x-zip-compressed": ".zip",
    "application/x-rar-compressed": ".rar", "application/vnd.rar": ".rar",
    "application/x-7z-compressed": ".7z", "application/msword": ".doc",
    "application/vnd.ms-excel": ".xls", "application/rtf": ".rtf", "text/rtf": ".rtf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "application/vnd.oasis.opendocument.text": ".odt",
    "application/vnd.oasis.opendocument.spreadsheet": ".ods",
    "application/xml": ".xml", "text/xml": ".xml", "application/json": ".json",
    "text/plain": ".txt", "text/html": ".html", "text/csv": ".csv", "text/calendar": ".ics",
    "text/x-vcard": ".vcf", "text/vcard": ".vcf", "message/rfc822": ".eml",
    "message/delivery-status": ".txt", "message/disposition-notification": ".txt",
    "text/rfc822-headers": ".txt", "application/ms-tnef": ".dat",
    "application/pkcs7-signature": ".p7s", "application/x-pkcs7-signature": ".p7s",
    "application/pgp-signature": ".asc", "application/octet-stream": ".bin",
}  # fmt: skip
MAX_FILENAME = 150


def guess_extension(content_type: str) -> str:
    """File extension for a content type (own table: `mimetypes` reads system files)."""
    return _EXTENSIONS.get(content_type, ".bin")


def sanitize_filename(name: str, content_type: str, index: int) -> str:
    """A filename safe to show and to store: no paths, controls, dot-files or DOS devices."""
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(
        ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")
    )
    name = _UNSAFE_CHARS.sub("_", name)
    name = _WSP_RUN.sub(" ", name).strip().lstrip(".").strip().rstrip(". ")
    if not name or not name.strip("._- "):
        return f"attachment-{index}{guess_extension(content_type)}"
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 16 or not stem:
        stem, ext = name, ""
    if stem.split(".")[0].strip().lower() in _RESERVED_NAMES:
        stem = "_" + stem
    suffix = f".{ext}" if ext else ""
    stem = stem[: MAX_FILENAME - len(suffix)].rstrip(". ") or f"attachment-{index}"
    return stem + suffix


# -------------------------------------------------------------------------- text

_FLOWED_QUOTE = re.compile(r"^(>+)")


def unflow(text: str, delsp: bool) -> str:
    """RFC 3676 format=flowed: join soft-broken lines, keep quote depth markers."""
    out: list[str] = []
    buf: list[str] = []  # pieces of the open paragraph (joined once: linear time)
    buf_depth = -1
    for line in text.split("\n"):
        match = _FLOWED_QUOTE.match(line)
        depth = len(match.group(1)) if match else 0
        content = line[depth:]
        if content.startswith(" "):
            content = content[1:]  # space-stuffing
        if buf and depth != buf_depth:
            out.append(_quote_prefix(buf_depth) + "".join(buf))
            buf = []
        if content.endswith(" ") and content != "-- ":  # soft break: paragraph goes on
            buf.append(content[:-1] if delsp else content)
            buf_depth = depth
            continue
        out.append(_quote_prefix(depth) + "".join(buf) + content)
        buf = []
    if buf:
        out.append(_quote_prefix(buf_depth) + "".join(buf))
    return "\n".join(out)


def _quote_prefix(depth: int) -> str:
    return ">" * depth + " " if depth else ""


_MANY_BLANK = re.compile(r"\n{3,}")


def tidy_text(text: str) -> str:
    """Newlines as "\\n", no trailing spaces, no NULs or other controls, no edge blanks."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\ufeff", "").replace("\u00a0", " ").replace("\u200b", "")
    text = _strip_controls(text.replace("\f", "\n").replace("\x00", ""))
    text = "\n".join(line.rstrip() for line in text.split("\n"))  # a regex is quadratic here
    text = _MANY_BLANK.sub("\n\n", text)
    return text.strip("\n")


_INVISIBLE_START = re.compile(r"<!--|<(style|script|head|title|xml)\b", re.IGNORECASE)
_INVISIBLE_END = {
    name: re.compile(rf"</{name}\s*>", re.IGNORECASE)
    for name in ("style", "script", "head", "title", "xml")
}
_IMPLICITLY_CLOSED = frozenset(["head", "title", "xml"])
_BODY_START = re.compile(r"<body\b", re.IGNORECASE)
_HTML_TAG = re.compile(r"<[^<>]{0,2000}>")
_HTML_ENTITY = re.compile(r"&(#?\w{1,10});?")
_MSO_PARAGRAPH = re.compile(r"<p(?=[\s>])(?=[^<>]{0,400}?\bclass=[\"']?Mso)", re.IGNORECASE)
_NBSP = re.compile(r"&nbsp;?|&#160;|&#x0*a0;|\u00a0", re.IGNORECASE)
_NBSP_MARK = "\ue000"  # private-use stand-in: inscriptis would swallow a lone &nbsp;


def drop_invisible(html: str) -> str:
    """Remove comments and style/script/head/title/xml elements.

    A search loop rather than one regex with a lazy body: an unterminated
    comment would otherwise be rescanned for every later '<!--' (quadratic).
    """
    out: list[str] = []
    pos = 0
    while True:
        match = _INVISIBLE_START.search(html, pos)
        if match is None:
            out.append(html[pos:])
            break
        out.append(html[pos : match.start()])
        name = match.group(1)
        if name is None:
            end = html.find("-->", match.end())
            stop = end + 3 if end >= 0 else -1
        else:
            close = _INVISIBLE_END[name.lower()].search(html, match.end())
            stop = close.end() if close else -1
            if stop < 0 and name.lower() in _IMPLICITLY_CLOSED:
                body = _BODY_START.search(html, match.end())  # <head> ends where <body> starts
                stop = body.start() if body else html.find(">", match.end()) + 1 or -1
        if stop < 0:  # unterminated comment, style or script: browsers hide the rest too
            break
        pos = stop
    return "".join(out)


def html_estimate(html: str) -> str:
    """Cheap tag-stripped text of HTML, only to compare lengths of alternatives."""
    text = _HTML_TAG.sub(" ", drop_invisible(html))
    return _HTML_ENTITY.sub(" ", text)


_INSCRIPTIS_CONFIG: list[object] = []


def _inscriptis_config() -> object:
    """One shared ParserConfig: building it deep-copies the CSS profile (slow)."""
    if not _INSCRIPTIS_CONFIG:
        from inscriptis.css_profiles import CSS_PROFILES
        from inscriptis.model.config import ParserConfig

        _INSCRIPTIS_CONFIG.append(
            ParserConfig(
                css=CSS_PROFILES["strict"],
                annotation_rules={"blockquote": ["quote"]},
            )
        )
    return _INSCRIPTIS_CONFIG[0]


def html_to_text(html: str, defects: list[str], what: str) -> str:
    """Readable text of HTML via inscriptis; blockquotes become '>'-prefixed lines.

    Outlook's ``MsoNormal`` paragraphs get zero margins (as Outlook renders
    them) and ``&nbsp;`` survives as a space, so blank-line paragraphs stay.
    """
    from inscriptis import get_annotated_text

    cleaned = _strip_controls(drop_invisible(html))
    cleaned = _MSO_PARAGRAPH.sub('<p style="margin-top:0em;margin-bottom:0em"', cleaned)
    cleaned = _NBSP.sub(_NBSP_MARK, cleaned)
    if not cleaned.strip():
        return ""
    try:
        result = get_annotated_text(cleaned, _inscriptis_config())
    except Exception as exc:  # lxml rejects some garbage; fall back to stripping tags
        defects.append(f"{what}: HTML not parseable ({type(exc).__name__}), tags stripped")
        return _HTML_TAG.sub(" ", cleaned).replace(_NBSP_MARK, " ")
    text = str(result.get("text", "")).replace(_NBSP_MARK, " ")
    spans = [(int(s), int(e)) for s, e, _label in result.get("label", [])]
    return _quote_lines(text, spans)


def _quote_lines(text: str, spans: list[tuple[int, int]]) -> str:
    """Prefix each line with one '>' per blockquote span covering it."""
    lines = text.split("\n")
    if not spans:
        return "\n".join(line.strip() for line in lines)
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    for line in lines:
        starts.append(pos)
        ends.append(pos + len(line))
        pos += len(line) + 1
    change = [0] * (len(lines) + 1)  # difference array: spans x lines would be quadratic
    for span_start, span_end in spans:
        first = bisect.bisect_right(ends, span_start)
        last = bisect.bisect_left(starts, span_end) - 1
        if first <= last:
            change[first] += 1
            change[last + 1] -= 1
    out: list[str] = []
    depth = 0
    for index, line in enumerate(lines):
        depth += change[index]
        stripped = line.strip()
        out.append(">" * depth + " " + stripped if depth and stripped else stripped)
    return "\n".join(out)


# -------------------------------------------------------------------------- walk

_STUB_MARKERS = (
    "html format", "html-format", "формате html", "формат html", "для просмотра",
    "to view this", "view this message", "не поддерживает html", "does not support html",
    "html version", "html-верси", "html message", "html-сообщ", "enable html",
)  # fmt: skip


@dataclass
class _Piece:
    """One body candidate: decoded source text and whether it is HTML."""

    source: str
    is_html: bool
    flowed: bool = False
    delsp: bool = False
    what: str = ""


@dataclass
class _Context:
    """Mutable state of one letter's walk: collected notes, files and forwards."""

    limits: ParseLimits
    budget: _Budget
    defects: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    forwarded: list[ParsedLetter] = field(default_factory=list)
    cids: set[str] = field(default_factory=set)
    named_texts: list[_Node] = field(default_factory=list)  # body candidates if nothing else


@dataclass
class _Budget:
    """Parts split so far, shared by a letter and every letter forwarded inside it."""

    limits: ParseLimits
    parts: int = 0

    def reserve(self, count: int) -> None:
        """Refuse before splitting `count` more parts when that passes the limit.

        Called with all delimiters of one multipart at once, so a flat letter of
        100 000 parts is refused before any of them is parsed, with its count.
        """
        if self.parts + count > self.limits.max_parts:
            raise LetterUnreadable(
                "parse",
                f"letter has {self.parts + count} MIME parts; limit is {self.limits.max_parts}",
            )

    def check_header_size(self, size: int) -> None:
        """Refuse a header section (of the letter or of any part) beyond the limit."""
        if size > self.limits.max_header_bytes:
            raise LetterUnreadable(
                "parse", f"header section is {size} bytes; limit is {self.limits.max_header_bytes}"
            )

    def take(self, depth: int) -> None:
        """Account for one more MIME entity at `depth`; refuse beyond the limits."""
        self.reserve(1)
        self.parts += 1
        if depth > self.limits.max_depth:
            raise LetterUnreadable(
                "parse", f"MIME parts nested {depth} deep; limit is {self.limits.max_depth}"
            )


# RFC 2045 tokens, each at most 127 long (RFC 6838): anything else (a NUL, a 300-byte
# name) is no type, and would not fit the attachments.content_type column either.
_MIME_TOKEN = r"[!#$%&'*+\-.^_`{|}~0-9a-z]{1,127}"
_MIME_TYPE = re.compile(f"{_MIME_TOKEN}/{_MIME_TOKEN}")


class _PartInfo:
    """Decoded MIME headers of one part, looked up once."""

    __slots__ = ("content_id", "content_type", "cte", "disposition", "filename", "params")

    def __init__(self, node: _Node, defects: list[str], what: str) -> None:
        raw = node.first("content-type", defects, what)
        params: dict[str, str] = {}
        if raw is None:
            ctype = ""
        else:
            ctype, params = parse_structured(raw, defects, what)
        if _MIME_TYPE.fullmatch(ctype) is None:
            if raw is not None and raw.strip():
                defects.append(f"{what}: malformed Content-Type {collapse(raw)[:60]!r}")
            ctype = "message/rfc822" if node.digest_child else "text/plain"
        self.content_type = ctype
        self.params = params
        disp_raw = node.first("content-disposition", defects, what)
        disp, dparams = ("", {}) if disp_raw is None else parse_structured(disp_raw, defects, what)
        self.disposition = disp
        self.filename = dparams.get("filename") or params.get("name") or ""
        cte_raw = node.first("content-transfer-encoding", defects, what)
        self.cte = collapse(cte_raw).split(";")[0].strip().lower() if cte_raw else ""
        cid_raw = node.first("content-id", defects, what)
        self.content_id = parse_message_id(cid_raw) if cid_raw else None


# --------------------------------------------------------------------- structure
#
# Our own splitter instead of the stdlib feed parser: it finds boundaries with
# bytes.find instead of reading line by line (3-4x faster on letters with
# attachments), never recurses deeper than the depth limit, and keeps every
# body as the exact bytes received.

_HEADER_END = re.compile(rb"\r\n\r\n|\n\r?\n|\r\r")
_LINE_SPLIT = re.compile(rb"(\r\n|\n|\r)")
_HEADER_NAME = re.compile(rb"([!-9;-~]{1,200})[ \t]*:")


@dataclass
class _Node:
    """One MIME entity: headers as received, body still transfer-encoded, children."""

    headers: list[tuple[str, str]]  # (name, folded value); raw 8-bit bytes as surrogates
    body: bytes
    path: str
    depth: int
    digest_child: bool = False
    defects: list[str] = field(default_factory=list)
    children: list[_Node] | None = None  # set once a multipart has been split
    info: _PartInfo | None = None
    related: bool = False  # a non-root part of multipart/related: an embedded resource

    def first(self, name: str, defects: list[str], what: str) -> str | None:
        """Folded value of the first header `name`, raw 8-bit decoded (no RFC 2047)."""
        for key, value in self.headers:
            if key.lower() == name:
                return _raw_to_text(value, defects, what)
        return None

    def raw_first(self, name: str) -> str | None:
        """The first header `name` exactly as received (raw bytes as surrogates)."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    @property
    def what(self) -> str:
        return f"part {self.path}" if self.path else "body"

    @property
    def part_info(self) -> _PartInfo:
        if self.info is None:
            self.info = _PartInfo(self, self.defects, self.what)
        return self.info


def _ascii(data: bytes) -> str:
    return data.decode("ascii", "surrogateescape")


def _split_headers(
    data: bytes, what: str, limit: int, start: int = 0, stop: int | None = None
) -> tuple[list[tuple[str, str]], bytes, list[str]]:
    """Header fields and body of the entity at data[start:stop], tolerant like a mail client.

    A line that is neither a field nor a continuation ends the header section
    (the body then starts with it); an mbox "From " line on top is skipped.
    Nothing past `limit` bytes is split into lines: a header section that long is
    refused by the caller anyway, and splitting 50 MB of short lines (or a body
    with no blank line above it) first would cost gigabytes.  The entity is read in
    place and only its body copied, so a part of a big letter is copied once.
    """
    defects: list[str] = []
    stop = len(data) if stop is None else stop
    if data[start : start + 1] in (b"\r", b"\n"):  # no header fields at all
        skip = 2 if data.startswith(b"\r\n", start) else 1
        return [], data[start + skip : stop], defects
    end = _HEADER_END.search(data, start, min(stop, start + limit + 4))
    cut = end is None and stop - start > limit
    if end is not None:
        block, body = data[start : end.start()], data[end.end() : stop]
    else:  # no blank line within the limit: body, if any, begins at a non-header line
        block, body = data[start : min(stop, start + limit + 1)], b""
    tokens = _LINE_SPLIT.split(block)
    fields: list[tuple[bytes, list[bytes]]] = []  # name, value lines (joined once: linear)
    offset = 0
    for index in range(0, len(tokens), 2):
        line = tokens[index]
        sep = tokens[index + 1] if index + 1 < len(tokens) else b""
        if line[:1] in (b" ", b"\t"):
            if fields:
                fields[-1][1].append(line)
            elif line.strip():
                defects.append(f"{what}: first header line is a continuation")
        elif match := _HEADER_NAME.match(line):
            fields.append((match.group(1), [line[match.end() :].lstrip(b" \t")]))
        elif not (index == 0 and line.startswith(b"From ")) and line:
            if fields:
                defects.append(f"{what}: no blank line between headers and body")
            # a line cut short by the limit may be a header: then the section is too long
            body = data[start + offset : stop] if sep or not cut else b""
            break
        offset += len(line) + len(sep)
    headers = [(_ascii(name), _ascii(b"\r\n".join(lines))) for name, lines in fields]
    return headers, body, defects


def _parse_entity(
    data: bytes,
    path: str,
    depth: int,
    budget: _Budget,
    digest_child: bool = False,
    start: int = 0,
    stop: int | None = None,
) -> _Node:
    """Split the entity at data[start:stop] and, for a multipart, its children (recursively)."""
    budget.take(depth)
    what = f"part {path}" if path else "body"
    stop = len(data) if stop is None else stop
    limit = budget.limits.max_header_bytes
    headers, body, defects = _split_headers(data, what, limit, start, stop)
    budget.check_header_size(stop - start - len(body))
    node = _Node(headers, body, path, depth, digest_child, defects)
    ctype = node.part_info.content_type
    if ctype.startswith("multipart/"):
        boundary = _boundary(node)
        if boundary is None:
            node.defects.append(f"{what}: multipart without boundary parameter")
        else:
            _split_children(node, boundary, budget)
            if node.children is None:
                node.defects.append(f"{what}: declared boundary never found")
        if node.children is None:
            sniffed = _sniff_boundary(node.body)
            if sniffed is not None:
                _split_children(node, sniffed, budget)
                if node.children is not None:
                    node.defects.append(f"{what}: used the boundary found in the body")
        if node.children is not None:
            node.body = b""  # the children hold copies: a 50 MB letter is not kept twice
    return node


def _boundary(node: _Node) -> bytes | None:
    """The boundary parameter as the exact bytes the body uses."""
    raw = node.raw_first("content-type")
    if raw is None:
        return None
    _main, params = parse_structured(raw, [], "")
    boundary = params.get("boundary", "")
    return boundary.encode("utf-8", "surrogateescape") if boundary else None


_SNIFF_BOUNDARY = re.compile(rb"^--([!-~][ -~]{0,198}[!-~])[ \t]*\r?\n[\w-]{1,60}:", re.MULTILINE)


def _sniff_boundary(body: bytes) -> bytes | None:
    """A delimiter-looking line followed by a header: the boundary the sender really used."""
    match = _SNIFF_BOUNDARY.search(body)
    if match is None:
        return None
    boundary = match.group(1)
    return boundary[:-2] if boundary.endswith(b"--") else boundary


def _delimiters(body: bytes, boundary: bytes) -> list[tuple[int, int, bool]]:
    """(line start, content start, is close) of each delimiter line of `boundary`."""
    marker = b"--" + boundary
    found: list[tuple[int, int, bool]] = []
    size = len(body)
    pos = 0
    while (at := body.find(marker, pos)) >= 0:
        pos = at + 1
        if at > 0 and body[at - 1] not in (10, 13):
            continue
        stop = at + len(marker)
        close = body.startswith(b"--", stop)
        stop += 2 if close else 0
        while stop < size and body[stop] in (32, 9):
            stop += 1
        if stop < size and body[stop] not in (10, 13):
            continue
        start = at
        if start > 0 and body[start - 1] == 10:
            start -= 1
        if start > 0 and body[start - 1] == 13:
            start -= 1
        stop += 2 if body.startswith(b"\r\n", stop) else (1 if stop < size else 0)
        found.append((start, stop, close))
        if close:
            break
    return found


def _split_children(node: _Node, boundary: bytes, budget: _Budget) -> None:
    """Cut a multipart body at its delimiter lines and parse each part."""
    marks = _delimiters(node.body, boundary)
    opening = [m for m in marks if not m[2]]
    if not opening:
        return
    budget.reserve(len(opening))
    if not marks[-1][2]:
        node.defects.append(f"{node.what}: missing end boundary")
    digest = node.part_info.content_type == "multipart/digest"
    prefix = f"{node.path}." if node.path else ""
    children: list[_Node] = []
    for index, (_start, content, close) in enumerate(marks):
        if close:
            break
        end = marks[index + 1][0] if index + 1 < len(marks) else len(node.body)
        child_path = f"{prefix}{len(children) + 1}"
        children.append(
            _parse_entity(node.body, child_path, node.depth + 1, budget, digest, content, end)
        )
    node.children = children


_IDENTITY_ENCODINGS = frozenset(["", "7bit", "8bit", "binary", "7-bit", "8-bit", "none"])
_BASE64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \t\r\n"


def decode_transfer(data: bytes, cte: str, defects: list[str], what: str) -> bytes:
    """Undo Content-Transfer-Encoding, tolerating broken base64 and unknown labels."""
    if cte in _IDENTITY_ENCODINGS:
        return data
    if cte == "base64":
        if len(data.translate(None, _BASE64_CHARS)) * 20 > len(data) + 20:
            defects.append(f"{what}: labelled base64 but is not, kept as is")
            return data
        try:
            return b64_decode(data)
        except (binascii.Error, ValueError):
            defects.append(f"{what}: base64 body undecodable, kept as is")
            return data
    if cte == "quoted-printable":
        return binascii.a2b_qp(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
    if cte in ("x-uuencode", "uuencode", "x-uue"):
        defects.append(f"{what}: uuencoded body kept as is")
        return data
    defects.append(f"{what}: unknown transfer encoding {cte!r}, kept as is")
    return data


_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?([\w-]+)", re.IGNORECASE)


# Bytes of a text part read per character of body text kept: room for HTML markup
# and multi-byte charsets, so the cut below never shortens what the reader sees.
_SOURCE_BYTES_PER_CHAR = 10


def _text_of_part(node: _Node, info: _PartInfo, ctx: _Context) -> str:
    """Decoded text of a text/* leaf part (its first bytes only, when it is huge)."""
    data = decode_transfer(node.body, info.cte, ctx.defects, node.what)
    charset = info.params.get("charset", "")
    if not charset and info.content_type == "text/html":
        meta = _META_CHARSET.search(data[:4096])
        if meta:
            charset = meta.group(1).decode("ascii", "replace")
    limit = ctx.limits.max_text_chars * _SOURCE_BYTES_PER_CHAR
    data = _cut_source(data, limit, charset, ctx.defects, node.what)
    text = decode_bytes(data, charset or None, node.what, ctx.defects)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _cut_source(data: bytes, limit: int, charset: str, defects: list[str], what: str) -> bytes:
    """At most `limit` bytes, cut after a line break when there is one in the second half.

    Decoding 50 MB of text (and rendering it, and running every rule over it) costs
    gigabytes; the letter's own words are at its top.
    """
    if len(data) <= limit:
        return data
    stop = data.rfind(b"\n", limit // 2, limit) + 1 or limit
    if "16" in charset or "32" in charset:  # UTF-16/32: keep whole code units
        stop -= stop % 4
    defects.append(f"{what}: text part is {len(data)} bytes, read the first {stop}")
    return data[:stop]


def _is_body_text(info: _PartInfo, top: bool) -> bool:
    """text/plain or text/html that is not marked or named as a file.

    A single-part letter's text is its body even when the sender named it.
    """
    if info.content_type not in ("text/plain", "text/html"):
        return False
    if info.disposition == "attachment":
        return False
    return top or not info.filename


_CID_REF = re.compile(r"cid:([^\"'\s>)]{1,300})", re.IGNORECASE)


def _walk(node: _Node, ctx: _Context) -> list[_Piece]:
    """Collect body pieces of `node`; attachments and forwarded letters go to `ctx`."""
    info = node.part_info
    ctx.defects.extend(node.defects)
    ctype = info.content_type
    if node.children is not None:
        return _walk_multipart(node, info, ctx)
    if ctype.startswith("multipart/"):
        ctx.defects.append(f"{node.what}: {ctype} without parts, read as text")
        return [_Piece(_text_of_part(node, info, ctx), False, what=node.what)]
    if ctype in ("message/rfc822", "message/global", "text/rfc822-headers"):
        _forward(node, info, ctx)
        return []
    if _is_body_text(info, top=node.path == ""):
        text = _text_of_part(node, info, ctx)
        if ctype == "text/html":
            ctx.cids.update(m.lower() for m in _CID_REF.findall(text))
            return [_Piece(text, True, what=node.what)]
        fmt = info.params.get("format", "").lower()
        delsp = info.params.get("delsp", "").lower() == "yes"
        return [_Piece(text, False, flowed=fmt == "flowed", delsp=delsp, what=node.what)]
    if info.content_type in ("text/plain", "text/html") and info.disposition != "attachment":
        ctx.named_texts.append(node)
    _add_attachment(node, info, ctx)
    return []


def _fallback_body(ctx: _Context) -> list[_Piece]:
    """A letter whose only text came as a named inline file (some generated mail)."""
    for node in ctx.named_texts:
        info = node.part_info
        text = _text_of_part(node, info, ctx)
        if text.strip():
            return [_Piece(text, info.content_type == "text/html", what=node.what)]
    return []


def _walk_multipart(node: _Node, info: _PartInfo, ctx: _Context) -> list[_Piece]:
    """Dispatch on the multipart subtype."""
    children = node.children or []
    if info.content_type == "multipart/alternative":
        candidates = [_walk(child, ctx) for child in children]
        return _choose_alternative([c for c in candidates if c])
    if info.content_type == "multipart/related":
        root = _related_root(children, info.params.get("start"))
        pieces: list[_Piece] = []
        for index, child in enumerate(children):
            child.related = index != root
            got = _walk(child, ctx)
            if index == root:
                pieces = got
        return pieces
    pieces = []
    for child in children:
        pieces.extend(_walk(child, ctx))
    return pieces


def _related_root(children: list[_Node], start: str | None) -> int:
    """Index of the root of multipart/related: the `start` parameter, else the first."""
    if start:
        wanted = parse_message_id(start)
        for index, child in enumerate(children):
            if child.part_info.content_id == wanted:
                return index
    return 0


def _choose_alternative(candidates: list[list[_Piece]]) -> list[_Piece]:
    """Plain text normally; HTML when the plain part is empty, a stub or truncated."""
    if not candidates:
        return []
    plain = next((c for c in candidates if not any(p.is_html for p in c)), None)
    html = next((c for c in reversed(candidates) if any(p.is_html for p in c)), None)
    if plain is None or html is None:
        return candidates[-1] if plain is None else plain
    plain_text = " ".join(p.source for p in plain)
    plain_words = len(plain_text.split())
    html_words = len(" ".join(html_estimate(p.source) for p in html).split())
    if plain_words == 0:
        return html
    lowered = plain_text.lower()
    if plain_words < 40 and html_words > plain_words and any(m in lowered for m in _STUB_MARKERS):
        return html
    if html_words >= 30 and plain_words < html_words * 0.5:
        return html
    return plain


def _add_attachment(node: _Node, info: _PartInfo, ctx: _Context) -> None:
    """Record a leaf part as an attachment."""
    content = decode_transfer(node.body, info.cte, ctx.defects, node.what)
    index = len(ctx.attachments) + 1
    filename = sanitize_filename(info.filename, info.content_type, index)
    cid = info.content_id
    inline = info.disposition == "inline" or (
        node.related and cid is not None and info.disposition != "attachment"
    )
    ctx.attachments.append(
        Attachment(
            filename=filename,
            content_type=info.content_type,
            size=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            inline=inline,
            content_id=cid,
            content=content,
        )
    )


def _forward(node: _Node, info: _PartInfo, ctx: _Context) -> None:
    """message/rfc822 (or the headers of a returned letter): parse it into `forwarded`."""
    raw = decode_transfer(node.body, info.cte, ctx.defects, node.what)
    inner = _parse_entity(raw, "", node.depth + 1, ctx.budget)
    if not inner.headers and not raw.strip():
        ctx.defects.append(f"{node.what}: empty {info.content_type} part")
        return
    ctx.forwarded.append(_letter(inner, ctx.budget))


# ------------------------------------------------------------------------ letter


def _header_map(node: _Node, defects: list[str]) -> HeaderMap:
    """Lower-case name -> decoded, unfolded value of its first occurrence."""
    out: dict[str, str] = {}
    for key, value in node.headers:
        name = collapse(_raw_to_text(key, defects, "header name")).lower()
        if name not in out:
            out[name] = collapse(decode_header(unfold(value), defects, f"header {name}"))
    return HeaderMap(out)


def _letter(node: _Node, budget: _Budget) -> ParsedLetter:
    """Build a ParsedLetter from a split entity tree (also for forwarded letters)."""
    ctx = _Context(limits=budget.limits, budget=budget)
    defects = ctx.defects
    raw: dict[str, str] = {}
    noted_by_header_map: list[str] = []
    for key, value in node.headers:
        name = _raw_to_text(key, noted_by_header_map, "").lower()
        if name not in raw:
            raw[name] = _raw_to_text(value, noted_by_header_map, "")
    headers = _header_map(node, defects)
    pieces = _walk(node, ctx) or _fallback_body(ctx)
    text, from_html = _render(pieces, ctx)
    sender_list = parse_address_list(raw["from"], defects, "From") if "from" in raw else ()
    subject = headers.get("subject")  # decoded, unfolded, collapsed like every header
    attachments = tuple(_mark_referenced(a, ctx.cids) for a in ctx.attachments)
    return ParsedLetter(
        message_id=parse_message_id(raw["message-id"]) if "message-id" in raw else None,
        in_reply_to=parse_id_list(raw.get("in-reply-to", ""), defects, "In-Reply-To"),
        references=parse_id_list(raw.get("references", ""), defects, "References"),
        subject=subject,
        sender=sender_list[0] if sender_list else None,
        reply_to=parse_address_list(raw.get("reply-to", ""), defects, "Reply-To"),
        to=parse_address_list(raw.get("to", ""), defects, "To"),
        cc=parse_address_list(raw.get("cc", ""), defects, "Cc"),
        return_path=_return_path(raw.get("return-path")),
        date=parse_date(raw["date"], defects) if "date" in raw else None,
        headers=headers,
        content_type=node.part_info.content_type,
        text=text,
        html=from_html,
        attachments=attachments,
        forwarded=tuple(ctx.forwarded),
        defects=tuple(dict.fromkeys(scrub(d) for d in defects)),
    )


def _return_path(raw: str | None) -> str | None:
    """None when absent, "" for the null sender "<>", else the lower-cased address."""
    if raw is None:
        return None
    value = collapse(unfold(raw))
    match = _MSGID.search(value)
    inner = match.group(1) if match else value
    return "".join(inner.split()).lower()


def _mark_referenced(att: Attachment, cids: set[str]) -> Attachment:
    """An attachment referenced as cid: from the HTML is an inline image (whatever
    its Content-Disposition says: Outlook marks some of them "attachment")."""
    if att.inline or att.content_id is None:
        return att
    if att.content_id[1:-1].lower() in cids:
        return Attachment(
            att.filename,
            att.content_type,
            att.size,
            att.sha256,
            True,
            att.content_id,
            att.content,
        )
    return att


def _render(pieces: list[_Piece], ctx: _Context) -> tuple[str, bool]:
    """Turn the chosen body pieces into the final text, at most max_text_chars of it."""
    limit = ctx.limits.max_text_chars
    texts: list[str] = []
    from_html = False
    size = 0
    for piece in pieces:
        if size > limit:  # a thousand text parts: the rest would be cut anyway
            break
        if piece.is_html:
            from_html = True
            texts.append(html_to_text(piece.source, ctx.defects, piece.what))
        elif piece.flowed:
            texts.append(unflow(piece.source, piece.delsp))
        else:
            texts.append(piece.source)
        size += len(texts[-1])
    text = tidy_text("\n\n".join(tidy_text(t) for t in texts if t.strip()))
    cut = len(texts) < len(pieces)
    if len(text) > limit:
        stop = text.rfind("\n", limit // 2, limit)
        text = text[: stop if stop > 0 else limit].rstrip()
        cut = True
    if cut:
        ctx.defects.append(f"body text cut to its first {len(text)} characters")
    return text, from_html


def parse(raw: bytes, limits: ParseLimits = ParseLimits()) -> ParsedLetter:
    """Parse one letter; raises only LetterUnreadable (quarantine), never anything else."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise LetterUnreadable("parse", f"expected bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if len(raw) > limits.max_bytes:
        raise LetterUnreadable("parse", f"letter is {len(raw)} bytes; limit is {limits.max_bytes}")
    if not raw or raw.isspace():
        raise LetterUnreadable("parse", "letter is empty")
    try:
        budget = _Budget(limits)
        node = _parse_entity(raw, "", 0, budget)
        if not node.headers:
            raise LetterUnreadable("parse", "no header fields found")
        return _letter(node, budget)
    except LetterUnreadable:
        raise
    except RecursionError as exc:
        raise LetterUnreadable("parse", "MIME structure nested too deeply") from exc
    except Exception as exc:  # the contract: quarantine, never crash the daemon
        raise LetterUnreadable("parse", f"internal error {type(exc).__name__}: {exc}") from exc
