"""`parse`: raw letter bytes in, a `ParsedLetter` out, or `LetterUnreadable` and nothing else.

The entry point keeps the contract (only LetterUnreadable escapes, for quarantine) and the
size limit on the whole letter; `_letter` assembles the ParsedLetter from the split tree:
header fields from `headers` and `addresses`, text and files from the `body` walk (which
calls back here for each forwarded letter).
"""

from __future__ import annotations

import re

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
from mailroute.core.letter.model import Address, HeaderMap, ParsedLetter, ParseLimits
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
    sender, sender_header = _sender(node, defects)
    subject = headers.get("subject")  # decoded, unfolded, collapsed like every header
    attachments = tuple(mark_referenced(a, ctx.cids) for a in ctx.attachments)
    return ParsedLetter(
        message_id=parse_message_id(raw["message-id"]) if "message-id" in raw else None,
        in_reply_to=parse_id_list(raw.get("in-reply-to", ""), defects, "In-Reply-To"),
        references=parse_id_list(raw.get("references", ""), defects, "References"),
        subject=subject,
        sender=sender,
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
        sender_header=sender_header,
    )


# Where the requester may be named, in order: a reply must reach a person even when a
# client wrote a broken From, two of them, or none.
_SENDER_HEADERS = ("from", "sender", "reply-to")


def _sender(node: Node, defects: list[str]) -> tuple[Address | None, str]:
    """The first address that parses: each From in turn, then Sender, then Reply-To.

    Returns the address (or the unparsed From as before, so its display name is kept)
    and the name of the header it came from.
    """
    unparsed: Address | None = None
    by_name: dict[str, list[str]] = {}
    for key, value in node.headers:
        name = key.strip().lower()
        if name in _SENDER_HEADERS:
            by_name.setdefault(name, []).append(value)
    for name in _SENDER_HEADERS:
        for value in by_name.get(name, ()):
            for address in parse_address_list(raw_to_text(value, [], ""), defects, name):
                if address.email:
                    if name != "from":
                        defects.append(f"no From parsed: the sender is taken from {name}")
                    elif unparsed is not None:
                        defects.append("a From did not parse: the sender is taken from the next")
                    return address, name
                unparsed = unparsed or address
    return unparsed, "from"


def _return_path(raw: str | None) -> str | None:
    """None when absent, "" for the null sender "<>", else the lower-cased address."""
    if raw is None:
        return None
    value = collapse(unfold(raw))
    match = MSGID.search(value)
    inner = match.group(1) if match else value
    return "".join(inner.split()).lower()


# A header line: a field name and a colon. Junk before the first one (a stray mbox
# separator, a client's banner, a blank line) is skipped if this many lines or fewer.
_HEADER_LINE = re.compile(rb"^[!-9;-~]+:[ \t]", re.MULTILINE)
MAX_JUNK_LINES = 5


def _after_junk(raw: bytes) -> int:
    """Where the first header line starts after a few junk lines, or 0 for none."""
    found = _HEADER_LINE.search(raw, 0, 4096)
    if found is None or found.start() == 0:
        return 0
    if raw.count(b"\n", 0, found.start()) > MAX_JUNK_LINES:
        return 0
    return found.start()


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
        skip = 0 if node.headers else _after_junk(raw)
        if skip:
            node = parse_entity(raw, "", 0, Budget(limits), start=skip)
            node.defects.append(f"skipped {skip} bytes of junk before the first header")
        if not node.headers:
            raise LetterUnreadable("parse", "no header fields found")
        return _letter(node, budget)
    except LetterUnreadable:
        raise
    except RecursionError as exc:
        raise LetterUnreadable("parse", "MIME structure nested too deeply") from exc
    except Exception as exc:  # the contract: quarantine, never crash the daemon
        raise LetterUnreadable("parse", f"internal error {type(exc).__name__}: {exc}") from exc
