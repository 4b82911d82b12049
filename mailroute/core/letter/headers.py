"""Header field values: RFC 2047 encoded words, raw 8-bit, RFC 2231 parameters, ids, dates.

Everything that turns the folded text of one header field into a value: unfolding and
whitespace, encoded words joined across a split multibyte character, Content-Type style
parameters with their continuations, Message-ID lists and dates in Russian servers' own
spellings.  Raw 8-bit header bytes arrive as surrogate escapes and are decoded by `charsets`.
"""

from __future__ import annotations

import binascii
import re
from datetime import UTC, datetime, timedelta, timezone
from email import utils as email_utils
from urllib.parse import unquote_to_bytes

from mailroute.core.letter.charsets import decode_bytes, guess_decode
from mailroute.core.letter.transfer import b64_decode

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*?)\?=")
_WSP_ONLY = re.compile(r"[ \t\r\n]*")
WSP_RUN = re.compile(r"\s+")
_FOLD = re.compile(r"\r?\n(?=[ \t])|\r(?=[ \t])")


def _q_decode(payload: str) -> bytes:
    """RFC 2047 Q: '_' is space, =XX hex; stray '=' stays as is."""
    raw = payload.replace("_", " ").encode("utf-8", "surrogateescape")
    return binascii.a2b_qp(raw)


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


def raw_to_text(raw: str, defects: list[str], what: str) -> str:
    """Text of header bytes carried as surrogate escapes: utf-8, else guessed."""
    if raw.isascii():
        return raw
    data = raw.encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        text, guessed = guess_decode(data)
        defects.append(f"{what}: raw 8-bit header, guessed {guessed}")
        return text


def decode_header(raw: str, defects: list[str], what: str = "header") -> str:
    """Decode an unfolded header value: RFC 2047 words, raw 8-bit, mixed text.

    Adjacent encoded words in the same charset are joined as bytes before
    decoding, so a multibyte character split across two words survives.
    """
    if "=?" not in raw:
        return raw_to_text(raw, defects, what)
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
            out.append(raw_to_text(gap, defects, what))
            out.append(raw_to_text(match.group(0), defects, what))
            defects.append(f"{what}: broken encoded word left as is")
            pos = match.end()
            continue
        joinable = pending and _WSP_ONLY.fullmatch(gap) is not None
        if joinable and charset.lower() == pending_charset.lower():
            pending.append(data)
        else:
            if not joinable:
                flush()
                out.append(raw_to_text(gap, defects, what))
            else:
                flush()
            pending_charset = charset
            pending.append(data)
        pos = match.end()
    flush()
    out.append(raw_to_text(raw[pos:], defects, what))
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
    if "\n" not in value and "\r" not in value:  # most fields are one line
        return value
    return _FOLD.sub("", value).replace("\r", " ").replace("\n", " ")


def collapse(text: str) -> str:
    """Single spaces, no leading/trailing whitespace, no control characters."""
    if text.isprintable() and "  " not in text:  # no controls, no whitespace but " "
        return text.strip(" ")
    return WSP_RUN.sub(" ", strip_controls(text)).strip()


CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def strip_controls(text: str) -> str:
    return CONTROLS.sub("", text)


MSGID = re.compile(r"<([^<>]*)>")
MAX_ID_CHARS = 998  # a header line; also the width of letters.message_id
MAX_IDS = 100  # References kept (the newest): threading needs a few, a query takes them all


def _clean_id(inner: str) -> str | None:
    """An id without whitespace or controls; None when empty or longer than a header line.

    A NUL or a 2 KB id would be refused by the database (PostgreSQL text holds no
    NUL; the column is 998 wide), and a refused letter would stay pending forever.
    """
    inner = CONTROLS.sub("", "".join(inner.split()))
    if not inner or len(inner) + 2 > MAX_ID_CHARS:
        return None
    return f"<{inner}>"


def parse_message_id(raw: str) -> str | None:
    """The first "<...>" id; a bare token is wrapped; blank gives None."""
    value = unfold(raw).strip()
    match = MSGID.search(value)
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
    found = [m.group(1) for m in MSGID.finditer(value)]
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


_PARAM_2231 = re.compile(r"^([^*]+)(?:\*(\d+))?(\*)?$")


_PARAM_SPECIALS = re.compile(r'[\\";]')


def _split_params(value: str) -> list[str]:
    """Split a structured header on ';' outside quotes (visiting only the characters
    that matter, as ``addresses._split_addresses`` does)."""
    if '"' not in value:
        return value.split(";")
    parts: list[str] = []
    start = 0
    quoted = False
    escaped_until = -1  # a backslash in a quoted string escapes what follows
    for found in _PARAM_SPECIALS.finditer(value):
        at = found.start()
        if at < escaped_until:
            continue
        ch = value[at]
        if ch == "\\":
            if quoted:
                escaped_until = at + 2
        elif ch == '"':
            quoted = not quoted
        elif not quoted:
            parts.append(value[start:at])
            start = at + 1
    parts.append(value[start:])
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
