"""Unit tests of the pure MIME parser: bytes in, ParsedLetter out.

Letters are built here from small byte literals so each test shows the exact
bytes a real client sends; the dev corpus is checked as a whole at the end.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.corpus import DEV_CORPUS, dev_corpus, dev_letters

from mailroute.core.letter import (
    Address,
    Attachment,
    ParsedLetter,
    ParseLimits,
    decode_header,
    parse,
    sanitize_filename,
    unflow,
)
from mailroute.errors import LetterUnreadable

CORPUS = DEV_CORPUS
CORPUS_FILES = dev_letters()

RU = "Добрый день! Не запускается база после обновления, помогите пожалуйста."


def mk(*headers: str | bytes, body: bytes = b"Hello\r\n", eol: bytes = b"\r\n") -> bytes:
    """A letter: header lines (str as ASCII, bytes as is), blank line, body."""
    lines = [h.encode("ascii") if isinstance(h, str) else h for h in headers]
    return eol.join([*lines, b"", b""]) + body


def text_letter(body: bytes, ctype: str, *extra: str | bytes) -> bytes:
    """A single-part letter with the given Content-Type and body bytes."""
    return mk("From: a@example.com", "Subject: t", f"Content-Type: {ctype}", *extra, body=body)


def multipart(*parts: bytes, boundary: str = "BND") -> bytes:
    """A multipart body (without the top headers) made of pre-built parts."""
    out = b"preamble\r\n"
    for part in parts:
        out += f"--{boundary}\r\n".encode() + part + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def part(ctype: str, body: bytes, *headers: str | bytes) -> bytes:
    """One MIME part: Content-Type, further headers, blank line, body."""
    lines = [f"Content-Type: {ctype}".encode()]
    lines += [h.encode("ascii") if isinstance(h, str) else h for h in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def mp_letter(subtype: str, *parts: bytes, boundary: str = "BND", params: str = "") -> bytes:
    return mk(
        "From: a@example.com",
        "Subject: t",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/{subtype}; boundary="{boundary}"{params}',
        body=multipart(*parts, boundary=boundary),
    )


def b64(data: bytes) -> bytes:
    return base64.encodebytes(data)


# ---------------------------------------------------------------------- charsets


@pytest.mark.parametrize(
    ("label", "codec"),
    [
        ("utf-8", "utf-8"),
        ("UTF8", "utf-8"),
        ("windows-1251", "cp1251"),
        ("win-1251", "cp1251"),
        ("cp-1251", "cp1251"),
        ("koi8-r", "koi8-r"),
        ("KOI8-R", "koi8-r"),
        ("iso-8859-5", "iso8859-5"),
        ("cp866", "cp866"),
        ("ibm866", "cp866"),
        ("maccyrillic", "mac-cyrillic"),
        ("x-mac-cyrillic", "mac-cyrillic"),
    ],
)
def test_declared_charsets_decode(label: str, codec: str) -> None:
    parsed = parse(text_letter(RU.encode(codec), f'text/plain; charset="{label}"'))
    assert parsed.text == RU
    assert parsed.defects == ()


def test_us_ascii_label_with_8bit_content_is_guessed() -> None:
    parsed = parse(text_letter(RU.encode("cp1251"), "text/plain; charset=us-ascii"))
    assert parsed.text == RU
    assert any("us-ascii" in d and "cp1251" in d for d in parsed.defects)


@pytest.mark.parametrize("codec", ["utf-8", "cp1251", "koi8-r"])
def test_undeclared_8bit_is_guessed(codec: str) -> None:
    parsed = parse(text_letter(RU.encode(codec), "text/plain"))
    assert parsed.text == RU
    assert any("no charset declared" in d for d in parsed.defects)


def test_no_content_type_at_all_with_8bit_body() -> None:
    parsed = parse(mk("From: a@example.com", "Subject: t", body=RU.encode("koi8-r")))
    assert parsed.text == RU
    assert parsed.content_type == "text/plain"


@pytest.mark.parametrize(
    ("declared", "actual"),
    [
        ("koi8-r", "cp1251"),
        ("windows-1251", "koi8-r"),
        ("utf-8", "cp1251"),
        ("utf-8", "koi8-r"),
        ("windows-1251", "utf-8"),
        ("koi8-r", "utf-8"),
        ("iso-8859-5", "utf-8"),
        ("iso-8859-5", "cp1251"),
        ("cp866", "koi8-r"),
    ],
)
def test_mislabelled_part_is_repaired_and_noted(declared: str, actual: str) -> None:
    parsed = parse(text_letter(RU.encode(actual), f"text/plain; charset={declared}"))
    assert parsed.text == RU
    assert any(declared in d for d in parsed.defects), parsed.defects


def test_utf8_with_a_few_broken_bytes_stays_utf8() -> None:
    data = RU.encode() + b"\xff" + RU.encode() + "конец".encode()[:-1]  # cut mid-letter
    parsed = parse(text_letter(data, "text/plain; charset=utf-8"))
    assert parsed.text.startswith(RU) and "конe" not in parsed.text
    assert parsed.text.count("\ufffd") == 2
    assert any("invalid bytes replaced" in d for d in parsed.defects)


def test_short_mislabelled_text_still_guessed_right() -> None:
    parsed = parse(text_letter("СРОЧНО".encode("cp1251"), "text/plain; charset=utf-8"))
    assert parsed.text == "СРОЧНО"


def test_unknown_charset_is_guessed() -> None:
    parsed = parse(text_letter(RU.encode("cp1251"), "text/plain; charset=x-user-defined-42"))
    assert parsed.text == RU
    assert any("unknown charset" in d for d in parsed.defects)


def test_utf8_double_decoded_as_cp1251_is_repaired() -> None:
    mojibake = RU.encode("utf-8").decode("cp1251", "replace").encode("utf-8")
    parsed = parse(text_letter(mojibake, "text/plain; charset=utf-8"))
    assert parsed.text == RU
    assert parsed.defects


def test_cp1251_read_as_latin1_then_utf8_is_repaired() -> None:
    mojibake = RU.encode("cp1251").decode("latin-1").encode("utf-8")
    parsed = parse(text_letter(mojibake, "text/plain; charset=utf-8"))
    assert parsed.text == RU


def test_utf8_read_as_latin1_then_utf8_is_repaired() -> None:
    mojibake = RU.encode("utf-8").decode("latin-1").encode("utf-8")
    assert parse(text_letter(mojibake, "text/plain; charset=utf-8")).text == RU
    lossy = RU.encode("utf-8").decode("cp1252", "replace").encode("utf-8")
    assert "Добрый день!" in parse(text_letter(lossy, "text/plain; charset=utf-8")).text


def test_genuine_latin_text_is_not_touched() -> None:
    text = "Grüße aus München, señor Müller. Ça va très bien, merci à vous."
    parsed = parse(text_letter(text.encode("utf-8"), "text/plain; charset=utf-8"))
    assert parsed.text == text
    assert parsed.defects == ()


# ---------------------------------------------------------------------- RFC 2047


def ew(text: str, charset: str = "utf-8", enc: str = "B") -> str:
    """One encoded word."""
    data = text.encode(charset)
    if enc == "B":
        payload = base64.b64encode(data).decode()
    else:
        payload = "".join(
            chr(b) if b < 128 and chr(b).isalnum() else ("_" if b == 32 else f"={b:02X}")
            for b in data
        )
    return f"=?{charset}?{enc}?{payload}?="


def subject_of(*header_lines: str | bytes) -> str | None:
    return parse(mk("From: a@example.com", *header_lines)).subject


@pytest.mark.parametrize("enc", ["B", "Q"])
@pytest.mark.parametrize("charset", ["utf-8", "windows-1251", "koi8-r"])
def test_encoded_word_subject(enc: str, charset: str) -> None:
    assert subject_of("Subject: " + ew("Ошибка при записи", charset, enc)) == "Ошибка при записи"


def test_mixed_plain_and_encoded_words_folded() -> None:
    line = f"Subject: Re: {ew('Счёт')}\r\n {ew(' на оплату', 'koi8-r', 'Q')}\r\n\t(SD-2025-1)"
    assert subject_of(line) == "Re: Счёт на оплату (SD-2025-1)"


def test_multibyte_character_split_across_encoded_words() -> None:
    data = "Приём".encode()
    first = base64.b64encode(data[:3]).decode()  # ends in the middle of "р"
    second = base64.b64encode(data[3:]).decode()
    assert subject_of(f"Subject: =?UTF-8?B?{first}?=\r\n =?utf-8?B?{second}?=") == "Приём"


def test_split_q_words_join_bytes() -> None:
    assert subject_of("Subject: =?utf-8?Q?=D0=9F=D1?= =?utf-8?Q?=80=D0=B8?=") == "При"


def test_whitespace_between_encoded_words_dropped_but_kept_around_text() -> None:
    assert subject_of(f"Subject: {ew('Да')} {ew('нет')} plain {ew('ещё')}") == "Данет plain ещё"


def test_raw_8bit_header_utf8_and_cp1251() -> None:
    assert subject_of(b"Subject: " + "Заявка №5".encode()) == "Заявка №5"
    assert subject_of(b"Subject: " + "Заявка на доработку".encode("cp1251")) == (
        "Заявка на доработку"
    )
    assert subject_of(b"Subject: " + "Заявка на доработку".encode("koi8-r")) == (
        "Заявка на доработку"
    )


def test_broken_encoded_words_left_readable() -> None:
    assert subject_of("Subject: =?utf-8?B?not*base64?= tail") == "=?utf-8?B?not*base64?= tail"
    assert subject_of("Subject: =?utf-8?Q?unterminated") == "=?utf-8?Q?unterminated"


def test_encoded_word_with_missing_padding_and_unknown_charset() -> None:
    payload = base64.b64encode("Привет".encode("cp1251")).decode().rstrip("=")
    assert subject_of(f"Subject: =?x-unknown-cs?B?{payload}?=") == "Привет"
    assert subject_of(f"Subject: =?utf-8*ru?B?{base64.b64encode('Да'.encode()).decode()}?=") == "Да"


def test_subject_absent_blank_and_whitespace() -> None:
    assert subject_of("To: b@example.com") is None
    assert subject_of("Subject:") == ""
    assert subject_of("Subject:   \t ") == ""
    assert subject_of("Subject:  a \t  b\r\n   c  ") == "a b c"


def test_decode_header_function_directly() -> None:
    defects: list[str] = []
    assert decode_header(f"{ew('a')} {ew('b', 'koi8-r')}", defects) == "ab"
    assert defects == []


# ------------------------------------------------------------------- parameters


def attachment_letter(ctype: str, *headers: str | bytes) -> ParsedLetter:
    """A text part plus one base64 attachment with the given headers."""
    attached = part(ctype, b64(b"%PDF-1.4\n"), *headers, "Content-Transfer-Encoding: base64")
    return parse(mp_letter("mixed", part("text/plain; charset=utf-8", b"see attached"), attached))


def test_rfc2231_filename() -> None:
    parsed = attachment_letter(
        "application/pdf",
        "Content-Disposition: attachment; filename*=utf-8''%D0%A1%D1%87%D1%91%D1%82%2012.pdf",
    )
    assert parsed.attachments[0].filename == "Счёт 12.pdf"


def test_rfc2231_continuations_and_charset_in_first_section() -> None:
    parsed = attachment_letter(
        "application/pdf",
        "Content-Disposition: attachment;\r\n filename*0*=windows-1251'ru'%D1%F7%E5;\r\n"
        ' filename*1*=%F2; filename*2=".pdf"',
    )
    assert parsed.attachments[0].filename == "Счет.pdf"


def test_rfc2047_and_raw_8bit_filenames() -> None:
    encoded = attachment_letter(f'application/pdf; name="{ew("Акт сверки.pdf")}"')
    assert encoded.attachments[0].filename == "Акт сверки.pdf"
    raw = attachment_letter(
        "application/pdf",
        b'Content-Disposition: attachment; filename="' + "Договор.pdf".encode("cp1251") + b'"',
    )
    assert raw.attachments[0].filename == "Договор.pdf"


def test_content_type_with_lost_semicolon_keeps_charset() -> None:
    parsed = parse(text_letter(RU.encode("koi8-r"), "text/plain charset=KOI8-R"))
    assert parsed.text == RU
    assert parsed.content_type == "text/plain"


# -------------------------------------------------------------- transfer codings


def test_quoted_printable_body_with_soft_breaks() -> None:
    body = (
        b"=C4=EE=E1=F0=FB=E9 =E4=E5=ED=FC! "
        b"=CD=E5 =E7=E0=EF=F3=F1=EA=E0=E5=F2=F1=FF =\r\n=E1=E0=E7=E0"
    )
    parsed = parse(
        text_letter(
            body, "text/plain; charset=windows-1251", "Content-Transfer-Encoding: quoted-printable"
        )
    )
    assert parsed.text == "Добрый день! Не запускается база"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s,
        lambda s: s.rstrip(b"=\n"),  # padding lost
        lambda s: s.replace(b"\n", b"\r\n  "),  # indented lines
        lambda s: s + b"==",  # extra padding
        lambda s: s[:-1] + b"!\x00",  # junk characters
    ],
)
def test_base64_body_tolerates_broken_padding(mangle: Callable[[bytes], bytes]) -> None:
    encoded = mangle(base64.encodebytes(RU.encode()))
    parsed = parse(
        text_letter(encoded, "text/plain; charset=utf-8", "Content-Transfer-Encoding: BASE64")
    )
    assert parsed.text.startswith(RU[:60])


def test_unknown_transfer_encoding_is_noted() -> None:
    parsed = parse(text_letter(b"hello", "text/plain", "Content-Transfer-Encoding: x-gzip64"))
    assert parsed.text == "hello"
    assert any("x-gzip64" in d for d in parsed.defects)


@pytest.mark.parametrize("eol", [b"\r\n", b"\n", b"\r"])
def test_line_endings_normalised(eol: bytes) -> None:
    raw = mk(
        "From: a@example.com",
        "Subject: t",
        "Content-Type: text/plain; charset=utf-8",
        eol=eol,
        body=eol.join([b"line one   ", b"", b"line\x00 two\t", b""]),
    )
    parsed = parse(raw)
    assert parsed.subject == "t"
    assert parsed.text == "line one\n\nline two"


# ------------------------------------------------------------------ format=flowed


def test_format_flowed_joins_soft_breaks_and_keeps_quotes() -> None:
    body = (
        "Первая строка абзаца \r\nпродолжение.\r\n"
        ">> цитата \r\n>> глубже\r\n"
        "> Quoted \r\n>  stuffed\r\n"
        " From here\r\n"
        "-- \r\nПодпись"
    ).encode()
    parsed = parse(text_letter(body, 'text/plain; charset="utf-8"; format="flowed"'))
    assert parsed.text.split("\n") == [
        "Первая строка абзаца продолжение.",
        ">> цитата глубже",
        "> Quoted  stuffed",
        "From here",
        "--",
        "Подпись",
    ]


def test_format_flowed_delsp() -> None:
    body = "Длинн \r\nое слово.\r\n".encode()
    parsed = parse(text_letter(body, "text/plain; charset=utf-8; format=flowed; delsp=yes"))
    assert parsed.text == "Длинное слово."


def test_unflow_quote_depth_change_ends_paragraph() -> None:
    assert unflow("> a \nb", delsp=False).split("\n") == ["> a ", "b"]
    assert unflow("> a \n>> b", delsp=False).split("\n") == ["> a ", ">> b"]
    assert unflow("soft \nsoft \nhard\nnext", delsp=False).split("\n") == ["soft soft hard", "next"]


# -------------------------------------------------------------------------- HTML

OUTLOOK_HTML = """<html xmlns:o="urn:schemas-microsoft-com:office:office"><head>
<meta http-equiv=Content-Type content="text/html; charset=windows-1251">
<style><!-- p.MsoNormal {margin:0cm;} --></style><!--[if gte mso 9]><xml>
<o:shapedefaults v:ext="edit" spidmax="1026" /></xml><![endif]--></head>
<body lang=RU><div class=WordSection1>
<p class=MsoNormal>Добрый день!<o:p></o:p></p>
<p class=MsoNormal><o:p>&nbsp;</o:p></p>
<p class=MsoNormal>Не <span lang=EN-US>1</span>С запускается.<o:p></o:p></p>
<p class=MsoNormal><o:p>&nbsp;</o:p></p>
<div style='border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm'>
<p class=MsoNormal><b>From:</b> Иванов Иван &lt;ivanov@example.com&gt;<br>
<b>Sent:</b> Monday, January 13, 2025 9:00 AM<br><b>Subject:</b> Тест<o:p></o:p></p>
</div><p class=MsoNormal>Старое письмо<o:p></o:p></p></div>
<script>alert(1)</script></body></html>"""


def test_html_only_letter_outlook() -> None:
    parsed = parse(
        text_letter(
            OUTLOOK_HTML.encode("cp1251"),
            "text/html",
            "Content-Transfer-Encoding: 8bit",
        )
    )
    assert parsed.html is True
    assert parsed.text.split("\n") == [
        "Добрый день!",
        "",
        "Не 1С запускается.",
        "",
        "From: Иванов Иван <ivanov@example.com>",
        "Sent: Monday, January 13, 2025 9:00 AM",
        "Subject: Тест",
        "Старое письмо",
    ]


def test_html_blockquotes_become_quote_markers() -> None:
    html = (
        '<div dir="ltr">Ответ<div><br></div><div>ниже</div></div>'
        '<div class="gmail_quote"><div class="gmail_attr">Пн, 13 янв. 2025 г. wrote:<br></div>'
        '<blockquote class="gmail_quote"><div>Вопрос <b>важный</b><br>вторая</div>'
        "<blockquote>совсем старое</blockquote>снова</blockquote></div>"
    )
    parsed = parse(text_letter(html.encode(), "text/html; charset=utf-8"))
    assert parsed.text.split("\n") == [
        "Ответ",
        "",
        "ниже",
        "Пн, 13 янв. 2025 г. wrote:",
        "> Вопрос важный",
        "> вторая",
        ">> совсем старое",
        "> снова",
    ]


def test_html_yandex_divs_with_nbsp_keep_blank_lines() -> None:
    html = "<div>Здравствуйте!</div><div>&nbsp;</div><div>Текст&nbsp;письма</div>"
    parsed = parse(text_letter(html.encode(), "text/html; charset=utf-8"))
    assert parsed.text == "Здравствуйте!\n\nТекст письма"


def test_html_unclosed_head_still_has_body() -> None:
    html = "<html><head><meta charset=utf-8><title>T<body><p>Текст</p></body></html>"
    assert parse(text_letter(html.encode(), "text/html; charset=utf-8")).text == "Текст"


def test_text_labelled_base64_but_plain_is_kept() -> None:
    parsed = parse(
        text_letter(RU.encode(), "text/plain; charset=utf-8", "Content-Transfer-Encoding: base64")
    )
    assert parsed.text == RU
    assert any("not" in d and "base64" in d for d in parsed.defects)


def test_html_charset_from_meta_when_mime_has_none() -> None:
    html = '<html><head><meta charset="koi8-r"></head><body><p>Привет</p></body></html>'
    parsed = parse(text_letter(html.encode("koi8-r"), "text/html"))
    assert parsed.text == "Привет"


def test_html_garbage_does_not_break() -> None:
    for junk in ["<<<<>>>>", "<!--", "<style>", "<p", "&#99999999999;", "\x00<b>x</b>", "<?xml?>"]:
        parsed = parse(text_letter(junk.encode(), "text/html; charset=utf-8"))
        assert "\x00" not in parsed.text


# ----------------------------------------------------------------- alternatives

PLAIN = part("text/plain; charset=utf-8", RU.encode())
HTML = part("text/html; charset=utf-8", f"<p>{RU}</p><p>Второй абзац в HTML.</p>".encode())


def test_alternative_prefers_plain() -> None:
    parsed = parse(mp_letter("alternative", PLAIN, HTML))
    assert parsed.text == RU
    assert parsed.html is False


@pytest.mark.parametrize(
    "stub",
    [
        b"",
        b"   \r\n",
        b"This message is in HTML format.",
        "Для просмотра письма используйте программу, поддерживающую HTML.".encode(),
        b"To view this message, please use an HTML compatible email viewer",
    ],
)
def test_alternative_takes_html_when_plain_is_a_stub(stub: bytes) -> None:
    parsed = parse(mp_letter("alternative", part("text/plain; charset=utf-8", stub), HTML))
    assert parsed.html is True
    assert parsed.text.startswith("Добрый день!")


def test_alternative_takes_html_when_plain_is_truncated() -> None:
    long_html = "<p>" + " ".join(["слово"] * 200) + "</p>"
    plain = part("text/plain; charset=utf-8", " ".join(["слово"] * 20).encode())
    parsed = parse(
        mp_letter("alternative", plain, part("text/html; charset=utf-8", long_html.encode()))
    )
    assert parsed.html is True
    assert len(parsed.text.split()) == 200


def test_alternative_order_html_first_still_prefers_plain() -> None:
    parsed = parse(mp_letter("alternative", HTML, PLAIN))
    assert parsed.text == RU


def test_related_uses_root_and_records_inline_image() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    html = part("text/html; charset=utf-8", b'<p>See <img src="cid:img1@x"></p>')
    image = part("image/png", b64(png), "Content-Transfer-Encoding: base64", "Content-ID: <img1@x>")
    parsed = parse(mp_letter("related", html, image, params='; type="text/html"'))
    assert parsed.text == "See"
    (att,) = parsed.attachments
    assert att.inline and att.content_id == "<img1@x>" and att.content == png
    assert att.sha256 == hashlib.sha256(png).hexdigest() and att.size == len(png)
    assert att.filename == "attachment-1.png"


def test_inline_flag_rules() -> None:
    html = part("text/html; charset=utf-8", b'<p>x <img src="cid:ref@x"></p>')
    referenced = part("image/png", b"a", "Content-ID: <ref@x>", "Content-Disposition: attachment")
    unreferenced = part("image/png", b"b", "Content-ID: <other@x>")
    declared = part("application/pdf", b"c", "Content-Disposition: inline; filename=a.pdf")
    plain_file = part("application/pdf", b"d", "Content-Disposition: attachment; filename=b.pdf")
    parsed = parse(mp_letter("mixed", html, referenced, unreferenced, declared, plain_file))
    assert [a.inline for a in parsed.attachments] == [True, False, True, False]


def test_related_start_parameter_selects_root() -> None:
    other = part("text/plain; charset=utf-8", b"not me", "Content-ID: <a@x>")
    root = part("text/plain; charset=utf-8", b"root text", "Content-ID: <root@x>")
    parsed = parse(mp_letter("related", other, root, params='; start="<root@x>"'))
    assert parsed.text == "root text"


def test_mixed_concatenates_inline_text_and_keeps_files() -> None:
    pdf = part(
        "application/pdf; name=act.pdf",
        b64(b"%PDF-1.4 data"),
        "Content-Transfer-Encoding: base64",
        "Content-Disposition: attachment; filename=act.pdf",
    )
    txt_file = part(
        "text/plain; charset=utf-8", b"log line", "Content-Disposition: attachment; filename=a.log"
    )
    second = part("text/plain; charset=utf-8", "Вторая часть.".encode())
    parsed = parse(mp_letter("mixed", PLAIN, pdf, second, txt_file))
    assert parsed.text == RU + "\n\nВторая часть."
    assert [a.filename for a in parsed.attachments] == ["act.pdf", "a.log"]
    assert parsed.attachments[0].content == b"%PDF-1.4 data"
    assert parsed.attachments[0].inline is False


def test_apple_mail_text_image_text() -> None:
    image = part(
        "image/jpeg; name=IMG_0001.jpeg",
        b64(b"\xff\xd8jpeg"),
        "Content-Transfer-Encoding: base64",
        "Content-Disposition: inline; filename=IMG_0001.jpeg",
    )
    tail = part("text/plain; charset=us-ascii", b"\r\nSent from my iPhone")
    parsed = parse(mp_letter("mixed", PLAIN, image, tail))
    assert parsed.text == RU + "\n\nSent from my iPhone"
    assert [(a.filename, a.inline) for a in parsed.attachments] == [("IMG_0001.jpeg", True)]


def test_signed_letter_keeps_text_and_signature_file() -> None:
    signature = part(
        "application/pkcs7-signature; name=smime.p7s",
        b64(b"sig"),
        "Content-Transfer-Encoding: base64",
    )
    parsed = parse(
        mp_letter("signed", PLAIN, signature, params='; protocol="application/pkcs7-signature"')
    )
    assert parsed.text == RU
    assert [a.filename for a in parsed.attachments] == ["smime.p7s"]


def test_digest_parts_default_to_message_rfc822() -> None:
    parsed = parse(mp_letter("digest", b"\r\n" + FORWARDED, b"\r\n" + FORWARDED))
    assert [f.subject for f in parsed.forwarded] == ["Чеки", "Чеки"]


def test_part_without_headers_is_plain_text() -> None:
    parsed = parse(mp_letter("mixed", b"\r\n" + RU.encode()))
    assert parsed.text == RU


def test_mbox_from_line_and_lf_only() -> None:
    raw = b"From MAILER-DAEMON Mon Jan 13 08:40:00 2025\nFrom: a@example.com\nSubject: x\n\nbody\n"
    parsed = parse(raw)
    assert parsed.subject == "x" and parsed.text == "body"


def test_named_inline_text_is_the_body_when_there_is_no_other() -> None:
    named = part("text/plain; charset=utf-8; name=message.txt", RU.encode())
    parsed = parse(mp_letter("mixed", named, part("application/pdf", b"x")))
    assert parsed.text == RU
    assert [a.filename for a in parsed.attachments] == ["message.txt", "attachment-2.pdf"]


def test_nested_mixed_alternative_related() -> None:
    related = b'Content-Type: multipart/related; boundary="REL"\r\n\r\n' + multipart(
        HTML, part("image/gif", b"GIF89a", "Content-ID: <g@x>"), boundary="REL"
    )
    alternative = b'Content-Type: multipart/alternative; boundary="ALT"\r\n\r\n' + multipart(
        PLAIN, related, boundary="ALT"
    )
    doc = part("application/msword", b"doc", "Content-Disposition: attachment; filename=a.doc")
    parsed = parse(mp_letter("mixed", alternative, doc))
    assert parsed.text == RU
    assert [(a.content_type, a.inline) for a in parsed.attachments] == [
        ("image/gif", True),
        ("application/msword", False),
    ]


# ----------------------------------------------------------- reports and forwards

FORWARDED = mk(
    "From: =?utf-8?B?0JjQstCw0L0=?= <ivan@example.org>",
    "To: shop@example.org",
    "Subject: =?utf-8?B?0KfQtdC60Lg=?=",
    "Message-ID: <inner@example.org>",
    "Content-Type: text/plain; charset=utf-8",
    body="Чеки не грузятся".encode(),
)


def test_message_rfc822_goes_to_forwarded_not_text() -> None:
    parsed = parse(
        mp_letter("mixed", PLAIN, part("message/rfc822", FORWARDED, "Content-Disposition: inline"))
    )
    assert parsed.text == RU
    (inner,) = parsed.forwarded
    assert inner.subject == "Чеки" and inner.text == "Чеки не грузятся"
    assert inner.sender == Address("Иван", "ivan@example.org")
    assert inner.message_id == "<inner@example.org>"
    assert parsed.attachments == ()


def test_base64_encoded_message_rfc822_is_decoded() -> None:
    parsed = parse(
        mp_letter(
            "mixed",
            PLAIN,
            part("message/rfc822", b64(FORWARDED), "Content-Transfer-Encoding: base64"),
        )
    )
    assert parsed.forwarded[0].subject == "Чеки"


def test_delivery_status_report() -> None:
    human = part("text/plain; charset=us-ascii", b"Delivery to the following recipient failed.")
    status = part(
        "message/delivery-status",
        b"Reporting-MTA: dns; mx.example.com\r\n\r\nFinal-Recipient: rfc822; x@example.org\r\n"
        b"Action: failed\r\nStatus: 5.1.1\r\n",
    )
    headers = part("text/rfc822-headers", b"From: servicedesk@example.com\r\nSubject: SD-1\r\n")
    raw = mp_letter("report", human, status, headers, params="; report-type=delivery-status")
    raw = raw.replace(
        b"From: a@example.com", b"From: MAILER-DAEMON@mx.example.com\r\nReturn-Path: <>"
    )
    parsed = parse(raw)
    assert parsed.content_type == "multipart/report"
    assert parsed.return_path == ""
    assert parsed.text == "Delivery to the following recipient failed."
    (report,) = parsed.attachments
    assert report.content_type == "message/delivery-status"
    assert b"Status: 5.1.1" in report.content
    assert parsed.forwarded[0].subject == "SD-1"


def test_forwarding_depth_is_limited() -> None:
    raw = FORWARDED
    for _ in range(40):
        raw = mk("From: a@example.com", "Content-Type: message/rfc822", body=raw)
    with pytest.raises(LetterUnreadable, match="nested 31 deep; limit is 30"):
        parse(raw)
    deep = parse(raw, ParseLimits(max_depth=100))
    for _ in range(40):
        (deep,) = deep.forwarded
    assert deep.text == "Чеки не грузятся"


# ---------------------------------------------------------------- attachment names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\x\\evil.exe", "evil.exe"),
        ("con", "_con"),
        ("CON.txt", "_CON.txt"),
        ("lpt1.pdf", "_lpt1.pdf"),
        ("a\x00b\r\nc.pdf", "abc.pdf"),
        (".bashrc", "bashrc"),
        ("...", "attachment-3.pdf"),
        ("", "attachment-3.pdf"),
        ("  ", "attachment-3.pdf"),
        ("/", "attachment-3.pdf"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ('a<b>c:d"e|f?g*h.pdf', "a_b_c_d_e_f_g_h.pdf"),
        ("report. ", "report"),
        ("Отчёт за 2024.xlsx", "Отчёт за 2024.xlsx"),
    ],
)
def test_sanitize_filename_adversarial(name: str, expected: str) -> None:
    assert sanitize_filename(name, "application/pdf", 3) == expected


def test_sanitize_filename_length_keeps_extension() -> None:
    name = sanitize_filename("я" * 400 + ".docx", "application/octet-stream", 1)
    assert len(name) == 150 and name.endswith(".docx")


@given(st.text(max_size=300), st.sampled_from(["image/png", "application/x-unknown", "text/plain"]))
def test_sanitize_filename_property(name: str, ctype: str) -> None:
    clean = sanitize_filename(name, ctype, 7)
    assert clean and len(clean) <= 150
    assert not clean.startswith(".") and clean == clean.strip()
    assert not re.search(r"[\x00-\x1f\x7f/\\]", clean)
    assert clean.split(".")[0].lower() not in {"con", "nul", "prn", "aux", "com1", "lpt1"}


def test_attachment_with_hostile_name_in_letter() -> None:
    parsed = attachment_letter(
        "application/octet-stream", 'Content-Disposition: attachment; filename="../../etc/passwd"'
    )
    assert parsed.attachments[0].filename == "passwd"


# ---------------------------------------------------------------------- headers


def test_message_ids_tolerate_junk() -> None:
    parsed = parse(
        mk(
            "From: a@example.com",
            "Message-ID:   <abc@example.com> (comment)",
            'In-Reply-To: "Ivan" <x1@example.com> <x2@example.com>',
            "References: junk <r1@example.com>,<r2@example.com>\r\n"
            "\t<r1@example.com> <r3@exa\r\n mple.com>",
        )
    )
    assert parsed.message_id == "<abc@example.com>"
    assert parsed.in_reply_to == ("<x1@example.com>", "<x2@example.com>")
    assert parsed.references == ("<r1@example.com>", "<r2@example.com>", "<r3@example.com>")


def test_message_id_blank_absent_and_bare() -> None:
    assert parse(mk("From: a@example.com", "Message-ID:  ")).message_id is None
    assert parse(mk("From: a@example.com")).message_id is None
    assert parse(mk("From: a@example.com", "Message-Id: abc@x")).message_id == "<abc@x>"
    assert parse(mk("From: a@example.com", "References: a@x b@y")).references == ("<a@x>", "<b@y>")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Mon, 13 Jan 2025 08:40:00 +0300", datetime(2025, 1, 13, 5, 40, tzinfo=UTC)),
        ("13 Jan 2025 08:40 +0300 (MSK)", datetime(2025, 1, 13, 5, 40, tzinfo=UTC)),
        ("Mon, 13 Jan 25 08:40:00 MSK", datetime(2025, 1, 13, 5, 40, tzinfo=UTC)),
        ("Mon, 13 Jan 2025 08:40:00 +0300 (MSK)", datetime(2025, 1, 13, 5, 40, tzinfo=UTC)),
        ("Пн, 13 янв 2025 08:40:00 +0300", datetime(2025, 1, 13, 5, 40, tzinfo=UTC)),
        ("Mon,13 Jan 2025 08:40:00 GMT", datetime(2025, 1, 13, 8, 40, tzinfo=UTC)),
        ("Mon, 13 Jan 2025 08:40:00", datetime(2025, 1, 13, 8, 40, tzinfo=UTC)),
        ("yesterday", None),
        ("Mon, 31 Feb 2025 08:40:00 +0300", None),
        ("", None),
    ],
)
def test_date_parsing(value: str, expected: datetime | None) -> None:
    parsed = parse(mk("From: a@example.com", f"Date: {value}".encode()))
    assert parsed.date == expected
    if parsed.date is not None:
        assert parsed.date.tzinfo is not None


def test_date_keeps_offset() -> None:
    parsed = parse(mk("From: a@example.com", "Date: Thu, 16 Jan 2025 11:52:00 +0700"))
    assert parsed.date is not None
    assert parsed.date.utcoffset() == timedelta(hours=7)
    assert parsed.date.tzinfo == timezone(timedelta(hours=7))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"Ivan <Ivan@Example.COM>", Address("Ivan", "ivan@example.com")),
        (b"ivan@example.com", Address("", "ivan@example.com")),
        (b"<ivan@example.com>", Address("", "ivan@example.com")),
        (b'"Ivanov, Ivan" <i@example.com>', Address("Ivanov, Ivan", "i@example.com")),
        (b"Ivanov, Ivan <i@example.com>", Address("Ivanov, Ivan", "i@example.com")),
        (b'"Ivanov Ivan <i@example.com>', Address("Ivanov Ivan", "i@example.com")),
        (b'"i@example.com" <i@example.com>', Address("", "i@example.com")),
        (b"i@example.com (Ivan Ivanov)", Address("Ivan Ivanov", "i@example.com")),
        (b'"Ivan \\"Boss\\" I." <i@example.com>', Address('Ivan "Boss" I.', "i@example.com")),
        ("Иванов И.И. <i@example.com>".encode("cp1251"), Address("Иванов И.И.", "i@example.com")),
        ('"Иванов" <i@example.com>'.encode(), Address("Иванов", "i@example.com")),
        (
            f'"{ew("Иванов Иван")}" <i@example.com>'.encode(),
            Address("Иванов Иван", "i@example.com"),
        ),
        (b"Ivan <not an address>", Address("Ivan", "")),
    ],
)
def test_from_variants(value: bytes, expected: Address) -> None:
    assert parse(mk(b"From: " + value)).sender == expected


def test_address_lists() -> None:
    parsed = parse(
        mk(
            "From: a@example.com",
            f'To: {ew("Служба")} <sd@example.com>, b@example.com,\r\n "C, D" <cd@example.com>',
            "Cc: undisclosed-recipients:;",
            "Reply-To: team: x@example.com, y@example.com;",
        )
    )
    assert parsed.to == (
        Address("Служба", "sd@example.com"),
        Address("", "b@example.com"),
        Address("C, D", "cd@example.com"),
    )
    assert parsed.cc == ()
    assert [a.email for a in parsed.reply_to] == ["x@example.com", "y@example.com"]


def test_missing_from_and_return_path_forms() -> None:
    assert parse(mk("Subject: x")).sender is None
    assert parse(mk("Subject: x")).return_path is None
    assert parse(mk("Subject: x", "Return-Path: <>")).return_path == ""
    assert parse(mk("Subject: x", "Return-Path: < >")).return_path == ""
    assert parse(mk("Subject: x", "Return-Path: <Bounce@Example.COM>")).return_path == (
        "bounce@example.com"
    )


def test_headers_map_first_occurrence_decoded() -> None:
    parsed = parse(
        mk(
            "From: a@example.com",
            "Auto-Submitted: auto-replied",
            "auto-submitted: no",
            f"X-Autoreply: {ew('да')}",
            "List-Id: News <news.example.com>",
            "Precedence:  bulk ",
        )
    )
    assert parsed.headers["auto-submitted"] == "auto-replied"
    assert parsed.headers["x-autoreply"] == "да"
    assert parsed.headers["list-id"] == "News <news.example.com>"
    assert parsed.headers["precedence"] == "bulk"
    assert "subject" not in parsed.headers
    assert hash(parsed) == hash(parse(mk("From: a@example.com", "Auto-Submitted: auto-replied",
                                         "auto-submitted: no", f"X-Autoreply: {ew('да')}",
                                         "List-Id: News <news.example.com>",
                                         "Precedence:  bulk ")))  # fmt: skip


# ------------------------------------------------------------- broken structure


def test_missing_end_boundary_is_noted() -> None:
    raw = mp_letter("mixed", PLAIN).replace(b"--BND--\r\n", b"")
    parsed = parse(raw)
    assert parsed.text == RU
    assert any("missing end boundary" in d for d in parsed.defects)


@pytest.mark.parametrize("header", ['multipart/mixed; boundary="WRONG"', "multipart/mixed"])
def test_wrong_or_missing_boundary_is_recovered(header: str) -> None:
    body = multipart(PLAIN, part("application/pdf", b"x"), boundary="REAL")
    parsed = parse(mk("From: a@example.com", f"Content-Type: {header}", body=body))
    assert parsed.text == RU
    assert [a.content_type for a in parsed.attachments] == ["application/pdf"]
    assert any("boundary" in d for d in parsed.defects)


def test_truncated_letter_still_parses() -> None:
    raw = mp_letter(
        "mixed", PLAIN, part("image/png", b64(bytes(5000)), "Content-Transfer-Encoding: base64")
    )
    parsed = parse(raw[: len(raw) - 3000])
    assert parsed.text == RU
    assert parsed.attachments[0].content_type == "image/png"


# ------------------------------------------------------------------------ limits


def test_max_bytes() -> None:
    raw = mk("From: a@example.com")
    with pytest.raises(LetterUnreadable, match=f"letter is {len(raw)} bytes; limit is 10") as info:
        parse(raw, ParseLimits(max_bytes=10))
    assert info.value.stage == "parse"


def test_max_parts_counts_exactly() -> None:
    parts = [part("text/plain", b"x")] * 10000
    with pytest.raises(LetterUnreadable, match="letter has 10001 MIME parts; limit is 1000"):
        parse(mp_letter("mixed", *parts))


def test_max_depth_of_multiparts() -> None:
    body = part("text/plain", b"deep")
    for level in range(35):
        body = f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n'.encode() + multipart(
            body, boundary=f"b{level}"
        )
    raw = b"From: a@example.com\r\n" + body
    with pytest.raises(LetterUnreadable, match="limit is 30"):
        parse(raw)
    assert parse(raw, ParseLimits(max_depth=40)).text == "deep"


def test_absurd_nesting_is_unreadable_not_a_crash() -> None:
    body = part("text/plain", b"deep")
    for level in range(3000):
        body = (
            f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n--b{level}\r\n'.encode()
            + body
        )
    with pytest.raises(LetterUnreadable):
        parse(b"From: a@example.com\r\n" + body, ParseLimits(max_depth=10**6, max_parts=10**6))


def test_max_header_bytes() -> None:
    raw = mk("From: a@example.com", b"Subject: " + b"x" * 5_000_000)
    with pytest.raises(LetterUnreadable, match=r"header section is \d+ bytes; limit is 1048576"):
        parse(raw)


GENEROUS = ParseLimits(max_header_bytes=10**8)


ADVERSARIAL: dict[str, Callable[[], bytes]] = {  # built lazily: ~30 MB in all
    "5mb-subject": lambda: mk("From: a@example.com", b"Subject: " + b"x" * 5_000_000),
    "encoded-words": lambda: mk("From: a@example.com", b"Subject: " + b"=?utf-8?q?ab?= " * 300_000),
    "folded-lines": lambda: mk("From: a@example.com", b"Subject: " + b"ab\r\n " * 500_000),
    "raw-8bit-subject": lambda: mk(
        "From: a@example.com", b"Subject: " + "Заявка".encode("cp1251") * 400_000
    ),
    "long-to": lambda: mk("From: a@example.com", b"To: " + b"a@example.com, " * 100_000),
    "to-without-at": lambda: mk("From: a@example.com", b"To: " + b"a, " * 300_000),
    "from-run-without-at": lambda: mk(b"From: " + b"a" * 1_000_000 + b",@"),
    "from-quotes": lambda: mk(b"From: " + b'"' * 1_000_000),
    "references": lambda: mk("From: a@example.com", b"References: " + b"<a@b> " * 300_000),
    "junk-ew-starts": lambda: mk("From: a@example.com", b"X-Junk: " + b"=?" * 1_000_000),
    "many-params": lambda: mk(
        "From: a@example.com", b"Content-Type: text/plain; " + b"a=b;" * 300_000
    ),
    "many-headers": lambda: mk("From: a@example.com", *[b"X-A: b"] * 300_000),
    "trailing-spaces": lambda: mk("From: a@example.com", body=b" " * 1_000_000 + b"x"),
    "flowed-paragraph": lambda: mk(
        "From: a@example.com",
        "Content-Type: text/plain; format=flowed",
        body=b"w \r\n" * 500_000,
    ),
    "blockquotes": lambda: mk(
        "From: a@example.com",
        "Content-Type: text/html",
        body=b"<blockquote>x<br>y</blockquote>" * 20_000,
    ),
    "unterminated-comments": lambda: mk(
        "From: a@example.com", "Content-Type: text/html", body=b"<!--<style>" * 200_000
    ),
    "broken-tags": lambda: mk(
        "From: a@example.com", "Content-Type: text/html", body=b"<p<<<a" * 200_000
    ),
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_sizes_stay_linear(name: str) -> None:
    raw = ADVERSARIAL[name]()
    started = time.thread_time()  # this thread's CPU: a loaded machine does not count
    parse(raw, GENEROUS)
    assert time.thread_time() - started < 5


def test_empty_and_headerless_input_is_unreadable() -> None:
    for raw in [b"", b"   \r\n\r\n", b"\x00\x01\x02 no headers here\n"]:
        with pytest.raises(LetterUnreadable):
            parse(raw)


def test_long_body_without_blank_line_is_not_a_header_section() -> None:
    raw = b"From: a@example.com\r\nSubject: x\r\n" + b"body line\r\n" * 200_000
    assert parse(raw).text.startswith("body line")


def test_body_only_without_blank_line_still_parses() -> None:
    parsed = parse(b"From: a@example.com\r\nSubject: x\r\nthis line is body, not a header\r\n")
    assert parsed.subject == "x"
    assert "body" in parsed.text


# -------------------------------------------------------------------- properties


def _corpus_seeds() -> list[bytes]:
    seeds = [p.read_bytes() for p in CORPUS_FILES]
    seeds.append(mp_letter("mixed", PLAIN, HTML, part("message/rfc822", FORWARDED)))
    return seeds


SEEDS = _corpus_seeds()


JUNK = [
    b"=?utf-8?B?",
    b"?=",
    b"\r\n--",
    b"boundary=",
    b"\x00",
    b"\r",
    b"<",
    b"\xff\xfe",
    b"Content-Type: multipart/mixed; boundary=x\r\n",
    b"=\r\n",
    b"\n\n",
]


@st.composite
def mutated_letters(draw: st.DrawFn) -> bytes:
    """A real letter with byte flips, truncation, duplicated headers and spliced junk."""
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 12))):
        op = draw(st.sampled_from(["flip", "truncate", "dup", "insert", "delete"]))
        if not raw:
            break
        at = draw(st.integers(0, len(raw) - 1))
        if op == "flip":
            raw[at] = draw(st.integers(0, 255))
        elif op == "truncate":
            del raw[at:]
        elif op == "dup":
            end = raw.find(b"\n", at)
            line = bytes(raw[raw.rfind(b"\n", 0, at) + 1 : end + 1 if end >= 0 else len(raw)])
            raw[0:0] = line * draw(st.integers(1, 5))
        elif op == "insert":
            raw[at:at] = draw(st.sampled_from(JUNK))
        else:
            del raw[at : at + draw(st.integers(1, 200))]
    return bytes(raw)


def _strings(value: object) -> list[str]:
    """Every str inside a ParsedLetter (recursively), to check they are clean Unicode."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, ParsedLetter | Address | Attachment):
        return [s for name in vars(value) for s in _strings(getattr(value, name))]
    if isinstance(value, tuple):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, Mapping):
        return [s for kv in value.items() for s in _strings(tuple(kv))]
    return []


