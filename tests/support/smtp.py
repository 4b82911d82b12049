"""A real SMTP server (aiosmtpd) that records what mailroute sends.

Replies go out through aiosmtplib, so the tests need a server that speaks real SMTP over a
real socket (EHLO, pipelining, SMTPUTF8, STARTTLS, 4xx/5xx replies), not a mocked client.
Messages are kept in memory; ``reply_code`` / ``rcpt_reply_code`` inject failures and
``stop()``/``start()`` simulate an SMTP outage on the same port.
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from .certs import SelfSignedCertificate, make_certificate
from .services import free_port


@dataclass(frozen=True)
class ReceivedMail:
    """One accepted message: envelope and content exactly as received."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    message: EmailMessage = field(repr=False, compare=False)

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> ReceivedMail:
        content = envelope.content
        if isinstance(content, str):  # only with decode_data=True, which we do not use
            content = content.encode()
        assert content is not None
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return cls(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            content=content,
            message=message,
        )


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
        code = self._sink.reply_code
        if code is not None:
            return code
        self._sink._record(ReceivedMail.from_envelope(envelope))
        return "250 2.0.0 Message accepted for delivery"


class SmtpSink:
    """An aiosmtpd server on 127.0.0.1 in a background thread, recording every message.

    ``reply_code`` (e.g. ``"451 4.3.0 try later"`` or ``"550 5.1.1 no such user"``) is the
    answer to DATA while set; ``rcpt_reply_code`` likewise for RCPT TO. With ``tls=True``
    the server offers STARTTLS with a certificate verifiable with ``ca_file``.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        tls: bool = False,
        certificate: SelfSignedCertificate | None = None,
        cert_dir: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.reply_code: str | None = None
        self.rcpt_reply_code: str | None = None
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
        controller = Controller(
            _RecordingHandler(self),
            hostname=self.host,
            port=self.port,
            server_hostname="localhost",
            enable_SMTPUTF8=True,
            tls_context=tls_context,
            require_starttls=False,
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

    def _record(self, mail: ReceivedMail) -> None:
        with self._condition:
            self._received.append(mail)
            self._condition.notify_all()

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
