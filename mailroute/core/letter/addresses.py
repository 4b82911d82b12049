"""Address headers (From, To, Cc, Reply-To) to `Address` values.

Its own module because the address is what a reply is sent to: a name with an unquoted
comma, '<' or '@' must not yield a wrong mailbox, and an address an SMTP client would cut
short (or that no server takes) is dropped rather than passed on.
"""

from __future__ import annotations

import re

from mailroute.core.letter.headers import CONTROLS, collapse, decode_header, raw_to_text, unfold
from mailroute.core.letter.model import Address

_ANGLE_ADDR = re.compile(r"<([^<>]*)>\s*$")
# Possessive and anchored to token starts: a long run without '@' must not backtrack.
_BARE_EMAIL = re.compile(r"(?<![^\s<>()\"',;:])[^\s<>()\"',;:@]++@[^\s<>()\"',;:@]++")
# No specials: "a,b@c" or "x>y@z" would be cut to "a" or "x" by an SMTP client's
# address parser, sending our reply to a local mailbox of the relay.
_EMAIL_SHAPE = re.compile(r"[^@\s<>()\[\],;:\"\\]++@[^@\s<>()\[\],;:\"\\]++")


_ADDRESS_SPECIALS = re.compile(r'[\\"()<>,;]')


def _split_addresses(value: str) -> list[str]:
    """Split an address list on commas outside quotes, angle brackets and comments.

    Only the characters that can change the state are visited (a search for them), the
    runs between them are sliced whole: a character at a time in Python cost the
    worker ~3 % of a letter, in From, To, Cc and Reply-To of every letter.
    """
    items: list[str] = []
    start = 0  # where the current item begins
    quoted = False
    angle = 0
    comment = 0
    escaped_until = -1  # a backslash in a quoted string or comment escapes what follows
    for found in _ADDRESS_SPECIALS.finditer(value):
        at = found.start()
        if at < escaped_until:
            continue
        ch = value[at]
        if ch == "\\":
            if quoted or comment:
                escaped_until = at + 2
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
                items.append(value[start:at])
                start = at + 1
    items.append(value[start:])
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
    if len(addr) > MAX_ADDRESS or CONTROLS.search(addr):
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
    value = unfold(raw_to_text(raw, defects, what))
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
