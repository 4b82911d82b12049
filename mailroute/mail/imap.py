"""An IMAP folder as a mail source (imapclient), with IDLE where the server offers it.

Letters are read with ``BODY.PEEK[]`` so nothing changes on the server until
the raw bytes are committed to the database; only then are they moved. Every
library or socket error leaves this module as :class:`MailboxUnavailable`.

No server answer grows with the folder: UIDs are listed in windows of
``SEARCH_WINDOW`` sequence numbers (one ``UID SEARCH ALL`` over 160,000 letters
outgrew imapclient's 1 MB line limit). One letter's fault stays that letter's: a
batch FETCH that fails or comes back malformed is fetched again one letter at a
time, and a letter the server still will not serve comes out as
:class:`UnservedLetter`; a MOVE refused for a batch is retried letter by letter.
Connect, greeting, TLS and login share one deadline, ``timeout``.
"""

from __future__ import annotations

import imaplib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from types import TracebackType
from typing import Any

from imapclient import IMAPClient, imap4, tls
from imapclient.exceptions import IMAPClientError, LoginError

from mailroute import logs
from mailroute.config import MailboxConfig
from mailroute.core.identity import imap_mailbox_name
from mailroute.errors import MailboxUnavailable
from mailroute.mail import oauth2
from mailroute.mail.causes import in_words
from mailroute.mail.mailbox import FetchedLetter, UnservedLetter
from mailroute.mail.tls import tls_context

log = logs.get("mailroute.mail.mailbox")
ClientFactory = Callable[..., Any]
IDLE_SLICE = 1.0  # seconds between checks of the stop flag while idling
IDLE_SETTLE = 1.0  # seconds of the first IDLE, before one more look at the folder
SEARCH_WINDOW = 10_000  # sequence numbers per UID SEARCH: ~70 KB answers, far below 1 MB
FETCH_ITEMS = [b"BODY.PEEK[]", b"INTERNALDATE", b"RFC822.SIZE"]
_ERRORS: tuple[type[BaseException], ...] = (
    IMAPClientError,
    imaplib.IMAP4.error,
    OSError,
    socket.timeout,
    ssl.SSLError,
    EOFError,
)


