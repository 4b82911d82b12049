"""Base64 bodies decode the same with the SIMD decoder as with the standard library's.

``b64_decode`` hands a payload to pybase64 only when every "=" sits in its tail;
``b64_decode_standard`` (binascii, which stops at the first complete padding, then a
repair of the padding) decides the rest. These tests hold the two paths to one answer on
the input a stranger's mail carries: junk between the letters, padding in the middle,
lost padding, line breaks of any kind.
"""

from __future__ import annotations

import base64
import binascii
import os
import random

import pybase64
import pytest

from mailroute.core.letter import b64_decode
from mailroute.core.letter.transfer import b64_decode_standard, decode_transfer

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def test_an_attachment_decodes_byte_for_byte() -> None:
    content = os.urandom(300_000)
    body = base64.encodebytes(content).replace(b"\n", b"\r\n")
    assert b64_decode(body) == content
    assert decode_transfer(body, "base64", [], "part 1") == content


@pytest.mark.parametrize(
    "payload",
    [
        b"QQ==QUJD",  # padding mid-data: binascii stops there, pybase64 would go on
        b"dbL=t3iRk",
        b"wKHRG +gfruvzn7r-=VDSgc",
        b"QUJD\r\n=\r\nREVG",
        b"QUJDREVG====",
        b"QUJDRA==\r\n",
        b"QUJDRA",  # lost padding
        b"QUJDR",  # one letter too many
        b"QU!JD-RE_VG\x00\xff",  # junk between the letters
        b"",
        b"====",
        b"\r\n\r\n",
    ],
)
def test_odd_payloads_read_as_the_standard_library_reads_them(payload: bytes) -> None:
    assert b64_decode(payload) == b64_decode_standard(payload)


def test_padding_in_the_middle_is_not_given_to_the_simd_decoder() -> None:
    """Without the guard this would decode past the padding (pybase64 does)."""
    assert pybase64.b64decode(b"dbL=t3iRk", validate=False) == b"u\xb2\xed\xde$d"
    assert b64_decode(b"dbL=t3iRk") == binascii.a2b_base64(b"dbL=t3iRk") == b"u\xb2"


def test_random_hostile_payloads_match_the_standard_library() -> None:
    rng = random.Random(20261207)
    extras = [b"=\r\n -_!\x00\xff.", b"=", b"\r\n", b"-_", bytes(range(256))]
    for _ in range(30_000):
        pool = _ALPHABET * rng.randrange(1, 6) + rng.choice(extras)
        payload = bytes(rng.choice(pool) for _ in range(rng.randrange(0, 60)))
        if rng.random() < 0.3:
            payload += b"=" * rng.randrange(0, 4) + rng.choice([b"", b"\r\n", b"\n\n", b" "])
        assert b64_decode(payload) == b64_decode_standard(payload), payload