def _check_contract(raw: bytes) -> None:
    started = time.perf_counter()
    try:
        parsed = parse(raw)
    except LetterUnreadable as exc:
        assert not exc.reason.startswith("internal error"), exc.reason
    else:
        assert isinstance(parsed, ParsedLetter)
        assert "\r" not in parsed.text and "\x00" not in parsed.text
        assert all(line == line.rstrip() for line in parsed.text.split("\n"))
        for att in parsed.attachments:
            assert att.filename and "/" not in att.filename and "\\" not in att.filename
        for value in _strings(parsed):
            value.encode("utf-8")  # no lone surrogates from raw 8-bit bytes
    assert time.perf_counter() - started < 2.0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    _check_contract(raw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_letters())
def test_mutated_letters_never_crash(raw: bytes) -> None:
    _check_contract(raw)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"From: a@b\r\n", b"Subject: =?utf-8?B?0J8=?=\r\n",
                                 b"Content-Type: multipart/mixed; boundary=q\r\n", b"\r\n",
                                 b"--q\r\n", b"--q--\r\n", b"Content-Type: message/rfc822\r\n",
                                 b"Content-Transfer-Encoding: base64\r\n", b"0J/RgA==\r\n",
                                 b"text\r\n"]), max_size=60))  # fmt: skip