class ImapSource:
    """One IMAP folder of one account."""

    def __init__(
        self,
        config: MailboxConfig,
        client_factory: ClientFactory | None = None,
        tokens: oauth2.TokenSource | None = None,
    ) -> None:
        self.config = config
        self.name = imap_mailbox_name(
            config.username, config.host, config.effective_port(), config.folder
        )
        self._factory = client_factory or WatchedIMAPClient
        # Shared per command, not per source: the daemon makes a new source after each
        # failure, and the token should survive that.
        if tokens is None and config.auth == "xoauth2" and config.oauth2_token_command:
            tokens = oauth2.shared(config.oauth2_token_command)
        self._tokens = tokens
        self._client: Any = None
        self._known_folders: set[str] = set()
        self._exists = 0  # messages in the folder at the last SELECT
        self._validity = 0  # its UIDVALIDITY then
        self._last_listed = 0  # highest UID the last listing saw

    # ----------------------------------------------------------------- connection

    def select(self) -> int:
        if self._client is None:
            with _mapped(f"connect to {self._address}", CONNECT_HINT):
                self._client = self._connect()
        with _mapped(f"select {self.config.folder}"):
            selected = self._client.select_folder(self.config.folder)
        self._exists = int(selected.get(b"EXISTS", 0))
        self._validity = int(selected[b"UIDVALIDITY"])
        return self._validity

    @property
    def _address(self) -> str:
        return f"{self.config.host}:{self.config.effective_port()}"

    def _connect(self) -> Any:
        """Connect, read the greeting, STARTTLS and log in, all within ``timeout``.

        The socket timeout bounds each read only: a server that drips its greeting a
        byte at a time would hold intake for ever. The deadline shuts the socket down.
        """
        cfg = self.config
        # Loading the CA bundle costs ~15 ms of start-up: only for a connection with TLS.
        context = tls_context(cfg.tls_verify, cfg.ca_file) if cfg.security != "none" else None
        with _Deadline(cfg.timeout, self._address) as deadline:
            client = self._factory(
                cfg.host,
                port=cfg.effective_port(),
                ssl=cfg.security == "ssl",
                ssl_context=context if cfg.security == "ssl" else None,
                timeout=cfg.timeout,
                watch=deadline.watch,
            )
            client.normalise_times = False
            try:
                if cfg.security == "starttls":
                    assert context is not None
                    client.starttls(context)
                self._login(client)
                deadline.finish()
            except BaseException:
                with suppress(*_ERRORS):
                    client.shutdown()
                raise
        return client

    def _login(self, client: Any) -> None:
        cfg = self.config
        if self._tokens is None:
            client.login(cfg.username, cfg.password.get_secret_value())
            return
        try:
            token = self._tokens.token()
        except oauth2.TokenCommandFailed as exc:
            raise MailboxUnavailable(f"IMAP XOAUTH2 token for {cfg.username}: {exc}") from exc
        try:
            client.oauth2_login(cfg.username, token)
        except LoginError as exc:
            # Perhaps revoked or expired early: the next attempt (the daemon retries with
            # backoff) runs the command again instead of offering the same token.
            self._tokens.invalidate(token)
            raise MailboxUnavailable(
                f"IMAP XOAUTH2 login refused for {cfg.username}: {in_words(exc)}"
            ) from exc

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except _ERRORS:
            with suppress(*_ERRORS):
                client.shutdown()

    def _require(self) -> Any:
        if self._client is None:
            raise MailboxUnavailable(f"{self.name}: not connected")
        return self._client

    # --------------------------------------------------------------------- reading

    def list_uids(self) -> list[str]:
        """All UIDs, listed ``SEARCH_WINDOW`` sequence numbers at a time.

        Sequence numbers, not UID ranges: they have no gaps, so the number of searches
        follows the folder's size, not how many letters it ever held. Nothing is moved
        while listing, so the numbers hold still (another client expunging meanwhile
        is outside what mailroute promises; the next pass sees what this one missed).
        """
        client = self._require()
        uids: set[int] = set()
        with _mapped("search"):
            for first in range(1, self._exists + 1, SEARCH_WINDOW):
                last = min(first + SEARCH_WINDOW - 1, self._exists)
                uids.update(client.search([f"{first}:{last}"]))
        self._last_listed = max(uids, default=self._last_listed)
        return [str(uid) for uid in sorted(uids)]

    def _arrived_since_listing(self) -> bool:
        """Mail that came in after the last listing; its EXISTS was consumed by an earlier
        command (MOVE), so IDLE would not announce it. Only UIDs above the last listed
        are asked for (``N:*`` also answers the highest UID below N, hence the filter).

        The NOOP first: a server reports new mail only after a command, so a SEARCH
        sent first runs on the session's old view, misses a letter that came after the
        last command, and eats its EXISTS; IDLE then slept through it to its timeout.
        """
        client = self._require()
        with _mapped("search"):
            client.noop()
            present = client.search(["UID", f"{self._last_listed + 1}:*"])
        return any(uid > self._last_listed for uid in present)

    def sizes(self, uids: Sequence[str]) -> dict[str, int]:
        """RFC822.SIZE of these letters, in one FETCH without their bodies.

        A refusal or a broken connection here only means the sizes are unknown (the batch
        is then cut by count alone): the FETCH of the bodies that follows meets the same
        trouble and sorts it out letter by letter, or as an outage.
        """
        if not uids:
            return {}
        wanted = {int(uid) for uid in uids}
        try:
            with _mapped("fetch of sizes"):
                response = self._require().fetch(sorted(wanted), [b"RFC822.SIZE"])
        except MailboxUnavailable as exc:
            log.warning("letter sizes unknown", count=len(uids), error=str(exc),
                        action="batch cut by count")
            return {}
        return {str(uid): size for uid, data in response.items()
                if uid in wanted and isinstance(size := data.get(b"RFC822.SIZE"), int)}

    def fetch(self, uids: Sequence[str]) -> Iterator[FetchedLetter | UnservedLetter]:
        """The letters in one FETCH; if that fails or comes back malformed, one at a time,
        so a letter the server cannot serve is only that letter's problem."""
        if not uids:
            return
        try:
            letters = self._fetch_checked(uids)
        except (MailboxUnavailable, _Malformed) as exc:
            if len(uids) == 1:
                self._reconnect()  # an outage raises here; otherwise it is the letter's
                yield UnservedLetter(uids[0], str(exc))
                return
            log.warning("batch fetch failed; fetching letter by letter",
                        count=len(uids), error=str(exc))
            self._reconnect()
            for uid in uids:
                yield from self.fetch([uid])
            return
        yield from letters

    def _reconnect(self) -> None:
        """A fresh session after a failure: a broken literal may have left the stream out of
        step. Raises MailboxUnavailable when the server itself is gone (or UIDVALIDITY
        changed), which is an outage, not a letter's fault."""
        validity = self._validity
        self.close()
        if self.select() != validity:
            raise MailboxUnavailable(f"{self.name}: UIDVALIDITY changed during the pass")

    def _fetch_checked(self, uids: Sequence[str]) -> list[FetchedLetter]:
        """One FETCH, every item checked: the UID one asked for, BODY[] present and exactly
        RFC822.SIZE bytes long (a shorter literal was cut), and in a batch every UID
        answered: a literal announced too long swallows the start of the next response,
        and imapclient then files the next letter's body under this UID and drops the
        next one. A letter expunged meanwhile looks the same, and costs one refetch."""
        wanted = {int(uid) for uid in uids}
        with _mapped("fetch"):
            response = self._require().fetch(sorted(wanted), FETCH_ITEMS)
        if len(wanted) > 1 and (missing := wanted - set(response)):
            raise _Malformed(f"FETCH of {len(wanted)} letters did not answer UID "
                             f"{min(missing)} (and {len(missing) - 1} more)")
        letters = []
        for uid in sorted(response):
            data = response[uid]
            if uid not in wanted:
                raise _Malformed(f"FETCH answered for UID {uid}, which was not asked for")
            raw = data.get(b"BODY[]")
            size = data.get(b"RFC822.SIZE")
            if raw is None and size is None:
                continue  # expunged between SEARCH and FETCH
            if raw is None or not isinstance(size, int) or len(raw) != size:
                got = "no BODY[]" if raw is None else f"{len(raw)} bytes"
                raise _Malformed(f"UID {uid}: literal of {got}, RFC822.SIZE {size!r}")
            received = data.get(b"INTERNALDATE")
            letters.append(FetchedLetter(
                uid=str(uid),
                raw=bytes(raw),
                received_at=received if isinstance(received, datetime) else None,
            ))
        return letters

    # --------------------------------------------------------------------- filing

    def file(self, uids: Sequence[str], folder: str) -> dict[str, str]:
        """Move the letters in one command; if the server refuses (say one letter is over
        the target's quota), move them one by one and return the ones it refused."""
        if not uids:
            return {}
        with _mapped(f"move to {folder}"):
            self._ensure_folder(folder)
        try:
            self._move([int(uid) for uid in uids], folder)
        except _Refused as exc:
            if len(uids) == 1:
                return {uids[0]: str(exc)}
            log.warning("batch move refused; moving letter by letter", folder=folder,
                        count=len(uids), error=str(exc))
            refused: dict[str, str] = {}
            for uid in uids:
                refused.update(self.file([uid], folder))
            return refused
        return {}

    def _move(self, numbers: list[int], folder: str) -> None:
        """MOVE, or COPY + \\Deleted + EXPUNGE. A NO or BAD is _Refused; a dropped
        connection is MailboxUnavailable."""
        client = self._require()
        with _mapped(f"move to {folder}"), _refusals(folder):
            if client.has_capability("MOVE"):
                client.move(numbers, folder)
                return
            client.copy(numbers, folder)
            client.delete_messages(numbers)
            if client.has_capability("UIDPLUS"):
                client.uid_expunge(numbers)
            else:
                client.expunge()

    def _ensure_folder(self, folder: str) -> None:
        if folder in self._known_folders:
            return
        client = self._require()
        if not client.folder_exists(folder):
            try:
                client.create_folder(folder)
            except IMAPClientError:
                if not client.folder_exists(folder):  # lost a race with another instance
                    raise
        self._known_folders.add(folder)

    # ---------------------------------------------------------------------- waiting

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """IDLE until the server reports a change, else sleep ``poll_interval``.

        A letter that lands after the check for new mail and before the server takes the
        IDLE command is not announced by Dovecot (19 times in 20 in a test), so it would
        wait for the server's own periodic check (30 s) or the IDLE renewal: the first
        IDLE lasts ``IDLE_SETTLE`` seconds, then the folder is checked once more and
        IDLE resumes for the rest of the time.
        """
        client = self._require()
        if self._arrived_since_listing():
            return
        if not (self.config.idle and client.has_capability("IDLE")):
            stop.wait(min(timeout, self.config.poll_interval))
            return
        deadline = time.monotonic() + min(timeout, self.config.idle_timeout)
        if self._idle_until(client, min(deadline, time.monotonic() + IDLE_SETTLE), stop):
            return
        if stop.is_set() or time.monotonic() >= deadline or self._arrived_since_listing():
            return
        self._idle_until(client, deadline, stop)

    def _idle_until(self, client: Any, deadline: float, stop: threading.Event) -> bool:
        """IDLE until ``deadline``; True when the server announced mail (or left)."""
        with _mapped("idle"):
            client.idle()
            try:
                while not stop.is_set() and time.monotonic() < deadline:
                    if self._idle_slice(client):
                        return True
            finally:
                client.idle_done()
        return False

    @staticmethod
    def _idle_slice(client: Any) -> bool:
        """Wait up to IDLE_SLICE; True when it is time to leave IDLE.

        imapclient's ``idle_check`` swallows EOF and returns nothing at once, so a
        connection the server dropped (restart, kick) would be polled in a busy loop
        until ``idle_timeout``, deaf to new mail. Nothing to read although the socket
        said readable means exactly that; leaving IDLE lets ``idle_done`` tell (if the
        connection is fine after all, the cost is one spare pass over the folder).
        """
        asked = time.monotonic()
        responses = client.idle_check(timeout=IDLE_SLICE)
        if _announces_mail(responses):
            return True
        return not responses and time.monotonic() - asked < IDLE_SLICE / 2


