"""Reply and forward prefixes: one list for every stage that looks past them.

Mail clients prefix a subject in their user's language: Re/Fwd/Fw, the German AW/WG, the
French TR, the Spanish RV, the Russian Ответ/Отв/Пересл, sometimes numbered (``Re[2]:``).
Machine-mail detection, the verdict's blank-subject check and the subject of a new request
must all agree on what a prefix is, so there is exactly one pattern.
"""

from __future__ import annotations

import re

# Blanks are taken whole (possessive): what follows them is never a blank, and a run shared
# between the two around "[2]" every possible way cost its length squared.
REPLY_PREFIX = re.compile(
    r"^\s*+(?:(?:re|fw|fwd|aw|wg|ответ|отв|пересл|tr|rv)\s*+(?:\[\d+\])?\s*+:\s*+)+",
    re.IGNORECASE,
)


def has_reply_prefix(subject: str) -> bool:
    """Whether the subject begins with one or more reply or forward prefixes."""
    return REPLY_PREFIX.match(subject) is not None


def without_reply_prefixes(subject: str | None) -> str:
    """The subject with its leading reply and forward prefixes removed, stripped."""
    return REPLY_PREFIX.sub("", subject or "").strip()