def test_structural_soup_never_crashes(chunks: list[bytes]) -> None:
    _check_contract(b"".join(chunks))


# ------------------------------------------------------------------------ corpus


def corpus(name: str) -> ParsedLetter:
    return parse((dev_corpus() / name).read_bytes())


def test_every_corpus_letter_parses_cleanly() -> None:
    paths = sorted(dev_corpus().glob("*.eml"))
    assert len(paths) >= 40
    for path in paths:
        parsed = parse(path.read_bytes())
        assert parsed.sender is not None and parsed.sender.email, path.name
        assert parsed.defects == (), path.name
        assert parsed.text.strip(), path.name
        assert parsed.date is not None, path.name
        text = parsed.text + (parsed.subject or "")
        assert not re.search("[ÐÑ][\u0080-\u00bf]|Р[°±µ]|вЂ", text), path.name


def test_corpus_spot_checks() -> None:
    first = corpus("001.eml")
    assert "База" in (first.subject or "").title() and "база" in first.text
    assert first.sender == Address(
        "Прохорова Анастасия Витальевна", "prokhorova@belgorod-agromash.ru"
    )
    assert "800 812 640" in first.text and not first.html

    html_only = corpus("024.eml")
    assert html_only.html and "Рег. номер 800 524 691" in html_only.text
    assert html_only.content_type == "text/html"

    screenshot = corpus("014.eml")
    (image,) = screenshot.attachments
    assert image.inline and image.content_type == "image/png"
    assert image.content_id == "<image001.png@01DB0CA1.DFB99D74>"
    assert screenshot.content_type == "multipart/related"

    report = corpus("010.eml")
    assert report.content_type == "multipart/report" and report.return_path == ""
    assert "could not be delivered" in report.text and "Здравствуйте" not in report.text
    assert [a.content_type for a in report.attachments] == ["message/delivery-status"]
    assert report.forwarded[0].message_id == "<sd-clarify-2025-001207.1@example.com>"

    koi = corpus("005.eml")
    assert koi.subject == "Доработка печатной формы накладной"
    assert corpus("021.eml").subject == ""
    assert corpus("031.eml").subject is None
    flowed = corpus("002.eml")
    assert "Значение не является значением объектного типа" in flowed.text
    with_file = corpus("025.eml")
    assert [a.filename for a in with_file.attachments] == ["Пример_отчета_по_сменам.xlsx"]
    assert not with_file.attachments[0].inline


