"""The customer's organization and licence registration number, as a person reads them.

A letter names many organizations: the sender's, a supplier, a bank, the auditor
who wrote the quoted letter below. A person tells the sender's own by where it
stands and what surrounds it, and so does this module:

* where: a line of its own in the signature or at the end of the text ("ООО
  «Ромашка»" above "рег. номер …"), after a label ("Организация:", "Company:"),
  after "мы," / "от имени" / "our company" — or, less surely, in the subject or
  mid-sentence;
* what surrounds it: "поставщик", "банк", "контрагент", "от", "у", "your", "supplier"
  just before it mark a company mentioned in passing, which is never the customer;
  a bank's or the vendor's name is not the customer either.

Only the texts the caller passes are searched (own words, signature, subject):
quoted and forwarded letters never reach this module.

The registration number is the digits after "рег. номер", "регистрационный номер",
"рег.№", "registration number", "reg. no" …, spaces and dashes removed; an ИНН,
КПП, ОГРН, a phone, a contract, invoice or order number never follows those words,
and the Pension Fund's or a cash register's "рег. номер" is refused by name.

Pure: no IO.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from mailroute.core.words import fold, tokens

# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Found:
    """A value taken from the letter, the rule that took it and the evidence."""

    value: str
    rule: str
    detail: str
    source: str
    start: int = 0
    end: int = 0
    # How sure the placement makes us, 0..1 (see ``_confidence`` and ``find_*``).
    confidence: float = 1.0


Source = tuple[str, str]  # (name: "own text" | "signature" | "subject", text)

# --------------------------------------------------------------------------- registration

_REG_PHRASE = re.compile(
    r"(?<![\w])(?:"
    r"рег(?:истрационн(?:ый|ого|ому|ым|ом)|\.|\b)\s*(?:номер\w*|ном\b\.?|№|N(?=[\s\d.:])|No\b\.?|#)"
    r"|регномер\w*|рег\s*+(?:\.\s*+)?№|номер\s+регистрации"
    r"|(?:licen[cs]e\s+)?registration\s+(?:number|no\b\.?|num\b\.?|#|№)"
    r"|reg(?:\.|\b)\s*(?:number|no\b\.?|num\b\.?|#|№)|regno\b"
    r")",
    re.IGNORECASE,
)
# Words that may stand between the phrase and the number ("рег. номер лицензии: …").
_REG_FILLER = re.compile(
    r"^(?:\s|[:.#№\-–—=]|\(|\)|"
    r"(?:лицензи\w*|лицензионн\w*|договор\w*|соглашени\w*|программ\w*|продукт\w*|клиент\w*|"
    r"организаци\w*|компани\w*|наш\w*|у\s+нас|был|есть|это|такой|следующий|"
    r"е[её]|его|их|лиц\.|of|our|the|is|licen[cs]e|agreement|customer|client|company|product|"
    r"her|his|their|its)(?![\w]))*",
    re.IGNORECASE,
)
_REG_REFUSED = re.compile(
    r"пфр|фсс|сфр|фомс|страхов\w*|пенсион\w*|ккт|касс\w*|автомоб\w*|\bтс\b|транспорт\w*|"
    r"инн|кпп|огрн\w*|налог\w*|декларац\w*|pension|vehicle|tax",
    re.IGNORECASE,
)
_REG_STATE = re.compile(r"(?:государственн\w*|гос\.?|основн\w*|state)\s*$", re.IGNORECASE)
# Digits in groups: "800-229-417", "800 612 078", "800 - 555 - 1234", "800 – 141 – 552".
_NUMBER = re.compile(r"\d(?:\d|(?:[ ]?[\-‐‑–—][ ]?|[ ])(?=\d))*\d")
MIN_REG_DIGITS = 5
MAX_REG_DIGITS = 15


def _reg_number_after(text: str, phrase: re.Match[str]) -> tuple[str, int, int] | None:
    tail = text[phrase.end() : phrase.end() + 120]
    filler = _REG_FILLER.match(tail)
    gap = filler.group(0) if filler else ""
    if "\n\n" in gap or _REG_REFUSED.search(gap):
        return None
    number = _NUMBER.match(tail, len(gap))
    if not number:
        return None
    digits = re.sub(r"\D", "", number.group(0))
    if not MIN_REG_DIGITS <= len(digits) <= MAX_REG_DIGITS:
        return None
    start = phrase.end() + number.start()
    return digits, start, phrase.end() + number.end()


def find_registration_number(sources: Sequence[Source]) -> Found | None:
    """The first licence registration number in the sources, in the order given."""
    for name, text in sources:
        for phrase in _REG_PHRASE.finditer(text):
            if _REG_STATE.search(text[max(0, phrase.start() - 20) : phrase.start()]):
                continue
            hit = _reg_number_after(text, phrase)
            if hit is None:
                continue
            digits, _, end = hit
            shown = text[phrase.start() : end].replace("\n", " ")
            others = _other_numbers(sources, digits)
            return Found(
                digits, "extract:regnum-phrase", f"{name}: {shown!r}", name, phrase.start(), end,
                confidence=CONFIDENCE_TWO_NUMBERS if others else 1.0,
            )
    return None


CONFIDENCE_TWO_NUMBERS = 0.4


def _other_numbers(sources: Sequence[Source], digits: str) -> bool:
    """Whether another registration number, different from ``digits``, is given too."""
    for _, text in sources:
        for phrase in _REG_PHRASE.finditer(text):
            hit = _reg_number_after(text, phrase)
            if hit is not None and hit[0] != digits:
                return True
    return False


def registration_spans(text: str) -> list[tuple[int, int]]:
    """Where registration phrases with their numbers stand (to set them aside)."""
    spans = []
    for phrase in _REG_PHRASE.finditer(text):
        hit = _reg_number_after(text, phrase)
        spans.append((phrase.start(), hit[2] if hit else phrase.end()))
    return spans


# --------------------------------------------------------------------------- organizations

_RU_FORMS = (
    "ООО ТД|ООО|ОАО|ЗАО|ПАО|НАО|АО|ИП|ФГУП|ФГБУ|ФГБОУ|ФГАОУ|ФГБНУ|ФГУ|ФКУ|ФБУ|ГУП|МУП|ГБУ|ГАУ|ГКУ|"
    "ГБОУ|ГБУЗ|ГАУЗ|ГБПОУ|МБУ|МАУ|МКУ|МБОУ|МАОУ|МБДОУ|МАДОУ|МКОУ|АНО|НКО|НП|ТОО|ОДО|КФХ|СПК|"
    "ПК|ТСЖ|ТСН|СНТ|ЧУ|ЧОУ|ЧУП|ТД|УП"
)
_RU_FULL_FORMS = (
    r"[Оо]бщество с ограниченной ответственностью|(?:[Пп]убличное |[Нн]епубличное |"
    r"[Зз]акрытое |[Оо]ткрытое )?[Аа]кционерное общество|[Ии]ндивидуальный предприниматель|"
    r"(?:[Фф]едеральное )?(?:[Гг]осударственное|[Мм]униципальное) (?:унитарное предприятие|"
    r"(?:бюджетное|казённое|казенное|автономное) учреждение)|[Аа]втономная некоммерческая "
    r"организация|[Нн]екоммерческое партнерство|[Кк]рестьянское \(?фермерское\)? хозяйство"
)
_LATIN_PREFIX_FORMS = "LLC|JSC|OOO|ZAO|OAO|PAO|CJSC|OJSC|PJSC|LLP|AO|IE"
_EN_SUFFIX = (
    r"(?:Co\.,?\s+)?(?:Ltd\.?|LTD\.?|Limited|LIMITED|LLC|L\.L\.C\.|Inc\.|Inc|INC\.?|"
    r"Incorporated|Corp\.|Corp|Corporation|GmbH\s*&\s*Co\.?\s*KG|GmbH|JSC|LLP|PLC|plc|AG|"
    r"S\.A\.|B\.V\.|N\.V\.|"
    r"Pty\.?\s+Ltd\.?|S\.r\.l\.|SRL|SAS|OÜ|UAB|SIA|LP)"
)
_OPEN = "«\"“„'‘"
_CLOSE = {"«": "»", '"': '"', "“": "”", "„": "“”", "'": "'", "‘": "’"}
_QUOTED_NAME_MAX = 150  # characters after the opening mark where its closing one may be
_QUOTE_DEPTH_MAX = 3  # «ООО «ТД «Ромашка»»» at most: deeper is no name, and costs a walk
# What _quoted_end looks at after each opening mark: its closers, itself, a line end.
_QUOTE_MARKS = {
    opener: re.compile("[" + re.escape("\n" + opener + closers) + "]")
    for opener, closers in _CLOSE.items()
}
_GAP = re.compile(r"[ \t]+")
_NEXT_SENTENCE = re.compile(r"[ \t]+[A-ZА-ЯЁ]")
# Possessive: a word is never split.  Splitting one ("A&B" as "A" & "B") ends the name
# where the whole word ends, so it cannot succeed where the whole word failed; letting
# the engine try every split made `A&A&A…` cost the 7th power of its length.
_CAP_WORD = r"[A-ZА-ЯЁ0-9][\w'’.&-]*+"
_FORM = re.compile(
    rf"(?<![\w-])(?:(?P<full>{_RU_FULL_FORMS})|(?P<ru>{_RU_FORMS})|(?P<lat>{_LATIN_PREFIX_FORMS}))"
    rf"(?![\w-])"
)
_EN_SUFFIXED = re.compile(
    rf"(?<![\w-])(?P<name>{_CAP_WORD}(?:(?:[ \t]+|,[ \t]*|[ \t]*&[ \t]*)"
    rf"(?:{_CAP_WORD}|and|of|the|for|&)){{0,5}}),?[ \t]+(?P<suffix>{_EN_SUFFIX})(?![\w])"
)
# Where an _EN_SUFFIXED name may begin, and the rest of the word it begins in.
_NAME_START = re.compile(r"(?<![\w-])[A-ZА-ЯЁ0-9]")
_REST_OF_WORD = re.compile(r"[\w'’.&-]*")
# Short foreign suffixes ("AS", "AB", "SA") are words too: only a line of its own counts,
# perhaps after a job title ("Treasury, Fjord Seafood AS").
_LINE_SUFFIXED = re.compile(
    rf"^[ \t]*(?:[^\n,]{{1,40}},[ \t]*)?"
    rf"(?P<name>{_CAP_WORD}(?:[ \t]+(?:{_CAP_WORD}|and|of|&)){{0,5}}),?[ \t]+"
    r"(?P<suffix>AS|ASA|AB|Oy|OY|Oyj|SA|Lda\.?|Ltda\.?|S\.p\.A\.|SpA|NV|BV|KG|ApS|A/S|SARL|Kft|"
    r"Sp\. z o\.o\.|s\.r\.o\.|d\.o\.o\.|Pte\.? Ltd\.?|e\.V\.)[ \t]*$",
    re.MULTILINE,
)
_PERSON_TAIL = re.compile(
    r"[ \t]+[А-ЯЁA-Z][а-яёa-z-]+(?:[ \t]+(?:[А-ЯЁA-Z][а-яёa-z-]+|[А-ЯЁA-Z]\.[ \t]?"
    r"(?:[А-ЯЁA-Z]\.)?)){0,2}|[ \t]+[А-ЯЁA-Z][а-яёa-z-]+[ \t]+[А-ЯЁA-Z]\.[ \t]?(?:[А-ЯЁA-Z]\.)?"
)
_UNQUOTED_NAME = re.compile(rf"[ \t]+{_CAP_WORD}(?:(?:[ \t]+|[ \t]*[-+][ \t]*){_CAP_WORD}){{0,3}}")
_NUMBER_SIGN = re.compile(r"[ \t]*№[ \t]*\d+")
_NAME_STOP = frozenset(
    tokens("рег регистрационный инн кпп огрн тел телефон registration reg inn tel phone")
)
_SENTENCE_WORDS = frozenset(
    tokens(
        "the we our you your i my dear hello hi thanks thank please best kind regards from to "
        "this that it is are was"
    )
)

_LABEL = re.compile(
    r"(?:организация|наименование(?: организации| клиента| компании)?|компания|клиент|"
    r"заказчик|предприятие|лицензиат|company|organi[sz]ation|customer|client|licensee|"
    r"company name)\s*[:\-–—]?\s*$",
    re.IGNORECASE,
)
# "наш клиент ООО «Альфа»" names the sender's customer, not a "Клиент:" label.
_POSSESSIVE_LABEL = re.compile(
    r"(?:наш\w*|мо[йеи]\w*|ваш\w*|our|my|your)\s+(?:клиент|заказчик|customer|client)\w*"
    r"\s*[:\-–—]?\s*$",
    re.IGNORECASE,
)
_OWN_CUE = re.compile(
    r"(?:\bмы\s*[,—–-]?|\bот имени|\bнаш\w* (?:организаци\w*|компани\w*|предприяти\w*|фирм\w*)"
    r"(?:\s*[,—–-])?|\bна нашу организацию|\bя из|\bработаю в|\bсотрудник\w*|\bпредставля\w*|"
    r"\bwe\s*(?:,|are)|\bon behalf of|\bour (?:company|organi[sz]ation|firm)(?:\s*,|\s+is)?|"
    r"\bi (?:work|am) (?:at|for|with)|\bwe at|"
    r"\bпиш(?:у|ем)\s+(?:вам\s+)?(?:от|из)|\bобраща(?:юсь|емся)\s+(?:от|из)|"
    r"\b(?:это|this is|i am|i'm|my name is|меня зовут)\s+\w+(?:\s+\w+)?\s+(?:from|из))\s*$",
    re.IGNORECASE,
)
_PASSING_CUE = re.compile(
    r"(?:\b(?:поставщик|контрагент|покупател|клиент|партн[её]р|банк|аудитор|перевозчик|подрядчик|"
    r"арендатор|арендодател|дочерн|материнск|друг(?:ой|ого|ому|их|им|ая|ую)|франчайзи|"
    r"supplier|vendor|customer|client|partner|bank|auditor|contractor|"
    r"counterpart|carrier|other|subsidiar|parent|служб\w* поддержки|техподдержк|"
    r"support team|service ?desk|help ?desk)\w*[^.!?\n]{0,40}"
    r"|\b(?:ваш\w*|вам|your)\W{0,3}(?:\w+\W{1,3})?"
    r"|\b(?:от|с|со|у|к|через|из|перед|между|from|with|by|via|between|than)\s*)$",
    re.IGNORECASE,
)
# A client named by whoever keeps its books or supports it ("веду учёт нашего клиента —
# ИП Гаврилова", "сопровождаем клиента АО «…»", "on behalf of our client …") ...
_CLIENT_CUE = re.compile(
    r"(?:(?:наш\w*|мо\w*|сво\w*)\s+клиент\w*|сопровожда\w*\s+клиент\w*|"
    r"(?:our|my)\s+client(?:'s)?|client of ours)\s*(?:[,:—–-]\s*)?$",
    re.IGNORECASE,
)
# ... counts as the customer when the letter says the writer works for others: an
# outsourcer or a partner, or whose licence it is.
# Only whether it occurs matters. A stem's word run ("лицензи\w* ") stops where the stem
# occurs again, the later occurrence trying the rest itself: run from every occurrence to
# the word's end, a word of repeated stems was quadratic. (Tried lazily from every word's
# start instead, it cost 31 µs a letter: a third of all organization extraction.)
# Searched in the lower-cased text: IGNORECASE over Cyrillic makes the search 4x slower.
_WRITES_FOR_CLIENT = re.compile(
    r"аутсорс|outsourc|партн[её]р|partner|"
    r"лицензи(?:(?!лицензи)\w)*+ (?:оформлен\w*|зарегистрирован\w*) на|"
    r"(?:е[её]|его|их) лицензи|бухгалтерск(?:(?!бухгалтерск)\w)*+ обслуживани|"
    r"вед(?:у|ём|ем) (?:уч[её]т|бухгалтери)|сопровожда(?:(?!сопровожда)\w)*+ клиент|"
    r"licen[cs]e (?:is )?(?:in their name|registered to|belongs to)|"
    r"their licen[cs]e|keep (?:the )?books for"
)
_BANK = re.compile(r"банк|\bbank\b|сбер|втб|vtb|\bальфа|тинькофф|т-банк", re.IGNORECASE)
_TRAILING_CONTACT = re.compile(
    r"^\s*+(?:[,;(\-–—]\s*+)?(?:рег|регистр|registration|reg|инн|кпп|огрн|inn|тел|tel|"
    r"phone|г\.|город|\(|\d|[.!]?\s*$)",
    re.IGNORECASE,
)

SCORE_CLIENT = 11
SCORE_LABEL = 10
SCORE_SIGNATURE_LINE = 8
SCORE_OWN_LINE = 7
SCORE_SUBJECT = 6
SCORE_SIGNATURE_TEXT = 5
SCORE_IN_SENTENCE = 3
BANK_PENALTY = 4


@dataclass(frozen=True)
class Candidate:
    """An organization name as written, where it stands, and how sure we are."""

    value: str
    source: str
    start: int
    end: int
    score: int
    why: str


def _quoted_end(text: str, start: int) -> int | None:
    """End (exclusive) of a quoted name starting at ``text[start]``; «» may nest, and so
    may straight quotes: ФГУП "НПО "Техномаш"" (a quote after a space opens).

    Only the quote marks and line ends of the next ``_QUOTED_NAME_MAX`` characters are
    visited, a window without a closing mark is refused at once, and so is nesting
    deeper than three: `ООО «` or `ООО ««««»` repeated (a name opened every few
    characters, never closed) walked all 150 characters after each one in Python,
    2.7-5 s of CPU for a 360 KB letter."""
    opener = text[start]
    closers = _CLOSE[opener]
    stop = min(len(text), start + _QUOTED_NAME_MAX)
    if all(text.find(closer, start + 1, stop) < 0 for closer in closers):
        return None
    depth = 0
    for mark in _QUOTE_MARKS[opener].finditer(text, start, stop):
        ch, i = mark.group(), mark.start()
        if ch == "\n":
            return None
        if (opener == "«" and ch == "«") or (ch == opener == '"' and _opens_straight(text, i)):
            depth += 1
            if depth > _QUOTE_DEPTH_MAX:
                return None
        elif ch in closers and i > start:
            depth -= 1
            if depth <= 0:
                return i + 1
    return None


def _opens_straight(text: str, i: int) -> bool:
    """A straight quote opens when it follows a space or the start and precedes a letter."""
    before = text[i - 1] if i > 0 else " "
    after = text[i + 1] if i + 1 < len(text) else " "
    return (before.isspace() or before in "(«") and after.isalnum()


def _after_gap(text: str, pos: int) -> int:
    """``pos`` moved past spaces and tabs (matched in place: slicing ``text[pos:]`` for
    each of thousands of names copied the rest of a long letter every time)."""
    gap = _GAP.match(text, pos)
    return gap.end() if gap else pos


def _name_after_form(text: str, form: re.Match[str]) -> int | None:
    """End of the organization name following a legal form, or None."""
    pos = form.end()
    quote_at = _after_gap(text, pos)
    if quote_at < len(text) and text[quote_at] in _OPEN:
        end = _quoted_end(text, quote_at)
        if end is None:
            return None
        number = _NUMBER_SIGN.match(text, end)
        return number.end() if number else end
    if form.group("ru") == "ИП" or (form.group("full") or "").lower().startswith("индивид"):
        person = _PERSON_TAIL.match(text, pos)
        return person.end() if person else None
    if form.group("lat") in ("AO", "IE"):
        return None
    name = _UNQUOTED_NAME.match(text, pos)
    if not name:
        return None
    end = pos
    for word in re.finditer(r"\S+", name.group(0)):
        if fold(word.group(0)).rstrip(".") in _NAME_STOP:
            break
        end = pos + word.end()
    if end == pos or fold(text[pos:end].split()[0]) in _SENTENCE_WORDS:
        return None
    quote_at = _after_gap(text, end)
    if quote_at < len(text) and text[quote_at] in _OPEN:
        return _quoted_end(text, quote_at) or end
    return end


def _raw_spans(text: str) -> Iterable[tuple[int, int]]:
    for form in _FORM.finditer(text):
        end = _name_after_form(text, form)
        if end is not None:
            yield form.start(), end
    for match in (*_suffixed_names(text), *_LINE_SUFFIXED.finditer(text)):
        start = _trim_sentence_words(text, match.start("name"), match.end("name"))
        if start is not None:
            yield _trim_job_title(text, start, match.end("name")), match.end("suffix")


def _suffixed_names(text: str) -> Iterable[re.Match[str]]:
    """``_EN_SUFFIXED.finditer(text)``, but each word tried once.

    A name beginning inside a word ("B" of "A&B") takes the rest of that word, as one
    beginning earlier in it does, and goes on from the same place: when the first
    failed, the others fail too.  finditer tried them all, each to the end of the
    word, and a 100 KB word (`A&A&…`) cost its length squared."""
    position = 0
    while (start := _NAME_START.search(text, position)) is not None:
        match = _EN_SUFFIXED.match(text, start.start())
        if match:
            yield match
            position = match.end()
        else:
            rest = _REST_OF_WORD.match(text, start.start())
            position = rest.end() if rest else start.end()


@lru_cache(maxsize=16)
def _raw_candidates(text: str) -> tuple[tuple[int, int], ...]:
    """Name spans, overlapping ones merged ("ООО ТД" + "ТД «Ромашка»").

    Remembered for the last few texts: a letter's own text is searched for names twice,
    to identify the customer and to set the names aside when judging whether the letter
    describes anything (a fifth of the CPU of analysis)."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(_raw_spans(text)):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)


