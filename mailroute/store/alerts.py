"""Problems that are the desk's to fix, not the customer's: recorded, shown, mailed once.

A relay that refuses our replies for policy or content, or a reply cap reached, must
not silence a customer, but someone must hear of it. An alert is one row per kind
(``alerts``): open while ``cleared_at`` is empty, with the number of hits and the
latest detail. `mailroute status` lists the open ones, the metrics count them, and
the first hit of an incident queues one mail to ``[workflow] escalation_address``;
the hits that follow until the alert clears add nothing to the outbox (a relay that
refuses everything would refuse that mail too, and it must not breed more).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailroute import logs
from mailroute.core.compose import Identity, compose_notice, new_message_id
from mailroute.store import repository as repo
from mailroute.store.models import Alert

log = logs.get("mailroute.store.alerts")

SMTP_RELAY = "smtp-relay"  # the relay refuses replies for reasons of the desk's own
SMTP_DOWN = "smtp-down"  # no reply accepted: no connection, login refused or 4xx only
CAP_ADDRESS, CAP_DOMAIN, CAP_DESK = "cap:address", "cap:domain", "cap:desk"
CAPS = (CAP_ADDRESS, CAP_DOMAIN, CAP_DESK)


@dataclass(frozen=True)
class AlertMail:
    """Where a new incident is mailed (no address: logged and shown only)."""

    identity: Identity
    address: str | None


def raise_alert(
    session: Session, key: str, detail: str, now: datetime, mail: AlertMail | None = None,
    hits: int = 1,
) -> bool:
    """Count ``hits`` more of ``key``; True when this opened a new incident (and mailed it)."""
    alert = session.get(Alert, key, with_for_update=True)
    if alert is None:
        try:
            with session.begin_nested():
                alert = Alert(key=key, detail=detail, hits=0, started_at=now, last_seen_at=now)
                session.add(alert)
        except IntegrityError:  # another instance opened it first
            alert = session.get(Alert, key, with_for_update=True, populate_existing=True)
            assert alert is not None
    elif alert.cleared_at is not None:  # a new incident of a known kind
        alert.started_at, alert.cleared_at, alert.notified_at, alert.hits = now, None, None, 0
    alert.hits += hits
    alert.detail, alert.last_seen_at = detail, now
    if alert.notified_at is not None or alert.hits > hits:
        return False
    log.error("alert", alert=key, detail=detail)
    if mail is not None and mail.address:
        _queue_mail(session, mail, key, detail, now)
        alert.notified_at = now
    return True


def clear_alert(session: Session, key: str, now: datetime) -> bool:
    """End the open incident of ``key``; True when there was one."""
    result = session.execute(
        update(Alert).where(Alert.key == key, Alert.cleared_at.is_(None)).values(cleared_at=now)
    )
    cleared = cast(CursorResult[Any], result).rowcount
    if cleared:
        log.info("alert cleared", alert=key)
    return bool(cleared)


def open_alerts(session: Session) -> list[Alert]:
    return list(session.scalars(select(Alert).where(Alert.cleared_at.is_(None))
                                .order_by(Alert.started_at)))


def all_alerts(session: Session) -> list[Alert]:
    return list(session.scalars(select(Alert).order_by(Alert.key)))


def _queue_mail(session: Session, mail: AlertMail, key: str, detail: str, now: datetime) -> None:
    assert mail.address is not None
    subject = f"mailroute alert: {detail}"
    body = (
        f"{detail}\n\nSince: {now:%Y-%m-%d %H:%M} UTC\nAlert: {key}\n\n"
        "Customers are not suppressed for this. Replies the relay refused are in\n"
        "`mailroute outbox list --state failed`; send them again with\n"
        "`mailroute outbox retry ID` once the cause is fixed. `mailroute status` shows\n"
        "the alert until a reply is accepted again. This is the only mail for this incident.\n"
    )
    domain = mail.identity.address.rpartition("@")[2]
    draft = compose_notice("alert", subject, body, mail.identity, mail.address,
                           new_message_id("alert", domain))
    session.add(repo.pending_reply(
        kind=draft.kind, sender=draft.sender, recipient=draft.recipient,
        subject=draft.subject, message_id=draft.message_id, raw=draft.raw,
        not_before=now, now=now,
    ))
