"""Split a letter's text into the customer's new words, the signature and the history.

Only what the customer wrote now may decide a ticket: an organization or a number
inside a quoted or forwarded earlier letter is somebody else's. The split is::

    greeting    "Добрый день!", "Hello team," — neither request nor signature
    own         the new words: what the request says
    signature   from "-- ", a closing ("С уважением,", "Thanks,") or a trailing block
                of contact lines (name, position, organization, numbers) to the end
    quoted      ">" lines, attribution lines ("On … wrote:", "… пишет:",
                "18.11.2026, 10:15, "Имя" <a@b>:") and everything after a separator
                or a header block ("-----Original Message-----", "От:/Отправлено:/Кому:")

Pure: no IO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# --------------------------------------------------------------------------- history

# The tail takes each run of blanks, marks or dashes whole (possessive): three optional
# parts in a row let a run of blanks be shared between them every possible way.
_SEPARATOR = re.compile(
    r"^\s*(?:[-=_*]{2,}\s*)?(?:original message|исходное сообщение|оригинальное сообщение|"
    r"forwarded message|пересылаемое сообщение|пересланное сообщение|"
    r"переадресованное сообщение|перенаправленное сообщение|forwarded by\b.*+|"
    r"begin forwarded message|начало (?:переадресованного|пересылаемого) сообщения|"
    r"message d'origine|ursprüngliche nachricht)\s*+:?\s*+(?:[-=_*]{2,}+)?\s*+$",
    re.IGNORECASE,
)
_RULE_LINE = re.compile(r"^\s*[-_=]{5,}\s*$")
_HEADER_KEYS = (
    r"from|sent|date|to|cc|subject|reply-to|от|от кого|отправитель|отправлено|отправлен|"
    r"дата|кому|копия|тема|von|gesendet|an|betreff|de|envoyé|à|objet"
)
# Possessive blanks: each run of them is taken whole (the next part is never a blank), so a
# long run is not split between two of them every possible way.
_HEADER_LINE = re.compile(
    rf"^\s*+\*?(?:{_HEADER_KEYS})\s*+\*?\s*+:\s*+\*?\s*\S", re.IGNORECASE
)
_HEADER_FROM = re.compile(
    r"^\s*+\*?(?:from|от|от кого|отправитель|von|de)\s*+\*?\s*+:\s*+\*?\s*\S", re.IGNORECASE
)
_WROTE = re.compile(
    r"(?:wrote|writes|пишет|написал|написала|написал\(а\)|писал|писала|писал\(а\)|"
    r"schrieb|a écrit)\s*:\s*$",
    re.IGNORECASE,
)
_TIME = re.compile(r"\b\d{1,2}:\d{2}\b")
# Only whether there is one matters: an address found from inside a word is found from
# its start as well, so only starts of words are tried (every start of a long word,
# each scanning to its end, was quadratic).
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]++@[\w-]+(?:\.[\w-]+)+")
_QUOTE_MARK = re.compile(r"^\s*>")


def _is_attribution(line: str) -> bool:
    """An "On … wrote:" / "… пишет:" / "date, time, name <mail>:" line."""
    text = line.strip()
    if not text.endswith(":") or len(text) > 300:
        return False
    if _WROTE.search(text):
        return True
    has_who = bool(_EMAIL.search(text)) or " от " in text.casefold()
    return bool(_TIME.search(text)) and has_who


def _attribution_at(lines: list[str], i: int) -> int:
    """How many lines (0, 1 or 2) form an attribution starting at line ``i``."""
    if not lines[i].strip():
        return 0
    if _is_attribution(lines[i]):
        return 1
    if i + 1 < len(lines) and lines[i + 1].strip():
        joined = lines[i].rstrip() + " " + lines[i + 1].strip()
        starts_like = re.match(r"^\s*(?:on|am|le|в|\d)", lines[i], re.IGNORECASE)
        if starts_like and _is_attribution(joined) and len(lines[i]) < 200:
            return 2
    return 0


def _header_block_at(lines: list[str], i: int) -> bool:
    """A forwarded/quoted header block: From/От plus another header within six lines,
    or any three header lines close together ("Тема:/Дата:/От:/Кому:")."""
    if not _HEADER_LINE.match(lines[i]):
        return False
    window = [ln for ln in lines[i + 1 : i + 7] if ln.strip()]
    others = sum(1 for ln in window[:5] if _HEADER_LINE.match(ln))
    if _HEADER_FROM.match(lines[i]):
        return others >= 1
    return others >= 2


def _hard_break(lines: list[str], i: int) -> bool:
    return bool(_SEPARATOR.match(lines[i])) or _header_block_at(lines, i)


def _next_nonblank(lines: list[str], i: int) -> int | None:
    while i < len(lines):
        if lines[i].strip():
            return i
        i += 1
    return None


def _history_mask(lines: list[str]) -> list[bool]:
    """For each line: is it part of quoted or forwarded history?"""
    mask = [False] * len(lines)
    i = 0
    while i < len(lines):
        if _hard_break(lines, i):
            start = i
            previous = _previous_nonblank(lines, i)
            if previous is not None and _RULE_LINE.match(lines[previous]):
                start = previous
            for j in range(start, len(lines)):
                mask[j] = True
            return mask
        if _QUOTE_MARK.match(lines[i]):
            mask[i] = True
            i += 1
            continue
        span = _attribution_at(lines, i)
        if span:
            following = _next_nonblank(lines, i + span)
            if following is None or not _QUOTE_MARK.match(lines[following]):
                for j in range(i, len(lines)):
                    mask[j] = True
                return mask
            for j in range(i, i + span):
                mask[j] = True
            i += span
            continue
        i += 1
    return mask


def _previous_nonblank(lines: list[str], i: int) -> int | None:
    j = i - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    return j if j >= 0 else None


# --------------------------------------------------------------------------- greeting

_ADDRESSEE = (
    r"(?:team|all|everyone|support|support team|colleagues|there|sir|madam|sir or madam|"
    r"коллеги|команда|поддержка|техподдержка|служба поддержки|специалисты|друзья|"
    r"уважаемые коллеги|уважаемая поддержка)"
)
_GREETING_WORD = (
    r"(?:(?:добр\w+|доброго)\s+(?:день|дня|утро|утра|вечер|вечера|времени суток|ночи)|"
    r"доброе утро|здравствуй\w*|привет\w*|приветствую\w*|день добрый|"
    r"(?:уважаем\w+|дорог\w+)(?:\s+[^\s,!.:]+){1,3}|коллеги|"
    r"hello|hi|hey|dear(?:\s+[^\s,!.:]+){1,3}|good\s+(?:morning|afternoon|evening|day)|"
    r"greetings)"
)
_NAME_WORD = r"[A-ZА-ЯЁ][\w.-]*"
_NAME = rf"(?:{_NAME_WORD}(?:\s+{_NAME_WORD}){{0,2}})"
# After the greeting word, names are taken one word at a time: the loop already joins words
# with blanks, and a name of up to three words inside it let "Hello A A A … x" be split
# every possible way before failing (catastrophic backtracking). Same lines match.
_GREETING = re.compile(
    rf"^\s*(?:{_NAME}\s*,\s*)?(?i:{_GREETING_WORD})"
    rf"(?:[\s,]+(?:(?i:{_GREETING_WORD}|{_ADDRESSEE})|{_NAME_WORD}))*"
    rf"(?:\s*[!,.:]+|\s*$)"
)


def strip_greeting(lines: list[str]) -> tuple[str, list[str]]:
    """Remove up to two greeting lines (or a greeting opening the first line)."""
    greeting: list[str] = []
    rest = list(lines)
    for _ in range(2):
        first = _next_nonblank(rest, 0)
        if first is None:
            break
        match = _GREETING.match(rest[first])
        if not match or not _greeting_ok(match.group(0), rest[first]):
            break
        greeting.append(match.group(0).strip())
        remainder = rest[first][match.end() :].strip()
        rest = ([remainder] if remainder else []) + rest[first + 1 :]
        if remainder:
            break
    return "\n".join(greeting), rest


def _greeting_ok(matched: str, line: str) -> bool:
    """The case-insensitive name part must not eat ordinary words ("во вложении")."""
    tail = line[len(matched) :].strip()
    if tail and not re.search(r"[!,.:]\s*$", matched):
        return False
    words = re.findall(r"[^\s,!.:]+", matched)
    if re.match(r"\s*(?:уважаем|дорог|dear)", matched, re.IGNORECASE):
        # "Уважаемые коллеги!" but not "Дорогая программа не запускается."
        return len(words) <= 5 and bool(re.search(r"[!,:]\s*$", matched))
    return len(words) <= 7


# --------------------------------------------------------------------------- signature

# A closing: the phrase, punctuation, an optional name of up to three words, the end of the
# line. Where the phrase ends in a run of words ("с пожеланиями[\w ]*", "ваш\w*"), the name
# is either after the whole run or starts inside it; inside, only at the first letter of a
# word (a name starting later in that word is longer at its start), and every run and name
# word is taken whole. Trying the name from every letter of a long run, each reading the
# rest of its word, cost the line's length squared. The same lines are closings.
_CLOSING_NAME = r"[A-ZА-ЯЁ][\w.-]*+(?:\s++[A-ZА-ЯЁ][\w.-]*+){0,2}"
_CLOSING_END = r"\s*+[.!]?\s*+$"
_AFTER_CLOSING = rf"\s*+[,.!:;-]*+\s*+(?:{_CLOSING_NAME})?{_CLOSING_END}"
_NAME_IN_RUN = rf"(?:(?![A-ZА-ЯЁ])\w)*+{_CLOSING_NAME}{_CLOSING_END}"
_CLOSING_PHRASE = (
    r"с уважением|с наилучшими пожеланиями|всего доброго|всего хорошего|хорошего дня|"
    r"с благодарностью|"
    r"(?:большое |заранее |огромное )?спасибо(?: заранее| большое| за помощь| за ответ)?|"
    r"жду (?:вашего )?ответа|"
    r"(?:best|kind|warm|warmest|many|with)? ?regards|best wishes|best|cheers|sincerely|"
    r"yours (?:sincerely|faithfully|truly)|respectfully|br|"
    r"(?:many )?thanks(?: in advance| a lot)?|thank you(?: in advance| very much)?"
)
_CLOSING = re.compile(
    rf"^\s*(?:(?:{_CLOSING_PHRASE}){_AFTER_CLOSING}"
    rf"|(?:с пожеланиями|looking forward to (?:your|hearing))"
    rf"(?:[\w ]*+{_AFTER_CLOSING}|(?:[\w ]* )?{_NAME_IN_RUN})"
    rf"|искренне ваш(?:\w*+{_AFTER_CLOSING}|{_NAME_IN_RUN})"
    rf"|(?:заранее )?благодар(?:\w++(?: заранее| за помощь| вас)?{_AFTER_CLOSING}|\w{_NAME_IN_RUN})"
    rf"|заранее признател(?:\w++{_AFTER_CLOSING}|\w{_NAME_IN_RUN}))",
    re.IGNORECASE,
)
# A phone or mail app's footer: "Sent from my iPhone", "Отправлено из мобильной Почты
# Mail.ru". It names a device or an app and is no sentence: "Sent from my desk, the
# report is still empty" is the customer's own text.
_MOBILE = re.compile(
    r"^\s*(?:(?:отправлено|отправлен[оа]?|sent)\s+(?:с|со|из|через|from|with|via|using|on)\s+"
    r"[^,;.!?\n]{0,40}?(?:iphone|ipad|android|samsung|galaxy|huawei|xiaomi|redmi|honor|pixel|"
    r"nokia|blackberry|mobile|phone|смартфон|телефон|мобильн|планшет|tablet|device|устройств|"
    r"outlook|mail|почт|gmail|yandex|яндекс|windows|proton|aquamail|spark|thunderbird)"
    r"[^,;!?\n]{0,40}|get outlook|получить outlook|скачать outlook)[^,;!?\n]{0,60}$",
    re.IGNORECASE,
)
# A talon-style sign-off: "-Jess", "— Иван", "--Bob Smith" alone on a line.
_DASH_NAME = re.compile(r"^\s*[-–—]{1,2}\s*[A-ZА-ЯЁ][a-zа-яё'-]+(?:\s+[A-ZА-ЯЁ][a-zа-яё'.-]*)?\s*$")
# A mailing list's footer: a rule line above "… mailing list" / listinfo, or the groups'
# "You received this message because you are subscribed".
_LIST_RULE = re.compile(r"^\s*_{10,}\s*$")
_LIST_FOOTER = re.compile(
    r"mailing list|listinfo|unsubscribe|рассылк|you received this message because you are "
    r"subscribed|вы получили это сообщение, так как подписаны|to unsubscribe from this group",
    re.IGNORECASE,
)
_DASHES = re.compile(r"^\s*--\s*$")
_CLOSING_TAIL = 12

# Lines that make up a contact block at the end of a letter.
_JOB_WORDS = (
    r"бухгалтер|директор|менеджер|инженер|специалист|руководител|начальник|экономист|"
    r"администратор|программист|юрист|кассир|заместител|зам\.|генеральн|главн|ведущ|"
    r"отдел|управлени|служб|аналитик|кладовщик|логист|секретар|помощник|оператор|"
    r"владел|учредител|предпринимател|финансов|коммерческ|технолог|сотрудник|"
    r"manager|director|accountant|engineer|head|officer|cfo|ceo|cto|specialist|analyst|"
    r"administrator|assistant|controller|department|dept|owner|founder|lead|consultant|"
    r"coordinator|supervisor|clerk"
)
_CONTACT_PIECE = [
    re.compile(r"^(?:тел|телефон|моб|мобильный|факс|phone|tel|mob|mobile|fax|t|m)\b.*",
               re.IGNORECASE),
    # Possessive: the digits' class holds the spaces before "доб" too.
    re.compile(r"^\+?[\d\s()\-–.]{7,}+(?:\s*(?:доб|ext)\.?\s*\d+)?$", re.IGNORECASE),
    re.compile(r"^(?:e-?mail|почта|эл\. ?почта|web|сайт|www)\b.*", re.IGNORECASE),
    re.compile(r"^\S+@\S+$|^(?:https?://|www\.)\S+$", re.IGNORECASE),
    re.compile(r"^(?:инн|кпп|огрн|огрнип|окпо|бик|р/с|к/с|р\.с\.|inn|kpp)\b.*", re.IGNORECASE),
    re.compile(r"^(?:рег|регистрационный|registration|reg)\b.*", re.IGNORECASE),
    re.compile(r"^(?:г\.|город|ул\.|улица|адрес|address)\s.*", re.IGNORECASE),
]
# What separates the pieces of a contact line: "Иван Петров, бухгалтер | ООО Ромашка". A bar
# is tried only from the start of the blanks before it: the blanks of a match always end a
# run, so no match starts inside one, and trying every blank of a run was quadratic.
_PIECE_BREAK = re.compile(r",\s+|(?<!\s)\s+[|/•·]\s+|;\s*")
_JOB = re.compile(rf"^(?:\S+\s+){{0,4}}\S*(?:{_JOB_WORDS})\S*(?:\s+\S+){{0,4}}$", re.IGNORECASE)
_PERSON = re.compile(
    r"^(?:[A-ZА-ЯЁ][a-zа-яё'-]+|[A-ZА-ЯЁ]\.(?:\s?[A-ZА-ЯЁ]\.)?)"
    r"(?:\s+(?:[A-ZА-ЯЁ][a-zа-яё'-]+|[A-ZА-ЯЁ]\.(?:\s?[A-ZА-ЯЁ]\.)?)){0,3}$"
)
_LEGAL_FORM_HINT = re.compile(
    r"(?:^|[\s(«\"])(?:ООО|ОАО|ЗАО|ПАО|НАО|АО|ИП|ФГУП|ФГБУ|ФГБОУ|ФГАУ|ГУП|МУП|ГБУ|ГАУ|ГКУ|"
    r"МБУ|МАУ|МКУ|АНО|НКО|ТОО|ОДО|КФХ|ПК|СПК|ТСЖ|СНТ|НП|ЧУ|LLC|LLP|Ltd|Limited|GmbH|Inc|JSC|"
    r"PLC|Corp|AG|OOO|S\.A\.|B\.V\.)(?:$|[\s.,»\"«)])|"
    r"общество с ограниченной|акционерное общество|индивидуальный предприниматель",
    re.IGNORECASE,
)


def _contact_strength(line: str) -> int:
    """2: a line only a contact block has (organization, numbers, phone, full name);
    1: a short line that fits in one (position, first name); 0: ordinary text."""
    text = line.strip()
    if not text or len(text) > 100 or text.endswith("?"):
        return 0
    pieces = [p.strip() for p in _PIECE_BREAK.split(text) if p.strip()]
    strengths = [_piece_strength(p) for p in pieces]
    if strengths and min(strengths) > 0:  # a line of separators only (";") has no pieces
        return max(strengths)
    return 1 if _is_short_title(text) else 0


def _piece_strength(piece: str) -> int:
    if _LEGAL_FORM_HINT.search(piece) and len(piece) <= 90:
        return 2
    if _PERSON.match(piece) or _PERSON.match(piece.rstrip(".")):
        return 2 if len(piece.split()) >= 2 else 1
    if any(p.match(piece) for p in _CONTACT_PIECE):
        return 2
    return 1 if _JOB.match(piece) else 0


def _is_short_title(text: str) -> bool:
    """"механик-диспетчер", "IT": a few words without sentence punctuation."""
    return len(text.split()) <= 4 and len(text) <= 40 and not re.search(r"[.!?:;]$", text)


def _signature_start(lines: list[str]) -> int:
    """Index where the signature begins (len(lines) when there is none)."""
    end = len(lines)
    for i, line in enumerate(lines):
        if _DASHES.match(line) or _MOBILE.match(line) or _list_footer_at(lines, i):
            end = i
            break
        if _DASH_NAME.match(line) and _tail_is_short(lines, i) and _signed_below(lines, i):
            end = i
            break
        if _CLOSING.match(line) and _tail_is_short(lines, i) and _signed_below(lines, i):
            end = i
            break
    return _contact_block_start(lines, end)


def _list_footer_at(lines: list[str], i: int) -> bool:
    """A mailing list's footer starts here (its rule line, or its first sentence)."""
    line = lines[i]
    if _LIST_RULE.match(line):
        return any(_LIST_FOOTER.search(ln) for ln in lines[i + 1 : i + 4])
    return line.lstrip().lower().startswith(("you received this message", "вы получили это"))