def _announces_mail(responses: list[tuple[Any, ...]]) -> bool:
    return any(len(item) > 1 and item[1] in (b"EXISTS", b"RECENT") for item in responses)


class _Malformed(Exception):
    """A FETCH answer that does not add up (wrong UID, wrong size, missing body)."""


class _Refused(Exception):
    """The server answered NO or BAD to a command; the connection itself is fine."""


@contextmanager
def _refusals(folder: str) -> Iterator[None]:
    try:
        yield
    except imaplib.IMAP4.abort:
        raise  # the connection broke: _mapped makes it MailboxUnavailable
    except (IMAPClientError, imaplib.IMAP4.error) as exc:
        raise _Refused(f"IMAP move to {folder} refused: {exc or type(exc).__name__}") from exc


class _Deadline:
    """One deadline for connect, greeting, TLS and login: shuts the socket down when due.

    ``watch`` is handed every socket the connection opens; a timer shuts them down at
    the deadline, which ends any read in progress (imaplib then raises), however the
    server drips its bytes.
    """

    def __init__(self, seconds: float, address: str) -> None:
        self.seconds, self.address = seconds, address
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self._expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self._expired = True
            for sock in self._sockets:
                _shut(sock)

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def finish(self) -> None:
        """Logged in: stop the clock, unless it ran out first (then the socket is shut)."""
        with self._lock:
            self._timer.cancel()
            if self._expired:
                raise self.error()

    def error(self) -> MailboxUnavailable:
        return MailboxUnavailable(
                f"IMAP server {self.address} did not greet and log us in within "
                f"{self.seconds:g} s (mailbox.timeout); check that it is an IMAP server and "
                "not overloaded"
            )

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        with self._lock:
            self._timer.cancel()
            expired = self._expired
        if expired and error is not None and not isinstance(error, MailboxUnavailable):
            raise self.error() from error


