"""A real SMTP server (aiosmtpd) that records what mailroute sends.

Replies go out through aiosmtplib, so the tests need a server that speaks real SMTP over a
real socket (EHLO, pipelining, SMTPUTF8, STARTTLS, 4xx/5xx replies), not a mocked client.
Messages are kept in memory; ``reply_code`` / ``rcpt_reply_code`` inject failures and
``stop()``/``start()`` simulate an SMTP outage on the same port; ``data_delay`` makes
it a slow server (seconds before each answer to DATA). With ``xoauth2`` the server
offers AUTH XOAUTH2 (also without TLS, on loopback) and refuses mail before a login.
"""

from __future__ import annotations

import asyncio
import binascii
import email
import email.policy
import functools
import json
import socket
import threading
import time
from base64 import b64decode
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, ClassVar

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session

from .certs import SelfSignedCertificate, make_certificate
from .services import free_port


@dataclass(frozen=True)
class ReceivedMail:
    """One accepted message: envelope and content exactly as received.

    ``message`` is parsed when first asked for, not while the server is receiving:
    a benchmark's sink then takes no CPU from the mailroute it measures.
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    received_at: float = 0.0  # time.time() when the server accepted it (before its 250)
    peer: tuple[str, int] | None = None  # the client's address and port: its connection

    @functools.cached_property
    def message(self) -> EmailMessage:
        message = email.message_from_bytes(self.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return message

    @classmethod
    def from_envelope(cls, envelope: Envelope, peer: Any = None) -> ReceivedMail:
        content = envelope.content
        if isinstance(content, str):  # only with decode_data=True, which we do not use
            content = content.encode()
        assert content is not None
        return cls(mail_from=envelope.mail_from or "", rcpt_tos=tuple(envelope.rcpt_tos),
                   content=content, received_at=time.time(),
                   peer=tuple(peer[:2]) if peer else None)


class _RecordingHandler:
    """aiosmtpd handler: records accepted mail, or answers with an injected error."""

    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        code = self._sink.rcpt_reply_code
        if code is not None:
            return code
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self._sink.data_delay:
            await asyncio.sleep(self._sink.data_delay)  # a slow relay, before it answers
        code = self._sink.reply_code
        if code is not None:
            return code
        self._sink._record(ReceivedMail.from_envelope(envelope, session.peer))
        return "250 2.0.0 Message accepted for delivery"


class _XOAuth2Handler(_RecordingHandler):
    """Adds AUTH XOAUTH2 as Gmail and Microsoft 365 answer it (aiosmtpd's ``auth_*`` hook).

    A good token gets 235. A bad one gets a 334 challenge carrying a base64 JSON error, and
    after the client's empty reply 535, so clients must handle that exchange.
    """

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:  # no initial response: ask for it
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = b64decode(args[1], validate=True)
            except binascii.Error:
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        assert isinstance(blob, bytes)
        parts = blob.decode(errors="replace").split("\x01")
        fields = dict(part.split("=", 1) for part in parts if "=" in part)
        user, token = fields.get("user", ""), fields.get("auth", "").removeprefix("Bearer ")
        accepted = bool(token) and (self._sink.xoauth2 or {}).get(user) == token
        self._sink._record_auth(user, accepted)
        if accepted:
            return AuthResult(success=True, auth_data=user)
        error = {"status": "401", "schemes": "Bearer", "scope": "https://mail.example/"}
        await server.challenge_auth(json.dumps(error))  # the client answers with an empty line
        return AuthResult(
            success=False, handled=False, message="535 5.7.8 Username and Password not accepted"
        )

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        # Like auth_required=True, which aiosmtpd only allows with TLS without a warning.
        if not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"


class SmtpSink:
    """An aiosmtpd server on 127.0.0.1 in a background thread, recording every message.

    ``reply_code`` (e.g. ``"451 4.3.0 try later"`` or ``"550 5.1.1 no such user"``) is the
    answer to DATA while set; ``rcpt_reply_code`` likewise for RCPT TO. With ``tls=True``
    the server offers STARTTLS with a certificate verifiable with ``ca_file``. ``xoauth2``
    maps user names to the one access token each may log in with (AUTH XOAUTH2); then mail is
    accepted only after such a login, and ``auth_attempts`` lists (user, accepted) pairs.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        tls: bool = False,
        certificate: SelfSignedCertificate | None = None,
        cert_dir: Path | None = None,
        xoauth2: Mapping[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.xoauth2: dict[str, str] | None = dict(xoauth2) if xoauth2 is not None else None
        self._auth_attempts: list[tuple[str, bool]] = []
        self.reply_code: str | None = None
        self.rcpt_reply_code: str | None = None
        self.data_delay = 0.0
        self._received: list[ReceivedMail] = []
        self._condition = threading.Condition()
        self._controller: Controller | None = None
        self._started_once = False
        self.certificate = certificate
        if tls and certificate is None:
            if cert_dir is None:
                raise ValueError("tls=True needs a certificate or a cert_dir to create one in")
            self.certificate = make_certificate(cert_dir)
        self.tls = tls

    @property
    def ca_file(self) -> Path:
        """PEM file of the CA that signed the STARTTLS certificate (``tls=True`` only)."""
        if self.certificate is None:
            raise RuntimeError("SmtpSink was created without tls=True")
        return self.certificate.ca_file

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        """Listen (again) on ``self.port``; no-op while running.

        If the port was grabbed by someone else between ``free_port()`` and the very first
        start, another port is tried; after that the port must stay (outage tests).
        """
        if self._controller is not None:
            return
        attempts = 1 if self._started_once else 3
        for attempt in range(attempts):
            try:
                self._controller = self._start_controller()
            except OSError:
                if attempt == attempts - 1:
                    raise
                self.port = free_port()
            else:
                self._started_once = True
                return

    def _start_controller(self) -> Controller:
        tls_context = self.certificate.server_context() if self.tls and self.certificate else None
        auth: dict[str, Any] = {}
        handler = _RecordingHandler(self)
        if self.xoauth2 is not None:
            handler = _XOAuth2Handler(self)
            # Offer AUTH over plaintext loopback; PLAIN and LOGIN would only ever fail.
            auth = {"auth_require_tls": False, "auth_exclude_mechanism": ["PLAIN", "LOGIN"]}
        controller = Controller(
            handler,
            hostname=self.host,
            port=self.port,
            server_hostname="localhost",
            enable_SMTPUTF8=True,
            tls_context=tls_context,
            require_starttls=False,
            **auth,
        )
        try:
            controller.start()
        except BaseException:
            # A failed start leaves the controller's private event loop open
            # (ResourceWarning, which this test suite turns into an error).
            if controller._thread is not None:
                controller.stop(no_assert=True)
            if not controller.loop.is_closed():
                controller.loop.close()
            raise
        return controller

    def stop(self) -> None:
        """Stop listening; connected clients are dropped. Recorded mail is kept."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def received(self) -> list[ReceivedMail]:
        """A snapshot of the messages accepted so far, oldest first."""
        with self._condition:
            return list(self._received)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        """Wait until at least *count* messages arrived; returns all of them.

        Fails with an AssertionError that lists what did arrive, so a test failure says
        more than "timeout".
        """
        deadline = time.monotonic() + timeout
        with self._condition:
            while len(self._received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    got = [
                        f"{mail.mail_from} -> {', '.join(mail.rcpt_tos)}: "
                        f"{mail.message.get('Subject')!r}"
                        for mail in self._received
                    ]
                    raise AssertionError(
                        f"expected {count} message(s) within {timeout} s, got "
                        f"{len(self._received)}: {got}"
                    )
                self._condition.wait(remaining)
            return list(self._received)

    def clear(self) -> None:
        """Forget the recorded messages."""
        with self._condition:
            self._received.clear()

    @property
    def auth_attempts(self) -> list[tuple[str, bool]]:
        """(user, accepted) for every AUTH XOAUTH2 so far, oldest first."""
        with self._condition:
            return list(self._auth_attempts)

    def _record_auth(self, user: str, accepted: bool) -> None:
        with self._condition:
            self._auth_attempts.append((user, accepted))

    def _record(self, mail: ReceivedMail) -> None:
        with self._condition:
            self._received.append(mail)
            self._condition.notify_all()

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class DrippingSmtpServer:
    """A scripted SMTP server on 127.0.0.1 that drips every answer a byte at a time.

    aiosmtpd cannot be this slow on purpose. Each answer (greeting, EHLO, AUTH, ...)
    takes ``answer_seconds`` to arrive, within any per-answer timeout, so a client
    whose deadline covers one read at a time gets through greeting, EHLO and login
    in several timeouts. With ``slow_from`` (a verb, ``b"MAIL"`` say), the answers before
    that verb's come at once and only the rest drip. ``commands`` lists the verbs the
    client got to send; a message after DATA is read to its end and answered once.
    """

    host = "127.0.0.1"
    _ANSWERS: ClassVar[dict[bytes, bytes]] = {
        b"EHLO": b"250-slow.example\r\n250 AUTH PLAIN LOGIN\r\n",
        b"AUTH": b"235 2.7.0 Authentication successful\r\n",
        b"QUIT": b"221 2.0.0 Bye\r\n",
    }

    def __init__(self, answer_seconds: float = 0.7, slow_from: bytes | None = None) -> None:
        self.answer_seconds = answer_seconds
        self.slow_from = slow_from
        self.commands: list[str] = []
        self._stop = threading.Event()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, 0))
        self._listener.listen()
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]

    def __enter__(self) -> DrippingSmtpServer:
        self._threads[0].start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            worker = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(worker)
            worker.start()

    def _serve(self, conn: socket.socket) -> None:
        slow = self.slow_from is None
        with conn:
            try:
                self._drip(conn, b"220 slow.example ESMTP\r\n", slow)
                lines = conn.makefile("rb")
                for line in lines:
                    verb = line.split(b" ", 1)[0].strip().upper()
                    self.commands.append(verb.decode(errors="replace"))
                    slow = slow or verb == self.slow_from
                    if verb == b"DATA":
                        self._drip(conn, b"354 End data with <CR><LF>.<CR><LF>\r\n", slow)
                        for body_line in lines:
                            if body_line == b".\r\n" or self._stop.is_set():
                                break
                    self._drip(conn, self._ANSWERS.get(verb, b"250 2.0.0 OK\r\n"), slow)
                    if verb == b"QUIT" or self._stop.is_set():
                        return
            except OSError:
                return  # the client gave up

    def _drip(self, conn: socket.socket, answer: bytes, slow: bool = True) -> None:
        if not slow:
            conn.sendall(answer)
            return
        interval = self.answer_seconds / len(answer)
        for byte in answer:
            conn.sendall(bytes([byte]))
            if self._stop.wait(interval):
                return
