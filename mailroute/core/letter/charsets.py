"""Bytes of a declared (or undeclared, or wrongly declared) charset to text.

Russian mail arrives mislabelled: cp1251 declared as koi8-r, UTF-8 as us-ascii, UTF-8 that a
relay already decoded as cp1251 or latin-1.  A Russian letter-frequency score decides between
the candidates, so one short word is enough; each repair is written down in the defects.
Headers and bodies share this one decoder.
"""

from __future__ import annotations

import codecs
import math
import re
from collections import Counter

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
    "gb2312": "gb18030",  # clients label GBK text GB2312; GB18030 reads both
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
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


def guess_decode(data: bytes) -> tuple[str, str]:
    """Decode bytes of unknown charset; returns (text, codec).

    UTF-8 is taken when valid (8-bit text in another charset practically never
    is).  Between cp1251 and koi8-r the letter-frequency score decides; when it
    cannot (too few letters), charset-normalizer restricted to the charsets
    Russian mail really uses breaks the tie.
    """
    if _ISO2022JP_ESCAPE.search(data):
        japanese = decode_iso2022jp(data)
        if japanese is not None:
            return japanese, "iso-2022-jp"
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
    if max(s_1251, s_koi) < _SURELY_RUSSIAN:
        foreign = _foreign_guess(data)
        if foreign is not None:
            return foreign
    if abs(s_1251 - s_koi) >= 0.2 and max(_cyrillic_count(as_1251), _cyrillic_count(as_koi)) >= 2:
        return (as_1251, "cp1251") if s_1251 > s_koi else (as_koi, "koi8-r")
    if _normalizer_guess(data) == "koi8-r":
        return as_koi, "koi8-r"
    return as_1251, "cp1251"


# Russian prose scores about 2.0; below this a non-Cyrillic charset is asked about first.
_SURELY_RUSSIAN = 1.5
# Western European and East Asian charsets: "Formação" must not become "Formaзгo".
_FOREIGN_CHARSETS = ["cp1252", "shift_jis", "cp932", "euc_jp", "gb18030", "big5", "euc_kr"]


def _foreign_guess(data: bytes) -> tuple[str, str] | None:
    """charset-normalizer among the non-Cyrillic charsets; None when none fits (it then
    finds nothing for Russian text, which the Cyrillic scoring decides)."""
    from charset_normalizer import from_bytes

    try:
        match = from_bytes(data, cp_isolation=_FOREIGN_CHARSETS).best()
    except Exception:  # the guesser is a heuristic; never let it break parsing
        return None
    if match is None:
        return None
    codec = _codec_name(match.encoding) or match.encoding
    return data.decode(codec, "replace"), codec


# ISO-2022-JP shifts into JIS X 0208 with ESC $ B (or ESC $ @) and back with ESC ( B / J.
_ISO2022JP_ESCAPE = re.compile(rb"\x1b\$[B@]")
_ISO2022JP_SHIFT = re.compile(rb"\x1b(\$[B@]|\([BJI])")


def decode_iso2022jp(data: bytes) -> str | None:
    """ISO-2022-JP, with the NEC and IBM extensions mail clients send (①, Ⅱ, ㈱).

    Python's codec refuses those rows, so the JIS pairs are turned into Shift_JIS and
    read as cp932, as Windows clients do. None when the bytes are no ISO-2022-JP."""
    try:
        return data.decode("iso2022_jp")
    except UnicodeDecodeError:
        pass
    out = bytearray()
    mode = b"(B"
    pos = 0
    for shift in _ISO2022JP_SHIFT.finditer(data):
        out += _jis_to_sjis(data[pos : shift.start()], mode)
        mode, pos = shift.group(1), shift.end()
    out += _jis_to_sjis(data[pos:], mode)
    try:
        return bytes(out).decode("cp932")
    except UnicodeDecodeError:
        return None


def _jis_to_sjis(chunk: bytes, mode: bytes) -> bytes:
    if mode == b"(I":  # half-width katakana
        return bytes(b | 0x80 if 0x21 <= b <= 0x5F else b for b in chunk)
    if mode not in (b"$B", b"$@"):
        return chunk
    out = bytearray()
    for i in range(0, len(chunk) - 1, 2):
        j1, j2 = chunk[i], chunk[i + 1]
        s1 = ((j1 - 0x21) >> 1) + 0x81
        if s1 > 0x9F:
            s1 += 0x40
        # an odd first byte: the lower half of a Shift_JIS row, skipping 0x7F
        s2 = (j2 + 0x1F + (j2 >= 0x60)) if j1 & 1 else j2 + 0x7E
        out += bytes((s1 & 0xFF, s2 & 0xFF))
    return bytes(out)


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
        text, guessed = guess_decode(data)
        if not data.isascii():
            defects.append(f"{what}: unknown charset {charset.strip()!r}, guessed {guessed}")
        return text
    if codec is None or codec == "ascii":
        if data.isascii() and _ISO2022JP_ESCAPE.search(data):
            japanese = decode_iso2022jp(data)
            if japanese is not None:
                defects.append(f"{what}: no charset declared, read as iso-2022-jp")
                return japanese
        if data.isascii():
            return data.decode("ascii")
        text, guessed = guess_decode(data)
        label = "declared us-ascii" if codec else "no charset declared"
        defects.append(f"{what}: {label} but 8-bit content, guessed {guessed}")
        return text
    if codec == "iso2022_jp":
        japanese = decode_iso2022jp(data)
        if japanese is not None:
            return japanese
    try:
        text = data.decode(codec)
    except UnicodeDecodeError:
        text, guessed = guess_decode(data)
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


_GLUED = re.compile("[A-Za-z][\u0400-\u04ff]|[\u0400-\u04ff](?=[A-Za-z])")


def _glued_to_latin(text: str) -> bool:
    """Most Cyrillic letters touch a Latin one: Western text read with a Cyrillic charset
    (Russian prose mixes scripts by whole words, never inside one)."""
    cyrillic = _cyrillic_count(text)
    glued = len(_GLUED.findall(text, 0, _SCORE_SAMPLE))
    return glued >= 2 and glued * 2 >= cyrillic


def _check_cyrillic(
    data: bytes, text: str, codec: str, charset: str, what: str, defects: list[str]
) -> str:
    """A Cyrillic single-byte label decodes anything; switch only to clearly better Russian,
    or to cp1252 when the "Cyrillic" letters sit inside Latin words ("Formaзгo")."""
    high = len(data) - len(data.translate(None, _HIGH_BYTES))
    if high >= 8 and _looks_russian(text, high):
        return text
    if _glued_to_latin(text):
        defects.append(f"{what}: declared charset {charset} but content is cp1252")
        return data.decode("cp1252", "replace")
    if high < 8:
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
