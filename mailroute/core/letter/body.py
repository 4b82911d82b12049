"""Which parts of the entity tree are the letter's text, its attachments and its forwards.

The walk picks the body (plain text normally; the HTML when the plain part is a stub or
truncated; a named inline text when nothing else came), records every other leaf as an
attachment and hands message/rfc822 parts back to the parser as forwarded letters.  Only
the first bytes of a huge text part are decoded, and the rendered text is cut to the limit.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from mailroute.core.letter.charsets import decode_bytes
from mailroute.core.letter.filenames import sanitize_filename
from mailroute.core.letter.headers import parse_message_id
from mailroute.core.letter.mime import Budget, Node, PartInfo, parse_entity
from mailroute.core.letter.model import Attachment, ParsedLetter, ParseLimits
from mailroute.core.letter.text import html_estimate, html_to_text, tidy_text, unflow
from mailroute.core.letter.transfer import decode_transfer

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
class Context:
    """Mutable state of one letter's walk: collected notes, files and forwards."""

    limits: ParseLimits
    budget: Budget
    # The parser's reader of a letter inside this one (passed in: the parser imports us)
    read_forwarded: Callable[[Node, Budget], ParsedLetter]
    defects: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    forwarded: list[ParsedLetter] = field(default_factory=list)
    cids: set[str] = field(default_factory=set)
    named_texts: list[Node] = field(default_factory=list)  # body candidates if nothing else


_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?([\w-]+)", re.IGNORECASE)

# Bytes of a text part read per character of body text kept: room for HTML markup
# and multi-byte charsets, so the cut below never shortens what the reader sees.
_SOURCE_BYTES_PER_CHAR = 10


def _text_of_part(node: Node, info: PartInfo, ctx: Context) -> str:
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


def _is_body_text(info: PartInfo, top: bool) -> bool:
    """text/plain or text/html that is not marked or named as a file.

    A single-part letter's text is its body even when the sender named it.
    """
    if info.content_type not in ("text/plain", "text/html"):
        return False
    if info.disposition == "attachment":
        return False
    return top or not info.filename


_CID_REF = re.compile(r"cid:([^\"'\s>)]{1,300})", re.IGNORECASE)


def walk(node: Node, ctx: Context) -> list[_Piece]:
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


def fallback_body(ctx: Context) -> list[_Piece]:
    """A letter whose only text came as a named inline file (some generated mail)."""
    for node in ctx.named_texts:
        info = node.part_info
        text = _text_of_part(node, info, ctx)
        if text.strip():
            return [_Piece(text, info.content_type == "text/html", what=node.what)]
    return []


def _walk_multipart(node: Node, info: PartInfo, ctx: Context) -> list[_Piece]:
    """Dispatch on the multipart subtype."""
    children = node.children or []
    if info.content_type == "multipart/alternative":
        candidates = [walk(child, ctx) for child in children]
        return _choose_alternative([c for c in candidates if c])
    if info.content_type == "multipart/related":
        root = _related_root(children, info.params.get("start"))
        pieces: list[_Piece] = []
        for index, child in enumerate(children):
            child.related = index != root
            got = walk(child, ctx)
            if index == root:
                pieces = got
        return pieces
    pieces = []
    for child in children:
        pieces.extend(walk(child, ctx))
    return pieces


def _related_root(children: list[Node], start: str | None) -> int:
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


def _add_attachment(node: Node, info: PartInfo, ctx: Context) -> None:
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


def _forward(node: Node, info: PartInfo, ctx: Context) -> None:
    """message/rfc822 (or the headers of a returned letter): parse it into `forwarded`."""
    raw = decode_transfer(node.body, info.cte, ctx.defects, node.what)
    inner = parse_entity(raw, "", node.depth + 1, ctx.budget)
    if not inner.headers and not raw.strip():
        ctx.defects.append(f"{node.what}: empty {info.content_type} part")
        return
    ctx.forwarded.append(ctx.read_forwarded(inner, ctx.budget))


def mark_referenced(att: Attachment, cids: set[str]) -> Attachment:
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


def render(pieces: list[_Piece], ctx: Context) -> tuple[str, bool]:
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
