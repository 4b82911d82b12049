"""The tables. Schema changes go through alembic (``migrations/``), never ``create_all``.

One row per thing that happened: a fetched letter (``letters``, its raw bytes kept
forever in ``letter_bytes``), a request (``requests``) with its history (``request_events``), the
replies waiting or sent (``outbox``), attachment metadata (``attachments``; the
content is read from the letter's bytes, ``blobs`` holds what earlier versions stored
apart), request-number counters (``counters``)
and the last known state of each mailbox (``mailboxes``), with the letters its server
would not serve or file (``letter_faults``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite forgets the zone; this restores it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; pass an aware one")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Letter(Base):
    """A letter as fetched: raw bytes saved before anything is done on the server."""

    __tablename__ = "letters"
    __table_args__ = (
        Index("ix_letters_uid", "mailbox", "uidvalidity", "uid"),
        # One letter in the folder per key; a filed letter's UID may come back on a new one
        # (a server that reuses UIDs), which is then a letter of its own.
        Index("uq_letters_unfiled_uid", "mailbox", "uidvalidity", "uid", unique=True,
              sqlite_where=text("filed_to IS NULL"), postgresql_where=text("filed_to IS NULL")),
        # Saved once: two writers cannot both insert the same bytes (copy_of: rows two
        # writers saved before this index existed, kept for their history).
        Index("uq_letters_sha256", "sha256", unique=True,
              sqlite_where=text("copy_of IS NULL"), postgresql_where=text("copy_of IS NULL")),
        Index("ix_letters_state", "state"),
        Index("ix_letters_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[str] = mapped_column(String(255))
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    # sender + text + attachments, normalised: what a re-delivery with other bytes keeps
    content_key: Mapped[str | None] = mapped_column(String(64))
    copy_of: Mapped[int | None] = mapped_column(ForeignKey("letters.id"))
    size: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime]
    fetched_at: Mapped[datetime]
    # pending -> processed | follow_up | note | ignored | duplicate | quarantined
    state: Mapped[str] = mapped_column(String(20), default="pending")
    sender: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(Text)
    ignore_reason: Mapped[str | None] = mapped_column(String(40))
    stage: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    filed_to: Mapped[str | None] = mapped_column(String(255))
    request_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id"), index=True)
    analysis: Mapped[dict[str, Any] | None]
    purged_at: Mapped[datetime | None]  # its raw bytes deleted by retention

    request: Mapped[Request | None] = relationship(back_populates="letters")
    content: Mapped[LetterBytes] = relationship(cascade="all, delete-orphan")

    @property
    def raw(self) -> bytes:
        """The letter as fetched (read from ``letter_bytes`` when first asked for)."""
        return self.content.raw


class LetterBytes(Base):
    """A letter's raw bytes, apart from its row: written once, read when it is parsed."""

    __tablename__ = "letter_bytes"

    letter_id: Mapped[int] = mapped_column(ForeignKey("letters.id"), primary_key=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary)


class Request(Base):
    """A registered request (ticket): what the customer asked and what we know."""

    __tablename__ = "requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    status: Mapped[str] = mapped_column(String(30))
    request_type: Mapped[str] = mapped_column(String(30))
    priority: Mapped[str] = mapped_column(String(20))
    queue: Mapped[str | None] = mapped_column(String(100))
    organization: Mapped[str | None] = mapped_column(Text)
    registration_number: Mapped[str | None] = mapped_column(String(40))
    requester: Mapped[str] = mapped_column(String(320), index=True)
    requester_name: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(5))
    missing: Mapped[list[str]] = mapped_column(JSON, default=list)
    reasons: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    first_response_due: Mapped[datetime | None]
    resolution_due: Mapped[datetime | None]
    tier: Mapped[str | None] = mapped_column(String(40))
    first_response_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    sla_paused_at: Mapped[datetime | None]
    clarifications: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id"))
    anonymized_at: Mapped[datetime | None]  # personal details removed by retention
    # the mailbox's label ([[mailboxes]] name or address); None: before there were several
    mailbox: Mapped[str | None] = mapped_column(String(100), index=True)

    letters: Mapped[list[Letter]] = relationship(back_populates="request")
    events: Mapped[list[RequestEvent]] = relationship(
        back_populates="request", order_by="RequestEvent.id"
    )
    replies: Mapped[list[OutboxItem]] = relationship(
        back_populates="request", order_by="OutboxItem.id"
    )


class Escalation(Base):
    """One SLA breach that was reported; unique so each breach is reported once."""

    __tablename__ = "escalations"
    __table_args__ = (UniqueConstraint("request_id", "kind", "due"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"), index=True)
    kind: Mapped[str] = mapped_column(String(30))  # first_response | resolution
    due: Mapped[datetime]
    noticed_at: Mapped[datetime]


class RequestEvent(Base):
    """The history of a request: created, follow-up, reply queued, status changed..."""

    __tablename__ = "request_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"), index=True)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(40))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    request: Mapped[Request] = relationship(back_populates="events")