# --------------------------------------------------------------------------- mail from the wild


@pytest.mark.parametrize(
    "junk",
    [b"This is junk\r\n", b">From someone Mon Jan  1 00:00:00 2024\n", b"\r\n", b"-- \n= =\n"],
)
def test_junk_before_the_first_header_is_skipped_and_the_letter_kept(junk: bytes) -> None:
    raw = junk + b"From: Ann <ann@client.example>\nSubject: Report\n\nThe report is empty.\n"
    parsed = parse(raw)
    assert parsed.sender == Address("Ann", "ann@client.example")
    assert parsed.subject == "Report"
    assert parsed.text.strip() == "The report is empty."
    assert any("junk before the first header" in d for d in parsed.defects)


def test_a_body_without_any_header_is_still_unreadable() -> None:
    with pytest.raises(LetterUnreadable):
        parse(b"just some text\nand more text\n")


def test_of_two_from_headers_the_one_that_parses_is_the_sender() -> None:
    parsed = parse(b"From: ???\nFrom: Ann <ann@client.example>\nSubject: x\n\nbody\n")
    assert parsed.sender == Address("Ann", "ann@client.example")
    assert parsed.sender_header == "from"
    assert any("From did not parse" in d for d in parsed.defects)


@pytest.mark.parametrize(
    ("headers", "email", "header"),
    [
        (b"Sender: s@client.example\nReply-To: r@client.example\n", "s@client.example", "sender"),
        (b"Reply-To: r@client.example\n", "r@client.example", "reply-to"),
        (b"From: undisclosed\nReply-To: r@client.example\n", "r@client.example", "reply-to"),
    ],
)
def test_without_a_from_that_parses_sender_then_reply_to(
    headers: bytes, email: str, header: str
) -> None:
    parsed = parse(headers + b"Subject: x\n\nbody\n")
    assert parsed.sender is not None and parsed.sender.email == email
    assert parsed.sender_header == header