def _trim_sentence_words(text: str, start: int, end: int) -> int | None:
    """Drop leading words that open a sentence ("Thanks Acme Ltd" → "Acme Ltd")."""
    words = list(re.finditer(r"\S+", text[start:end]))
    for word in words:
        if fold(word.group(0).strip(",&")) not in _SENTENCE_WORDS:
            return start + word.start()
    return None


_JOB_TITLE_WORDS = frozenset(
    tokens(
        "manager accountant lead director head officer controller assistant specialist "
        "administrator analyst engineer consultant coordinator supervisor clerk bookkeeper "
        "cfo ceo cto coo treasury treasurer finance financial president owner founder chief "
        "payable receivable operations it hr payroll accounting accounts sales purchasing "
        "procurement logistics comptable"
    )
)


def _trim_job_title(text: str, start: int, end: int) -> int:
    """Drop a job title glued before the name ("Operations Manager, Pinecrest Trading")."""
    comma = text.rfind(",", start, end)
    if comma < 0 or not _JOB_TITLE_WORDS.intersection(tokens(text[start:comma])):
        return start
    rest = re.match(r",[ \t]*", text[comma:end])
    return comma + (rest.end() if rest else 1)


def _drop_sentence_period(text: str, end: int) -> int:
    """"…Builders Ltd. Our module…": the period ends the sentence, not the name."""
    if end > 0 and text[end - 1] == "." and _NEXT_SENTENCE.match(text, end):
        return end - 1
    return end


