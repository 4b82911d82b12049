"""Build a ParsedLetter directly, for unit tests of the pure analysis modules."""

from __future__ import annotations

from mailroute.core.letter import Address, ParsedLetter

DESK = "servicedesk@example.com"


def letter(
    text: str = "",
    subject: str | None = "Тема",
    sender: str = "ivan@client.ru",
    sender_name: str = "",
    headers: dict[str, str] | None = None,
    content_type: str = "text/plain",
    return_path: str | None = None,
    to: tuple[Address, ...] = (Address("ServiceDesk", DESK),),
) -> ParsedLetter:
    """A letter with just the fields a test cares about."""
    return ParsedLetter(
        message_id="<test@client.ru>",
        in_reply_to=(),
        references=(),
        subject=subject,
        sender=Address(sender_name, sender.lower()) if sender else None,
        reply_to=(),
        to=to,
        cc=(),
        return_path=return_path,
        date=None,
        headers={k.lower(): v for k, v in (headers or {}).items()},
        content_type=content_type,
        text=text,
        html=False,
        attachments=(),
        forwarded=(),
        defects=(),
    )
