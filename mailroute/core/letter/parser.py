"""`parse`: raw letter bytes in, a `ParsedLetter` out, or `LetterUnreadable` and nothing else.

The entry point keeps the contract (only LetterUnreadable escapes, for quarantine) and the
size limit on the whole letter; `_letter` assembles the ParsedLetter from the split tree:
header fields from `headers` and `addresses`, text and files from the `body` walk (which
calls back here for each forwarded letter).
"""

from __future__ import annotations

from mailroute.core.letter.addresses import parse_address_list
from mailroute.core.letter.body import Context, fallback_body, mark_referenced, render, walk
from mailroute.core.letter.headers import (
    MSGID,
    collapse,
    decode_header,
    parse_date,
    parse_id_list,
    parse_message_id,
    raw_to_text,
    scrub,
    unfold,
)
from mailroute.core.letter.mime import Budget, Node, parse_entity
from mailroute.core.letter.model import HeaderMap, ParsedLetter, ParseLimits
from mailroute.errors import LetterUnreadable


def _header_map(node: Node, defects: list[str]) -> HeaderMap:
    """Lower-case name -> decoded, unfolded value of its first occurrence."""
    out: dict[str, str] = {}
    for key, value in node.headers:
        name = collapse(raw_to_text(key, defects, "header name")).lower()
        if name not in out:
            out[name] = collapse(decode_header(unfold(value), defects, f"header {name}"))
    return HeaderMap(out)


def _letter(node: Node, budget: Budget) -> ParsedLetter:
    """Build a ParsedLetter from a split entity tree (also for forwarded letters)."""
    ctx = Context(limits=budget.limits, budget=budget, read_forwarded=_letter)
    defects = ctx.defects
    raw: dict[str, str] = {}
    noted_by_header_map: list[str] = []
    for key, value in node.headers:
        name = raw_to_text(key, noted_by_header_map, "").lower()
        if name not in raw:
            raw[name] = raw_to_text(value, noted_by_header_map, "")
    headers = _header_map(node, defects)
    pieces = walk(node, ctx) or fallback_body(ctx)
    text, from_html = render(pieces, ctx)
    sender_list = parse_address_list(raw["from"], defects, "From") if "from" in raw else ()
    subject = headers.get("subject")  # decoded, unfolded, collapsed like every header
    attachments = tuple(mark_referenced(a, ctx.cids) for a in ctx.attachments)
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
    match = MSGID.search(value)
    inner = match.group(1) if match else value
    return "".join(inner.split()).lower()


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
        budget = Budget(limits)
        node = parse_entity(raw, "", 0, budget)
        if not node.headers:
            raise LetterUnreadable("parse", "no header fields found")
        return _letter(node, budget)
    except LetterUnreadable:
        raise
    except RecursionError as exc:
        raise LetterUnreadable("parse", "MIME structure nested too deeply") from exc
    except Exception as exc:  # the contract: quarantine, never crash the daemon
        raise LetterUnreadable("parse", f"internal error {type(exc).__name__}: {exc}") from exc