# How far back a label or a bullet is looked for.  Each candidate looks back at most
# this far: rescanning the whole line for each of thousands of names on one long
# line (a pasted table) was quadratic, seconds for 20 KB.
_LOOKBACK = 200
# Names weighed per source (subject, body, signature…), the first ones: a letter naming
# more is a list or an attack (`ООО «А»` repeated over 360 KB: 57,000 names, 4.5 s of
# CPU weighing each), and the customer's own name comes before the list.
MAX_CANDIDATES_PER_SOURCE = 300
_BULLETS = " \t-–—•*>|"


def _line_before(text: str, start: int) -> tuple[int, str]:
    """Start of the text looked at before a name, and that text: its line, at most
    the last _LOOKBACK characters of it."""
    window = max(0, start - _LOOKBACK)
    line_start = text.rfind("\n", window, start) + 1 or window
    return line_start, text[line_start:start]


def _alone_on_line(text: str, line_start: int, start: int, end: int, before: str) -> bool:
    """Nothing but bullets before the name on its line, and contact details or nothing after."""
    if before.strip(_BULLETS):
        return False
    cut_short = line_start > 0 and text[line_start - 1] != "\n"  # by the look-back
    if cut_short and text[text.rfind("\n", 0, line_start) + 1 : start].strip(_BULLETS):
        return False
    line_end = text.find("\n", end)
    return bool(_TRAILING_CONTACT.match(text[end : len(text) if line_end < 0 else line_end]))