def _shut(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _WatchedIMAP4(imap4.IMAP4WithTimeout):  # type: ignore[misc]
    """Plain IMAP whose socket is handed to a deadline as soon as it is connected."""

    def __init__(self, host: str, port: int, timeout: float | None,
                 watch: Callable[[socket.socket], None]) -> None:
        self._watch = watch
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock: socket.socket = super()._create_socket(timeout)
        self._watch(sock)
        return sock


class _WatchedIMAP4TLS(tls.IMAP4_TLS):  # type: ignore[misc]
    """Implicit TLS, the raw socket watched before the handshake (which may drip too)."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None,
                 timeout: float | None, watch: Callable[[socket.socket], None]) -> None:
        self._watch = watch
        super().__init__(host, port, ssl_context, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock = socket.create_connection((self.host, self.port),
                                        timeout=self._timeout if timeout is None else timeout)
        self._watch(sock)
        wrapped: socket.socket = tls.wrap_socket(sock, self.ssl_context, self.host)
        return wrapped


class WatchedIMAPClient(IMAPClient):  # type: ignore[misc]
    """IMAPClient whose sockets a deadline can shut down (see _Deadline).

    imapclient sets imaplib's debug level to 5 and routes its messages to the
    ``imapclient.imaplib`` logger, whose debug lines are then dropped. At that level
    imaplib formats every response for them first, a letter's literal as ``%r`` and
    the whole answer of a FETCH once more: 0.44 ms of CPU a letter of 57 KB, most of
    what reading a backlog cost (``bench/README.md``), and a string several times a
    large letter's size. The level stays 5 only while that logger would print.
    """

    def __init__(self, *args: Any, watch: Callable[[socket.socket], None], **kwargs: Any
                 ) -> None:
        self._watch = watch
        super().__init__(*args, **kwargs)
        if not logging.getLogger("imapclient.imaplib").isEnabledFor(logging.DEBUG):
            self._imap.debug = 0

    def _create_IMAP4(self) -> imaplib.IMAP4:
        connect_timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return _WatchedIMAP4TLS(self.host, self.port, self.ssl_context, connect_timeout,
                                    self._watch)
        return _WatchedIMAP4(self.host, self.port, connect_timeout, self._watch)


CONNECT_HINT = " (check [mailbox] host, port and security)"


@contextmanager
def _mapped(action: str, hint: str = "") -> Iterator[None]:
    """Turn library and socket errors into MailboxUnavailable naming the action (and, for a
    connection, what to check)."""
    try:
        yield
    except MailboxUnavailable:
        raise
    except _ERRORS as exc:
        raise MailboxUnavailable(f"IMAP {action} failed: {in_words(exc)}{hint}") from exc
