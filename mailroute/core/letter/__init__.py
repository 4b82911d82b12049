"""Pure MIME parsing: raw letter bytes in, a `ParsedLetter` out.

Real mail is messy: mislabelled charsets, raw 8-bit headers, broken base64,
stub plain-text parts next to the real HTML body, forwarded letters nested in
letters.  This package repairs what it can and writes down what it repaired in
``ParsedLetter.defects``; it raises ``LetterUnreadable`` only when nothing
useful can be made of the bytes or a resource limit is exceeded.

The stdlib ``email`` parser is slower on letters with attachments and its
policies either give up on broken headers or hide the raw bytes that charset
repair needs, so the whole reading is done here; only
``email.utils.parsedate_tz`` is borrowed.  One module per concern, each
importing only those above it:

- ``model``: ParsedLetter, Address, Attachment, HeaderMap, ParseLimits
- ``charsets``: declared charsets, guessing, mojibake repair
- ``transfer``: base64 and quoted-printable
- ``headers``: unfolding, RFC 2047 words, RFC 2231 parameters, ids, dates
- ``addresses``: From/To/Cc/Reply-To to mailboxes
- ``filenames``: attachment names safe to show and store
- ``text``: flowed text and HTML to plain text, tidying
- ``mime``: bytes split into a tree of entities under the limits
- ``body``: the body text, attachments and forwards picked from the tree
- ``parser``: ``parse`` and the assembly of a ParsedLetter

Callers import from here; the names below are the package's public face.
"""

from __future__ import annotations

from mailroute.core.letter.addresses import MAX_ADDRESS, parse_address, parse_address_list
from mailroute.core.letter.charsets import decode_bytes
from mailroute.core.letter.filenames import MAX_FILENAME, guess_extension, sanitize_filename
from mailroute.core.letter.headers import (
    MAX_ID_CHARS,
    MAX_IDS,
    collapse,
    decode_header,
    parse_date,
    parse_id_list,
    parse_message_id,
    parse_structured,
    scrub,
    unfold,
)
from mailroute.core.letter.model import (
    Address,
    Attachment,
    HeaderMap,
    ParsedLetter,
    ParseLimits,
)
from mailroute.core.letter.parser import parse
from mailroute.core.letter.text import (
    drop_invisible,
    html_estimate,
    html_to_text,
    tidy_text,
    unflow,
)
from mailroute.core.letter.transfer import b64_decode, decode_transfer

__all__ = [
    "MAX_ADDRESS",
    "MAX_FILENAME",
    "MAX_IDS",
    "MAX_ID_CHARS",
    "Address",
    "Attachment",
    "HeaderMap",
    "ParseLimits",
    "ParsedLetter",
    "b64_decode",
    "collapse",
    "decode_bytes",
    "decode_header",
    "decode_transfer",
    "drop_invisible",
    "guess_extension",
    "html_estimate",
    "html_to_text",
    "parse",
    "parse_address",
    "parse_address_list",
    "parse_date",
    "parse_id_list",
    "parse_message_id",
    "parse_structured",
    "sanitize_filename",
    "scrub",
    "tidy_text",
    "unflow",
    "unfold",
]
