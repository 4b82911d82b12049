"""`mailroute status`: is the daemon doing its job? Read from the database.

Unhealthy (exit code 1) when the mailbox has not been polled successfully for
``max_poll_age`` seconds, when an error is newer than the last good poll, or
when a reply due more than ``max_reply_delay`` seconds ago is still unsent, while
the SMTP relay refuses replies for the desk's reasons (an open ``smtp-relay``
alert), while the desk-wide reply cap holds replies back (hit within the hour),
and while the server will not serve or move a letter (it waits in the intake
folder, retried on its own, and needs a person to look at the server).
Reply caps hit lately and the number of active suppressions are shown too.

A SQLite file is looked at before it is opened: when it is missing, or a running
daemon reported (in the alarm file beside it) that it is not the file it opened,
that is the only problem shown, since the rows at the path are not the daemon's.

While a letter has been in hand for longer than its budget (``[limits]
letter_seconds``) the desk is stuck on it, whatever the polls say: unhealthy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, make_url, select

from mailroute import __version__
from mailroute.config import Config, HealthConfig
from mailroute.core.reply_policy import DESK_WINDOW
from mailroute.mail.sources import source_name
from mailroute.store import Store, alerts, webhooks
from mailroute.store import repository as repo
from mailroute.store.db import read_alarm, sqlite_file
from mailroute.store.models import Alert, MailboxState, OutboxItem


@dataclass
class Health:
    """What an operator (or a monitoring check) wants to know at a glance."""

    last_poll_at: datetime | None = None
    backlog: int | None = None
    pending_letters: int = 0
    quarantined: int = 0
    outbox: dict[str, int] = field(default_factory=dict)
    webhooks: dict[str, int] = field(default_factory=dict)  # deliveries by state
    oldest_unsent_due: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    alerts: list[str] = field(default_factory=list)  # open: the desk must act
    caps: list[str] = field(default_factory=list)  # reply caps hit within the hour
    suppressed: int = 0  # addresses not answered (suppressions not expired)
    desk_cap_hit: bool = False
    letter_faults: list[str] = field(default_factory=list)  # "uid N (fetch): error", oldest first
    in_hand_since: datetime | None = None
    started_at: datetime | None = None  # the serving daemon's start (its uptime)
    # with several mailboxes, one entry each: label, last poll, backlog, last error
    mailboxes: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment else None

        return {
            "healthy": self.healthy,
            "problems": self.problems,
            "last_poll_at": iso(self.last_poll_at),
            "backlog": self.backlog,
            "pending_letters": self.pending_letters,
            "quarantined": self.quarantined,
            "outbox": self.outbox,
            "webhooks": self.webhooks,
            "oldest_unsent_due": iso(self.oldest_unsent_due),
            "last_error": self.last_error,
            "last_error_at": iso(self.last_error_at),
            "alerts": self.alerts,
            "caps": self.caps,
            "suppressed": self.suppressed,
            "letter_faults": self.letter_faults,
            "in_hand_since": iso(self.in_hand_since),
            "started_at": iso(self.started_at),
            "mailboxes": [
                {key: iso(value) if isinstance(value, datetime) else value
                 for key, value in box.items()} for box in self.mailboxes
            ],
        }


def about(config: Config, health: Health, now: datetime) -> dict[str, Any]:
    """What `status --json` says besides health: the version, the uptime, the endpoints."""
    mailbox = config.mailbox
    source = (f"maildir {mailbox.maildir}" if mailbox.maildir
              else f"imap {mailbox.host}:{mailbox.port} {mailbox.folder}")
    uptime = (now - health.started_at).total_seconds() if health.started_at else None
    return {
        "version": __version__,
        "uptime_seconds": int(uptime) if uptime is not None else None,
        "endpoints": {
            "mailbox": source,
            "smtp": f"{config.smtp.host}:{config.smtp.port}",
            "database": make_url(config.database.url).render_as_string(hide_password=True),
        },
    }


def database_file_problems(url: str) -> list[str]:
    """Problems with the SQLite file itself, found without opening it (opening a
    missing file would create an empty database at its path)."""
    path = sqlite_file(url)
    if path is None:
        return []
    if not path.exists():
        return [
            f"the SQLite database {path} does not exist: moved or deleted? A running "
            "daemon writes nothing until it is back"
        ]
    alarm = read_alarm(path)
    return [alarm] if alarm else []


def mailbox_labels(config: Config) -> dict[str, str] | None:
    """Source name -> label of each mailbox, when there are several (else None)."""
    if not config.several_mailboxes:
        return None
    return {source_name(box): box.label for box in config.all_mailboxes()}


def check_health(
    store: Store, config: HealthConfig, now: datetime,
    suppress_for: timedelta = timedelta(days=30), letter_seconds: float | None = None,
    labels: Mapping[str, str] | None = None,
) -> Health:
    """``letter_seconds``: the budget a letter in hand is held against (none: not checked).
    ``labels`` (see :func:`mailbox_labels`): the mailboxes to report one by one."""
    with store.transaction() as session:
        health = Health(
            pending_letters=repo.pending_count(session),
            quarantined=repo.quarantined_count(session),
            outbox=repo.outbox_counts(session),
            webhooks=webhooks.counts(session),
            oldest_unsent_due=session.scalar(
                select(func.min(OutboxItem.not_before)).where(OutboxItem.state == "pending")
            ),
        )
        mailboxes = list(session.scalars(select(MailboxState)))
        health.suppressed = repo.suppression_count(session, now - suppress_for)
        _summarise_alerts(health, alerts.all_alerts(session), now)
        health.letter_faults = [
            f"uid {fault.uid} ({fault.action}, {fault.attempts} attempts since "
            f"{fault.first_failed_at:%Y-%m-%d %H:%M} UTC): {fault.error}"
            for fault in repo.letter_faults(session)
        ]
    _summarise_mailboxes(health, mailboxes)
    health.problems = _problems(health, config, now)
    if labels:
        health.problems += _each_mailbox(health, mailboxes, labels, config, now)
    health.problems += _stuck(health, now, letter_seconds)
    return health


def _summarise_mailboxes(health: Health, mailboxes: list[MailboxState]) -> None:
    polls = [m.last_poll_at for m in mailboxes if m.last_poll_at]
    health.last_poll_at = max(polls, default=None)
    health.backlog = sum(m.backlog or 0 for m in mailboxes) if polls else None
    errors = [m for m in mailboxes if m.last_error_at]
    if errors:
        latest = max(errors, key=lambda m: m.last_error_at or datetime.min)
        health.last_error, health.last_error_at = latest.last_error, latest.last_error_at
    in_hand = [m.in_hand_since for m in mailboxes if m.in_hand_since]
    health.in_hand_since = min(in_hand, default=None)
    health.started_at = max((m.started_at for m in mailboxes if m.started_at), default=None)


def _each_mailbox(
    health: Health, found: list[MailboxState], labels: Mapping[str, str], config: HealthConfig,
    now: datetime,
) -> list[str]:
    """One entry per configured mailbox; a problem for each one not polled lately, or
    failing (the figures above are of all of them together, and one mailbox stuck while
    the others work would not show there)."""
    by_name = {state.name: state for state in found}
    problems = []
    for name, label in labels.items():
        state = by_name.get(name)
        polled = state.last_poll_at if state else None
        error_at = state.last_error_at if state else None
        health.mailboxes.append({
            "mailbox": label, "last_poll_at": polled,
            "backlog": state.backlog if state else None,
            "last_error": state.last_error if state else None, "last_error_at": error_at,
        })
        if polled is None:
            problems.append(f"mailbox {label}: never polled")
        elif now - polled > timedelta(seconds=config.max_poll_age):
            problems.append(f"mailbox {label}: no successful poll since "
                            f"{polled:%Y-%m-%d %H:%M:%S} UTC")
        elif error_at and error_at > polled and state is not None:
            problems.append(f"mailbox {label}: failing: {state.last_error}")
    return problems


def _stuck(health: Health, now: datetime, letter_seconds: float | None) -> list[str]:
    since = health.in_hand_since
    if since is None or letter_seconds is None:
        return []
    held = (now - since).total_seconds()
    if held <= letter_seconds:
        return []
    return [f"a letter has been in hand for {held:.0f} s (since {since:%H:%M:%S} UTC); "
            f"its budget is {letter_seconds:g} s"]


def _summarise_alerts(health: Health, found: list[Alert], now: datetime) -> None:
    for alert in found:
        if alert.key in alerts.CAPS:
            if now - alert.last_seen_at <= DESK_WINDOW:
                kind = alert.key.partition(":")[2]
                health.caps.append(f"{kind}: {alert.detail}, last at "
                                   f"{alert.last_seen_at:%Y-%m-%d %H:%M} UTC ({alert.hits} in all)")
                health.desk_cap_hit |= alert.key == alerts.CAP_DESK
        elif alert.cleared_at is None:
            health.alerts.append(f"{alert.detail} (since {alert.started_at:%Y-%m-%d %H:%M} "
                                 f"UTC, {alert.hits} replies)")


def _problems(health: Health, config: HealthConfig, now: datetime) -> list[str]:
    problems = list(health.alerts)
    if health.desk_cap_hit:
        problems.append("the desk cap holds automatic replies back: "
                        "[replies] desk_hourly_limit was reached within the hour")
    if health.last_poll_at is None:
        problems.append("the mailbox has never been polled")
    elif now - health.last_poll_at > timedelta(seconds=config.max_poll_age):
        problems.append(f"no successful poll since {health.last_poll_at:%Y-%m-%d %H:%M:%S} UTC")
    if health.last_error_at and (
        health.last_poll_at is None or health.last_error_at > health.last_poll_at
    ):
        problems.append(f"failing: {health.last_error}")
    if health.letter_faults:
        problems.append(f"{len(health.letter_faults)} letter(s) the server will not serve or "
                        f"move, e.g. {health.letter_faults[0]}")
    late = health.oldest_unsent_due
    if late and now - late > timedelta(seconds=config.max_reply_delay):
        problems.append(f"a reply due at {late:%Y-%m-%d %H:%M} UTC is still unsent")
    return problems


def render(health: Health) -> str:
    """The human-readable status page."""
    data = health.as_dict()
    lines = [f"mailroute: {'healthy' if health.healthy else 'UNHEALTHY'}"]
    lines += [f"  problem: {problem}" for problem in health.problems]
    outbox = ", ".join(f"{state} {count}" for state, count in sorted(health.outbox.items()))
    lines += [
        f"  last successful poll  {data['last_poll_at'] or 'never'}",
        f"  backlog in folder     {'-' if health.backlog is None else health.backlog}",
        f"  letters pending       {health.pending_letters}",
        f"  letter in hand since  {data['in_hand_since'] or '-'}",
        f"  quarantined           {health.quarantined}",
        f"  outbox                {outbox or 'empty'}",
        f"  webhook deliveries    {_webhook_line(health.webhooks)}",
        f"  suppressed addresses  {health.suppressed}",
        *(f"  reply cap hit         {cap}" for cap in health.caps),
        f"  oldest unsent reply   due {data['oldest_unsent_due'] or '-'}",
        f"  last error            {health.last_error or '-'}"
        + (f" at {data['last_error_at']}" if health.last_error_at else ""),
        f"  letters set aside     {len(health.letter_faults)}",
    ]
    lines += [f"    {fault}" for fault in health.letter_faults[:10]]
    for box in data["mailboxes"]:
        lines.append(f"  mailbox {box['mailbox']}: last poll {box['last_poll_at'] or 'never'}, "
                     f"backlog {'-' if box['backlog'] is None else box['backlog']}"
                     + (f", last error {box['last_error']}" if box["last_error"] else ""))
    return "\n".join(lines)


def _webhook_line(counts: dict[str, int]) -> str:
    """Pending and failed deliveries: what a receiver has not got (sent ones are history)."""
    if not counts:
        return "none"
    return f"pending {counts.get('pending', 0)}, failed {counts.get('failed', 0)}"
