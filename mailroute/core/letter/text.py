"""A body part's source to the plain text that is analysed: flowed text, HTML, tidying.

HTML goes through inscriptis (blockquotes become '>' lines, Outlook paragraphs keep their
look); format=flowed lines are joined; every result is tidied the same way.  Each loop here
is linear in the text, because a hostile letter is as long as the limits allow.
"""

from __future__ import annotations

import bisect
import re

from mailroute.core.letter.headers import strip_controls

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
    text = strip_controls(text.replace("\f", "\n").replace("\x00", ""))
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

    cleaned = strip_controls(drop_invisible(html))
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