def _sentence_before(text: str, start: int) -> str:
    before = text[max(0, start - 80) : start]
    cut = max(before.rfind(ch) for ch in ".!?\n")
    return before[cut + 1 :] if cut >= 0 else before


def _score(
    text: str, source: str, start: int, end: int, for_client: bool = False
) -> tuple[int, str]:
    line_start, before = _line_before(text, start)
    sentence = _sentence_before(text, start)
    if for_client and _CLIENT_CUE.search(sentence):
        return SCORE_CLIENT, "the client the letter is written for"
    if _LABEL.search(before) and not _POSSESSIVE_LABEL.search(before):
        return SCORE_LABEL, "after a label"
    if _OWN_CUE.search(sentence):
        return SCORE_LABEL, "introduced as the sender's own"
    if _PASSING_CUE.search(sentence):
        return -1, "mentioned in passing"
    if source == "subject":
        return SCORE_SUBJECT, "in the subject"
    if _alone_on_line(text, line_start, start, end, before):
        if source == "signature":
            return SCORE_SIGNATURE_LINE, "on a line of its own in the signature"
        return SCORE_OWN_LINE, "on a line of its own"
    if source == "signature":
        return SCORE_SIGNATURE_TEXT, "in the signature"
    return SCORE_IN_SENTENCE, "inside a sentence"


