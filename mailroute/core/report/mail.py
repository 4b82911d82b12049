"""The report mail: the text and the HTML rendering as one multipart/alternative letter."""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr

from mailroute.core.compose import Draft, Identity, one_line
from mailroute.core.report.figures import Report
from mailroute.core.report.html import render_html
from mailroute.core.report.labels import report_subject
from mailroute.core.report.text import render_text


def compose_report(report: Report, identity: Identity, recipient: str, message_id: str) -> Draft:
    """The report mail: multipart/alternative, plain text first, the HTML page second.

    Marked like :func:`mailroute.core.compose.compose_notice` (``Auto-Submitted``,
    ``X-Mailroute-Kind``) so that no autoresponder answers it and mailroute's own
    intake recognises it.
    """
    subject = report_subject(report)
    message = EmailMessage(policy=SMTP)
    message["From"] = formataddr((one_line(identity.name), identity.address))
    message["To"] = one_line(recipient, 320)
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    message["X-Mailroute-Kind"] = "report"
    message["Content-Language"] = "en"
    message.set_content(render_text(report), charset="utf-8", cte="quoted-printable")
    message.add_alternative(
        render_html(report), subtype="html", charset="utf-8", cte="quoted-printable"
    )
    return Draft("report", identity.address, recipient, subject, message_id, message.as_bytes())