class OutboxItem(Base):
    """A reply rendered and waiting for SMTP: the transactional outbox."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_state_due", "state", "not_before"),
        Index("ix_outbox_recipient_created", "recipient", "created_at"),
        Index("ix_outbox_counted_created", "counted_as", "created_at"),
        # kind too: the desk-wide and per-domain counts of automatic replies
        # (repository.automatic_replies_since, replies_to_domains_since) read only these
        Index("ix_outbox_domain_created_kind", "recipient_domain", "created_at", "kind"),
        Index("ix_outbox_created_kind", "created_at", "kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id"), index=True)
    letter_id: Mapped[int | None] = mapped_column(ForeignKey("letters.id"))
    kind: Mapped[str] = mapped_column(String(30))
    sender: Mapped[str] = mapped_column(String(320))
    recipient: Mapped[str] = mapped_column(String(320))
    message_id: Mapped[str] = mapped_column(String(998), unique=True)
    subject: Mapped[str] = mapped_column(Text)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    # pending -> sent | failed
    state: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[datetime]
    claimed_until: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(40))  # the process holding the claim
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    # whom the reply counts against for the caps (mailroute.core.addresses)
    counted_as: Mapped[str | None] = mapped_column(String(320))
    recipient_domain: Mapped[str | None] = mapped_column(String(255))

    request: Mapped[Request | None] = relationship(back_populates="replies")


class AttachmentRecord(Base):
    """Metadata of one attachment or inline image of a letter."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    letter_id: Mapped[int] = mapped_column(ForeignKey("letters.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    inline: Mapped[bool] = mapped_column(Boolean, default=False)


class Blob(Base):
    """Attachment content, once per SHA-256, as earlier versions stored it beside the raw
    letter. Nothing writes here now (``repository.attachment_content`` reads a file from
    its letter); what is here is still served, and purged by retention."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)


class Suppression(Base):
    """An address not answered automatically (it bounced permanently) until the
    suppression expires (``[replies] suppress_for`` after ``created_at``) or is lifted."""

    __tablename__ = "suppressions"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    letter_id: Mapped[int | None] = mapped_column(ForeignKey("letters.id"))


class Alert(Base):
    """Something the desk must fix, not the customer: a relay refusing our replies, a
    reply cap reached. Open while ``cleared_at`` is empty; mailed once per incident."""

    __tablename__ = "alerts"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    detail: Mapped[str] = mapped_column(Text)
    hits: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    notified_at: Mapped[datetime | None]
    cleared_at: Mapped[datetime | None]


class Organization(Base):
    """A customer imported with `mailroute orgs import` (the registry beside the config's)."""

    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    registration_numbers: Mapped[list[str]] = mapped_column(JSON, default=list)
    domains: Mapped[list[str]] = mapped_column(JSON, default=list)
    tier: Mapped[str] = mapped_column(String(40), default="standard")
    imported_at: Mapped[datetime]


class Counter(Base):
    """Gapless sequences (request numbers), incremented under a row lock."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class MailboxState(Base):
    """What the daemon last saw of a mailbox: for re-sync and for `mailroute status`."""

    __tablename__ = "mailboxes"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_poll_at: Mapped[datetime | None]
    backlog: Mapped[int | None] = mapped_column(Integer)  # letters in the folder at last poll
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    in_hand_since: Mapped[datetime | None]  # a letter slow to understand, taken then
    started_at: Mapped[datetime | None]  # when the daemon serving it started (its uptime)


class LetterFault(Base):
    """A letter the server would not serve or file: retried on its own, shown by `status`.

    One letter's fault must not hold back the rest of the folder, so the letter is set
    aside until ``next_attempt_at`` while the others go on; the row goes once it works.
    """

    __tablename__ = "letter_faults"
    __table_args__ = (UniqueConstraint("mailbox", "uidvalidity", "uid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(10))  # fetch | file
    error: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    first_failed_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]


class WebUser(Base):
    """A person who may log in to the console (``mailroute users add``).

    ``role`` is ``operator`` (may change requests) or ``viewer`` (reads only); the
    password is kept only as an argon2 hash."""

    __tablename__ = "web_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class WebSession(Base):
    """A console login: the cookie carries a random token, the table its SHA-256 (so a
    copy of the database opens no session), the CSRF token its forms must return,
    and when it ends. Kept in the database so that every instance knows it."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("web_users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class ApiToken(Base):
    """A program's key to the API (``mailroute tokens create``): shown once, kept only as
    its SHA-256; ``role`` as for people."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class WebhookDelivery(Base):
    """One event for one webhook URL, delivered at least once like a reply from the
    outbox: claimed for a lease, retried with backoff, ``failed`` after its deadline.
    ``payload`` is the exact JSON body that is signed and sent."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_state_due", "state", "not_before"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    event: Mapped[str] = mapped_column(String(50))
    request_number: Mapped[str | None] = mapped_column(String(40), index=True)
    payload: Mapped[str] = mapped_column(Text)
    # pending -> sent | failed
    state: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[datetime]
    claimed_until: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(40))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
