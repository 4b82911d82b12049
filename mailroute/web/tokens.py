"""API tokens: created once, shown once, kept only as their SHA-256.

A token is 32 random bytes (URL-safe base64, prefixed ``mrt_`` so a leaked one is
recognisable in logs and scanners). The table holds its SHA-256, so a copy of the
database opens nothing; a plain hash is enough because the token itself has 256
bits of entropy (no dictionary to guess from, unlike a password).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mailroute.errors import MailrouteError
from mailroute.store import Store
from mailroute.store.models import ApiToken

ROLES = ("operator", "viewer")
PREFIX = "mrt_"
# last_used_at is written at most this often per token: a busy client must not turn
# every read into a write that competes with intake for the database.
USE_RECORDED_EVERY = timedelta(minutes=1)


class TokenError(MailrouteError):
    """A token that cannot be created or revoked as asked (name taken, unknown, bad role)."""


@dataclass(frozen=True)
class TokenInfo:
    """What `tokens list` shows: never the token, which is not kept."""

    name: str
    role: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(store: Store, name: str, role: str, now: datetime) -> str:
    """Store a new token's hash under ``name``; returns the token (the only time it exists)."""
    if role not in ROLES:
        raise TokenError(f"unknown role {role!r}; one of: {', '.join(ROLES)}")
    if not name.strip() or len(name) > 100:
        raise TokenError("a token's name is 1 to 100 characters")
    token = PREFIX + secrets.token_urlsafe(32)
    try:
        with store.transaction() as session:
            session.add(ApiToken(name=name, role=role, token_hash=token_hash(token),
                                 created_at=now))
    except IntegrityError:
        raise TokenError(f"a token named {name!r} exists already (revoke it or pick another name)")\
            from None
    return token


def list_tokens(store: Store) -> list[TokenInfo]:
    with store.transaction() as session:
        return [
            TokenInfo(row.name, row.role, row.created_at, row.last_used_at, row.revoked_at)
            for row in session.scalars(select(ApiToken).order_by(ApiToken.name))
        ]


def revoke_token(store: Store, name: str, now: datetime) -> bool:
    """Revoke ``name`` from now on; False if it was revoked already. Raises for an unknown name."""
    with store.transaction() as session:
        row = session.scalars(select(ApiToken).where(ApiToken.name == name)).first()
        if row is None:
            raise TokenError(f"no token named {name!r}")
        if row.revoked_at is not None:
            return False
        row.revoked_at = now
        return True


@dataclass(frozen=True)
class Caller:
    """Who a request to the API came from: the token's name (for the history) and role."""

    name: str
    role: str


def authenticate(store: Store, token: str, now: datetime) -> Caller | None:
    """The caller of a live token, or None for an unknown or revoked one; notes its use."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    wanted = token_hash(token)
    with store.transaction() as session:
        row = session.scalars(select(ApiToken).where(ApiToken.token_hash == wanted)).first()
        if row is None or not hmac.compare_digest(row.token_hash, wanted):
            return None
        if row.revoked_at is not None:
            return None
        if row.last_used_at is None or now - row.last_used_at >= USE_RECORDED_EVERY:
            row.last_used_at = now
        return Caller(row.name, row.role)
