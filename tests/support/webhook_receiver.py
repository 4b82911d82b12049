"""A real HTTP server on a loopback port that receives webhooks and checks their signature.

It can be down (nothing listens: connection refused), refusing (answers every POST
with ``refuse_with``, e.g. 503) or up (answers 204 to a correctly signed POST and
keeps it). The signature is checked the way the README tells receivers to.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from support.services import free_port


@dataclass(frozen=True)
class Received:
    """One POST the receiver accepted."""

    event: str
    delivery: str
    timestamp: int
    body: dict[str, Any]


def verify(secret: str, headers: Any, body: bytes, tolerance: float = 300) -> bool:
    """The README's check: HMAC-SHA256 over "{timestamp}.{body}", in constant time, recent."""
    timestamp = headers.get("X-Mailroute-Timestamp", "")
    signature = headers.get("X-Mailroute-Signature", "")
    expected = "sha256=" + hmac.new(
        secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) <= tolerance
    return fresh and hmac.compare_digest(expected, signature)


class WebhookReceiver:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/mailroute"
        self.refuse_with: int | None = None
        self.received: list[Received] = []
        self.bad_signatures = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.send_response(receiver.answer(self.headers, body))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, headers: Any, body: bytes) -> int:
        with self._lock:
            if self.refuse_with is not None:
                self.refused += 1
                return self.refuse_with
            if headers.get("Content-Type") != "application/json" or not verify(
                self.secret, headers, body
            ):
                self.bad_signatures += 1
                return 401
            document = json.loads(body)
            assert headers["X-Mailroute-Delivery"] == document["id"]
            assert headers["X-Mailroute-Event"] == document["event"]
            self.received.append(Received(document["event"], document["id"],
                                          int(headers["X-Mailroute-Timestamp"]), document))
            return 204

    def stop(self) -> None:
        """Down: the port refuses connections."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
