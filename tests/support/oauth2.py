"""A token introspection endpoint (RFC 7662) for Dovecot's oauth2 passdb, and token commands.

Dovecot checks an XOAUTH2 token by POSTing ``token=...`` to an introspection URL; this
server answers ``{"active": true, "username": NAME}`` for the tokens it was given and
``{"active": false}`` for any other, like a real identity provider. It listens on a free
loopback port in a background thread.

``write_token_command`` writes the stand-in for ``gcloud auth print-access-token`` or an
MSAL helper: a script printing a token the test chooses, counting its runs.
"""

from __future__ import annotations

import json
import shlex
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class IntrospectionServer:
    """``tokens`` maps each valid token to the user it belongs to; change it at will."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.requests = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((self.host, 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._server.server_address[1]}/introspect"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="introspection", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def answer(self, token: str) -> dict[str, object]:
        with self._lock:
            self.requests += 1
            user = self.tokens.get(token)
        return {"active": True, "username": user} if user else {"active": False}

    def __enter__(self) -> IntrospectionServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _handler_for(server: IntrospectionServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # introspection_mode = post
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            self._reply(server.answer(form.get("token", [""])[0]))

        def do_GET(self) -> None:  # introspection_mode = auth (Bearer header) or get
            bearer = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            query = urllib.parse.urlsplit(self.path).query
            token = bearer or urllib.parse.parse_qs(query).get("token", [""])[0]
            self._reply(server.answer(token))

        def _reply(self, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean (and tokens out of it)

    return Handler


_SCRIPT = """\
#!{python}
# Test stand-in for an OAuth2 helper: prints the token file's content, counts its runs.
import json, pathlib, sys
here = pathlib.Path({directory!r})
runs = here / "runs"
runs.write_text(str(int(runs.read_text() or 0) + 1) if runs.exists() else "1")
token = (here / "token").read_text().strip()
mode = (here / "mode").read_text().strip()
if mode == "fail":
    print("helper: refresh token expired; sign in again", file=sys.stderr)
    print(token)  # whatever it printed must not show up in errors
    sys.exit(3)
if mode == "bare":
    print(token)
else:
    print(json.dumps({{"access_token": token, "token_type": "Bearer",
                      "expires_in": int(mode)}}))
"""


class TokenCommand:
    """A script in ``directory``: prints ``token`` as JSON with ``expires_in`` (``mode``
    a number of seconds), bare (``mode = "bare"``), or fails (``mode = "fail"``)."""

    def __init__(self, directory: Path, token: str, mode: str = "3600") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.path = directory / "token-helper"
        self.path.write_text(_SCRIPT.format(python=sys.executable, directory=str(directory)))
        self.path.chmod(0o755)
        self.set(token, mode)

    def set(self, token: str | None = None, mode: str | None = None) -> None:
        if token is not None:
            (self.directory / "token").write_text(token)
        if mode is not None:
            (self.directory / "mode").write_text(mode)

    @property
    def command(self) -> str:
        return shlex.quote(str(self.path))

    @property
    def runs(self) -> int:
        runs = self.directory / "runs"
        return int(runs.read_text()) if runs.exists() else 0
