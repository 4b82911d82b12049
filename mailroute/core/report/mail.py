"""The report mail: the text and the HTML rendering as one multipart/alternative letter."""

from __future__ import annotations

from mailroute.core.compose import Draft, Identity, compose_notice
from mailroute.core.report.figures import Report
from mailroute.core.report.html import render_html
from mailroute.core.report.labels import report_subject
from mailroute.core.report.text import render_text


def compose_report(report: Report, identity: Identity, recipient: str, message_id: str) -> Draft:
    """The report mail: multipart/alternative, plain text first, the HTML page second.

    Written by :func:`mailroute.core.compose.compose_notice`, like an escalation
    (``Auto-Submitted``, ``X-Mailroute-Kind``), so that no autoresponder answers it and
    mailroute's own intake recognises it.
    """
    return compose_notice(
        "report",
        report_subject(report),
        render_text(report),
        identity,
        recipient,
        message_id,
        html=render_html(report),
        language="en",
    )