def candidates(sources: Sequence[Source], vendor: frozenset[str] = frozenset()) -> list[Candidate]:
    """Every organization named in the sources with its score (-1: not the customer)."""
    found = []
    for_client = any(_WRITES_FOR_CLIENT.search(text.lower()) for _, text in sources)
    for source, text in sources:
        for start, end in _raw_candidates(text)[:MAX_CANDIDATES_PER_SOURCE]:
            end = _drop_sentence_period(text, end)
            value = text[start:end].strip(" \t,;:")
            score, why = _score(text, source, start, end, for_client)
            if normalize_org(value) in vendor:
                score, why = -1, "the vendor itself"
            elif _BANK.search(value) and score < SCORE_LABEL:
                score, why = score - BANK_PENALTY, why + ", a bank"
            found.append(Candidate(value, source, start, end, score, why))
    return found


def find_organization(
    sources: Sequence[Source], vendor: frozenset[str] = frozenset()
) -> Found | None:
    """The customer's organization: the best-placed candidate, earlier sources first."""
    order = {name: i for i, (name, _) in enumerate(sources)}
    best = None
    found = [c for c in candidates(sources, vendor) if c.score >= SCORE_IN_SENTENCE]
    for cand in found:
        key = (-cand.score, order[cand.source], cand.start)
        if best is None or key < best[0]:
            best = (key, cand)
    if best is None:
        return None
    rivals = [c for c in found if c is not best[1]]
    cand = best[1]
    return Found(
        cand.value,
        "extract:organization",
        f"{cand.source}: {cand.value!r} {cand.why}",
        cand.source,
        cand.start,
        cand.end,
        confidence=_confidence(cand, rivals),
    )


