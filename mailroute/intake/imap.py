"""An IMAP folder as a mail source (imapclient), with IDLE where the server offers it.

Letters are read with ``BODY.PEEK[]`` so nothing changes on the server until
the raw bytes are committed to the database; only then are they moved. Every
library or socket error leaves this module as :class:`MailboxUnavailable`.
"""

from __future__ import annotations

import imaplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from mailroute import oauth2
from mailroute.config import MailboxConfig
from mailroute.errors import MailboxUnavailable
from mailroute.intake.source import FetchedLetter
from mailroute.tls import tls_context

ClientFactory = Callable[..., Any]
IDLE_SLICE = 1.0  # seconds between checks of the stop flag while idling
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
        client_factory: ClientFactory = IMAPClient,
        tokens: oauth2.TokenSource | None = None,
    ) -> None:
        self.config = config
        self.name = (
            f"imap://{config.username}@{config.host}:{config.effective_port()}/{config.folder}"
        )
        self._factory = client_factory
        # Shared per command, not per source: the daemon makes a new source after each
        # failure, and the token should survive that.
        if tokens is None and config.auth == "xoauth2" and config.oauth2_token_command:
            tokens = oauth2.shared(config.oauth2_token_command)
        self._tokens = tokens
        self._client: Any = None
        self._known_folders: set[str] = set()
        self._listed: set[int] = set()

    # ----------------------------------------------------------------- connection

    def select(self) -> int:
        if self._client is None:
            with _mapped("connect"):
                self._client = self._connect()
        with _mapped(f"select {self.config.folder}"):
            selected = self._client.select_folder(self.config.folder)
        return int(selected[b"UIDVALIDITY"])

    def _connect(self) -> Any:
        cfg = self.config
        context = tls_context(cfg.tls_verify, cfg.ca_file)
        client = self._factory(
            cfg.host,
            port=cfg.effective_port(),
            ssl=cfg.security == "ssl",
            ssl_context=context if cfg.security == "ssl" else None,
            timeout=cfg.timeout,
        )
        client.normalise_times = False
        try:
            if cfg.security == "starttls":
                client.starttls(context)
            self._login(client)
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
                f"IMAP XOAUTH2 login refused for {cfg.username}: {exc or type(exc).__name__}"
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
        with _mapped("search"):
            uids = self._require().search(["ALL"])
        self._listed = {int(uid) for uid in uids}
        return [str(uid) for uid in sorted(uids)]

    def _arrived_since_listing(self) -> bool:
        """Mail that came in after the last listing; its EXISTS was consumed by an earlier
        command (MOVE), so IDLE would not announce it."""
        with _mapped("search"):
            present = set(self._require().search(["ALL"]))
        return bool(present - self._listed)

    def fetch(self, uids: Sequence[str]) -> Iterator[FetchedLetter]:
        if not uids:
            return
        with _mapped("fetch"):
            response = self._require().fetch(
                [int(uid) for uid in uids], [b"BODY.PEEK[]", b"INTERNALDATE"]
            )
        for uid in sorted(response):
            data = response[uid]
            raw = data.get(b"BODY[]")
            if raw is None:
                continue  # expunged between SEARCH and FETCH
            received = data.get(b"INTERNALDATE")
            yield FetchedLetter(
                uid=str(uid),
                raw=bytes(raw),
                received_at=received if isinstance(received, datetime) else None,
            )

    # --------------------------------------------------------------------- filing

    def file(self, uids: Sequence[str], folder: str) -> None:
        if not uids:
            return
        client = self._require()
        numbers = [int(uid) for uid in uids]
        with _mapped(f"move to {folder}"):
            self._ensure_folder(folder)
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
        """IDLE until the server reports a change, else sleep ``poll_interval``."""
        client = self._require()
        if self._arrived_since_listing():
            return
        if not (self.config.idle and client.has_capability("IDLE")):
            stop.wait(min(timeout, self.config.poll_interval))
            return
        deadline = time.monotonic() + min(timeout, self.config.idle_timeout)
        with _mapped("idle"):
            client.idle()
            try:
                while not stop.is_set() and time.monotonic() < deadline:
                    if self._idle_slice(client):
                        break
            finally:
                client.idle_done()

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


@contextmanager
def _mapped(action: str) -> Iterator[None]:
    """Turn library and socket errors into MailboxUnavailable naming the action."""
    try:
        yield
    except MailboxUnavailable:
        raise
    except _ERRORS as exc:
        raise MailboxUnavailable(f"IMAP {action} failed: {exc or type(exc).__name__}") from exc
