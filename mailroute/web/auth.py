"""Who is at the console: people, their passwords, sessions, CSRF and login throttling.

Passwords are kept as argon2 hashes. A session cookie carries a random token; the
database keeps only its SHA-256, so a copy of the database opens no session. Each
session has its own CSRF token that every form returns. Failed logins are counted
per client address and per name in memory (a restart forgives them) and every
failure is logged. The client address comes from the connection, or from
``X-Forwarded-For`` only when the connection is from a ``[web] trusted_proxies`` entry.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select

from mailroute import logs
from mailroute.config import WebConfig
from mailroute.errors import MailrouteError
from mailroute.store import Store
from mailroute.store.models import WebSession, WebUser

log = logs.get("mailroute.web.auth")

ROLES = ("operator", "viewer")
COOKIE = "mailroute_session"
_hasher = PasswordHasher()
# Verified when the name is unknown, so a wrong name takes as long as a wrong password.
_NOBODY = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class Person:
    """The logged-in person behind a request to the console."""

    name: str
    role: str
    csrf_token: str
    session_hash: str

    @property
    def may_change(self) -> bool:
        return self.role == "operator"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def add_user(store: Store, name: str, role: str, password: str, now: datetime) -> None:
    """Create a console user, or give an existing one a new password and role."""
    name = name.strip()
    if role not in ROLES:
        raise MailrouteError(f"unknown role {role!r}; one of: {', '.join(ROLES)}")
    if not name or not password:
        raise MailrouteError("a user needs a name and a non-empty password")
    with store.transaction() as session:
        user = session.scalar(select(WebUser).where(WebUser.name == name))
        if user is None:
            user = WebUser(name=name, created_at=now, disabled=False)
            session.add(user)
        user.role, user.password_hash = role, hash_password(password)
        if user.id is not None:  # a new password ends the old sessions
            session.execute(delete(WebSession).where(WebSession.user_id == user.id))


def list_users(store: Store) -> list[dict[str, object]]:
    """The console's people, by name: role, since when, whether disabled."""
    with store.reading() as session:
        return [
            {"name": user.name, "role": user.role, "created_at": user.created_at.isoformat(),
             "disabled": user.disabled}
            for user in session.scalars(select(WebUser).order_by(WebUser.name))
        ]


def set_disabled(store: Store, name: str, disabled: bool) -> None:
    """Disable a user (their sessions end at once) or enable them again."""
    with store.transaction() as session:
        user = session.scalar(select(WebUser).where(WebUser.name == name.strip()))
        if user is None:
            raise MailrouteError(f"no user named {name!r}")
        user.disabled = disabled
        if disabled:
            session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    log.info("user disabled" if disabled else "user enabled", user=name)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a returned token with the one issued."""
    return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())


class Throttle:
    """Failed logins within a sliding window, per key ("addr:..." or "name:...").

    Keys whose failures have all aged out are forgotten, so names sprayed by an
    attacker cost memory only for one window."""

    SWEEP_ABOVE = 10_000  # keys held before the expired ones are swept out

    def __init__(self, attempts: int, window: float) -> None:
        self.attempts, self.window = attempts, window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, keys: Iterable[str], now: float) -> bool:
        with self._lock:
            return any(len(self._recent(key, now)) >= self.attempts for key in keys)

    def failed(self, keys: Iterable[str], now: float) -> None:
        with self._lock:
            if len(self._failures) > self.SWEEP_ABOVE:
                for key in list(self._failures):
                    self._recent(key, now)
            for key in keys:
                self._recent(key, now)
                self._failures.setdefault(key, deque()).append(now)

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def __len__(self) -> int:
        return len(self._failures)


class Sessions:
    """Logins and the sessions they open, kept in the database."""

    def __init__(self, store: Store, config: WebConfig, clock: Callable[[], datetime]) -> None:
        self.store, self.config, self.clock = store, config, clock
        self.throttle = Throttle(config.login_attempts, config.login_window)

    def login(self, name: str, password: str, address: str) -> str | None:
        """A new session token for the right password; None (and a log line) otherwise.

        Raises Throttled while the address or the name has had too many failures."""
        now = self.clock()
        keys = (f"addr:{address}", f"name:{name.strip().lower()}")
        if self.throttle.blocked(keys, now.timestamp()):
            log.warning("login refused: too many failures", user=name[:100], address=address)
            raise Throttled
        user = self._user(name.strip())
        if not _verified(user.password_hash if user else _NOBODY, password) or user is None:
            self.throttle.failed(keys, now.timestamp())
            why = "unknown user" if user is None else "wrong password"
            log.warning("login failed", user=name[:100], address=address, reason=why)
            return None
        token = secrets.token_urlsafe(32)
        with self.store.transaction() as session:
            session.execute(delete(WebSession).where(WebSession.expires_at < now))
            session.add(WebSession(
                token_hash=token_hash(token), user_id=user.id,
                csrf_token=secrets.token_urlsafe(32), created_at=now,
                expires_at=now + timedelta(hours=self.config.session_hours)))
        log.info("login", user=user.name, address=address)
        return token

    def person(self, token: str | None) -> Person | None:
        """Who holds this session cookie, if it is a live session of an enabled user."""
        if not token:
            return None
        hashed = token_hash(token)
        with self.store.reading() as session:
            found = session.execute(
                select(WebSession, WebUser).join(WebUser, WebUser.id == WebSession.user_id)
                .where(WebSession.token_hash == hashed)).first()
            if found is None:
                return None
            web_session, user = found
            if user.disabled or web_session.expires_at <= self.clock():
                return None
            return Person(user.name, user.role, web_session.csrf_token, hashed)

    def logout(self, person: Person) -> None:
        with self.store.transaction() as session:
            session.execute(delete(WebSession).where(WebSession.token_hash == person.session_hash))

    def _user(self, name: str) -> WebUser | None:
        with self.store.reading() as session:
            user = session.scalar(select(WebUser).where(WebUser.name == name))
            return None if user is None or user.disabled else user


class Throttled(Exception):
    """Too many failed logins from this address or for this name lately."""


def _verified(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def client_address(peer: str | None, forwarded_for: str | None, trusted: list[str]) -> str:
    """The client's address: the connection's peer, unless the peer is a trusted proxy,
    then the nearest address in ``X-Forwarded-For`` that is not itself a trusted proxy."""
    networks = [ipaddress.ip_network(item, strict=False) for item in trusted]
    address = peer or "unknown"
    if not forwarded_for or not _within(address, networks):
        return address
    for hop in reversed([part.strip() for part in forwarded_for.split(",") if part.strip()]):
        if not _within(hop, networks):
            return hop if _is_address(hop) else address
    return address


def _within(address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
