"""Unit tests of the pure MIME parser: bytes in, ParsedLetter out."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailroute.errors import LetterUnreadable
from mailroute.parse import ParsedLetter, ParseLimits, parse

CORPUS = Path("/work/shared/corpus/dev")
CORPUS_FILES = sorted(CORPUS.glob("*.eml")) if CORPUS.is_dir() else []


def letter(headers: str, body: bytes = b"Hello\n", *, raw_headers: bytes = b"") -> bytes:
    """A letter from header lines (ASCII) plus optional raw 8-bit header bytes."""
    head = headers.strip("\n").replace("\n", "\r\n").encode("ascii") + b"\r\n"
    return head + raw_headers + b"\r\n" + body


def corpus(name: str) -> ParsedLetter:
    return parse((CORPUS / name).read_bytes())


@pytest.mark.skipif(not CORPUS_FILES, reason="dev corpus not available")
@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_corpus_letter_parses_cleanly(path: Path) -> None:
    parsed = parse(path.read_bytes())
    assert parsed.sender is not None and parsed.sender.email
    assert parsed.defects == ()
    assert parsed.text.strip()
    assert "\r" not in parsed.text and "\x00" not in parsed.text


@pytest.mark.skipif(not CORPUS_FILES, reason="dev corpus not available")
def test_corpus_spot_checks() -> None:
    assert "База" in corpus("001.eml").text or "база" in corpus("001.eml").text
    html_only = corpus("024.eml")
    assert html_only.html and "Ермаков" in html_only.text
    screenshot = corpus("014.eml")
    assert [a.inline for a in screenshot.attachments] == [True]
    report = corpus("010.eml")
    assert report.content_type == "multipart/report"
    assert report.return_path == ""
    assert len(report.forwarded) == 1


def test_limits_raise_letter_unreadable() -> None:
    with pytest.raises(LetterUnreadable, match="limit"):
        parse(letter("Subject: x"), ParseLimits(max_bytes=10))