def _text_part(body: bytes, charset: str | None) -> bytes:
    ctype = b"text/plain" + (b"; charset=" + charset.encode() if charset else b"")
    return (b"From: a@client.example\nSubject: x\nMIME-Version: 1.0\nContent-Type: " + ctype
            + b"\nContent-Transfer-Encoding: 8bit\n\n" + body)


@pytest.mark.parametrize("charset", [None, "koi8-r", "windows-1251"])
def test_western_european_text_is_not_read_as_cyrillic(charset: str | None) -> None:
    text = "Formação e información: très bien, Grüße aus München."
    parsed = parse(_text_part(text.encode("cp1252"), charset))
    assert parsed.text.strip() == text


def test_gb2312_label_over_gbk_bytes_is_read_as_gbk() -> None:
    text = "发票金额显示错误，镕铭公司"  # 镕 is GBK, not GB2312
    parsed = parse(_text_part(text.encode("gbk"), "gb2312"))
    assert parsed.text.strip() == text


@pytest.mark.parametrize("charset", [None, "iso-2022-jp"])
def test_iso_2022_jp_with_nec_extensions_and_unlabelled(charset: str | None) -> None:
    body = "請求書が表示されません".encode("iso2022_jp")
    nec = b"\x1b$B-!-\"\x1b(B"  # ①② from the NEC row that Python's codec refuses
    parsed = parse(_text_part(body + nec, charset))
    assert parsed.text.strip() == "請求書が表示されません①②"


def test_unlabelled_shift_jis_is_detected() -> None:
    text = "日本語のテキストです。請求書が表示されません。"
    parsed = parse(_text_part(text.encode("shift_jis"), None))
    assert parsed.text.strip() == text


@pytest.mark.parametrize(
    ("text", "charset"),
    [("Отчёт пустой после обновления", "koi8-r"), ("Привет, iPhone не работает", "cp1251"),
     ("Да", "cp1251")],
)
def test_unlabelled_russian_is_still_russian(text: str, charset: str) -> None:
    assert parse(_text_part(text.encode(charset), None)).text.strip() == text
