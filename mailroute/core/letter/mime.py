"""MIME structure: raw bytes split into a tree of entities, under the resource limits.

Our own splitter instead of the stdlib feed parser: it finds boundaries with bytes.find
instead of reading line by line (3-4x faster on letters with attachments), never recurses
deeper than the depth limit, and keeps every body as the exact bytes received (the raw
bytes charset repair needs).  The `Budget` counts parts across a letter and every letter
forwarded inside it, and refuses before the work, not after.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mailroute.core.letter.headers import (
    collapse,
    parse_message_id,
    parse_structured,
    raw_to_text,
)
from mailroute.core.letter.model import ParseLimits
from mailroute.errors import LetterUnreadable


@dataclass
class Budget:
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


class PartInfo:
    """Decoded MIME headers of one part, looked up once."""

    __slots__ = ("content_id", "content_type", "cte", "disposition", "filename", "params")

    def __init__(self, node: Node, defects: list[str], what: str) -> None:
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


# Our own splitter instead of the stdlib feed parser: it finds boundaries with
# bytes.find instead of reading line by line (3-4x faster on letters with
# attachments), never recurses deeper than the depth limit, and keeps every
# body as the exact bytes received.
_HEADER_END = re.compile(rb"\r\n\r\n|\n\r?\n|\r\r")


_LINE_SPLIT = re.compile(rb"(\r\n|\n|\r)")
_HEADER_NAME = re.compile(rb"([!-9;-~]{1,200})[ \t]*:")
# A run of whole header lines (fields and continuations, an mbox "From " line on top),
# matched in one C-level pass: possessive, so it never backtracks.
_HEADER_LINES = re.compile(
    rb"(?:From [^\r\n]*+(?:\r\n|\n|\r))?+"
    rb"(?:(?:[!-9;-~]{1,200}+[ \t]*+:|[ \t])[^\r\n]*+(?:\r\n|\n|\r))*+"
)


@dataclass
class Node:
    """One MIME entity: headers as received, body still transfer-encoded, children."""

    headers: list[tuple[str, str]]  # (name, folded value); raw 8-bit bytes as surrogates
    body: bytes
    path: str
    depth: int
    digest_child: bool = False
    defects: list[str] = field(default_factory=list)
    children: list[Node] | None = None  # set once a multipart has been split
    info: PartInfo | None = None
    related: bool = False  # a non-root part of multipart/related: an embedded resource

    def first(self, name: str, defects: list[str], what: str) -> str | None:
        """Folded value of the first header `name`, raw 8-bit decoded (no RFC 2047)."""
        for key, value in self.headers:
            if key.lower() == name:
                return raw_to_text(value, defects, what)
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
    def part_info(self) -> PartInfo:
        if self.info is None:
            self.info = PartInfo(self, self.defects, self.what)
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
        if cut and _all_header_lines(block):
            return [], b"", defects  # the caller refuses it: not worth splitting first
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


def _all_header_lines(block: bytes) -> bool:
    """Whether `block` is header lines up to its end (its last line may be cut short)."""
    run = _HEADER_LINES.match(block)
    rest = block[run.end() :] if run else block
    return b"\n" not in rest and b"\r" not in rest


def parse_entity(
    data: bytes,
    path: str,
    depth: int,
    budget: Budget,
    digest_child: bool = False,
    start: int = 0,
    stop: int | None = None,
) -> Node:
    """Split the entity at data[start:stop] and, for a multipart, its children (recursively)."""
    budget.take(depth)
    what = f"part {path}" if path else "body"
    stop = len(data) if stop is None else stop
    limit = budget.limits.max_header_bytes
    headers, body, defects = _split_headers(data, what, limit, start, stop)
    budget.check_header_size(stop - start - len(body))
    node = Node(headers, body, path, depth, digest_child, defects)
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


def _boundary(node: Node) -> bytes | None:
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


def _split_children(node: Node, boundary: bytes, budget: Budget) -> None:
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
    children: list[Node] = []
    for index, (_start, content, close) in enumerate(marks):
        if close:
            break
        end = marks[index + 1][0] if index + 1 < len(marks) else len(node.body)
        child_path = f"{prefix}{len(children) + 1}"
        children.append(
            parse_entity(node.body, child_path, node.depth + 1, budget, digest, content, end)
        )
    node.children = children