def _signed_below(lines: list[str], i: int) -> bool:
    """A closing is followed by a name or contact line, a phone footer, or nothing:
    "Спасибо!" followed by a new paragraph of the request is not a closing."""
    following = _next_nonblank(lines, i + 1)
    if following is None:
        return True
    line = lines[following]
    return bool(_MOBILE.match(line) or _DASHES.match(line)) or _contact_strength(line) > 0


def _tail_is_short(lines: list[str], i: int) -> bool:
    return sum(1 for ln in lines[i + 1 :] if ln.strip()) <= _CLOSING_TAIL


def _contact_block_start(lines: list[str], end: int) -> int:
    """Walk up from ``end`` over contact lines and blanks; the block starts at its
    topmost strong line (a weak line alone, like "Лена", is not a block)."""
    start = end
    j = end - 1
    while j >= 0:
        strength = _contact_strength(lines[j]) if lines[j].strip() else -1
        if strength == 0:
            break
        if strength == 2:
            start = j
        j -= 1
    if start == end:
        return _closing_name_start(lines, end)
    return start


def _closing_name_start(lines: list[str], end: int) -> int:
    """A lone first name under the last sentence ("…проверить?\n\nЛена") signs it."""
    last = _previous_nonblank(lines, end)
    if last is None or not re.fullmatch(r"[A-ZА-ЯЁ][a-zа-яё-]{1,20}", lines[last].strip()):
        return end
    above = _previous_nonblank(lines, last)
    if above is not None and re.search(r"[.!?)»\"]$", lines[above].strip()):
        return last
    return end


# --------------------------------------------------------------------------- split


@dataclass(frozen=True)
class Split:
    """A letter's text in four parts (each a string of whole lines)."""

    greeting: str
    own: str
    signature: str
    quoted: str


def _lines(text: str) -> list[str]:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " ")
    return [line.rstrip() if line.strip() != "--" else "--" for line in text.split("\n")]


def split(text: str) -> Split:
    """Greeting, own words, signature and quoted history of a letter's text."""
    lines = _lines(text)
    mask = _history_mask(lines)
    fresh = [line for line, quoted in zip(lines, mask, strict=True) if not quoted]
    history = [line for line, quoted in zip(lines, mask, strict=True) if quoted]
    greeting, body = strip_greeting(fresh)
    cut = _signature_start(body)
    return Split(
        greeting=greeting,
        own=_join(body[:cut]),
        signature=_join(body[cut:]),
        quoted=_join(history),
    )


def _join(lines: list[str]) -> str:
    return "\n".join(lines).strip("\n")