# How sure each placement is: a label or an introduction is what a person trusts most, a
# name inside a sentence least; a rival just as well placed halves it.
_PLACEMENT_CONFIDENCE = {
    SCORE_CLIENT: 0.9, SCORE_LABEL: 1.0, SCORE_SIGNATURE_LINE: 0.9, SCORE_OWN_LINE: 0.8,
    SCORE_SUBJECT: 0.7, SCORE_SIGNATURE_TEXT: 0.6, SCORE_IN_SENTENCE: 0.4,
}  # fmt: skip


def _confidence(chosen: Candidate, rivals: list[Candidate]) -> float:
    base = _PLACEMENT_CONFIDENCE.get(chosen.score, 0.4)
    same = normalize_org(chosen.value)
    tied = any(c.score >= chosen.score and normalize_org(c.value) != same for c in rivals)
    return round(base / 2 if tied else base, 2)


def organization_spans(text: str) -> list[tuple[int, int]]:
    """Where organization names stand in ``text`` (to set them aside)."""
    return [(c.start, c.end) for c in candidates([("text", text)])]


_QUOTES = re.compile("[«»\"“”„'‘’]")


def normalize_org(name: str) -> str:
    """The comparison form of an organization name: no quotes, case or extra spaces."""
    return re.sub(r"\s+", " ", _QUOTES.sub("", name)).strip().casefold()
