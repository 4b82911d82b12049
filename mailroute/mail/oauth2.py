"""OAuth2 access tokens for XOAUTH2 logins (IMAP and SMTP), from an external command.

Microsoft 365 and Gmail no longer accept passwords from daemons; they want an
OAuth2 access token that lives about an hour. Getting one takes a
provider-specific flow (client secret or certificate, refresh token, service
account), so mailroute does not implement any: it runs a command the operator
configures (``oauth2_token_command``) and uses what it prints. The command is
run without a shell, its words split with :func:`shlex.split`, and
``$CREDENTIALS_DIRECTORY`` expanded so systemd credentials can be passed in.

The command prints either the bare token (``gcloud auth print-access-token``)
or a JSON object: ``access_token`` (or ``accessToken``), with the lifetime as
``expires_in`` seconds, ``expires_on`` UNIX seconds (Azure CLI) or ``expiry``
ISO 8601 (oauth2l, Go tools). A token is reused until shortly before it
expires, so the command runs about once an hour and not on every reconnect.

The token is a secret: it never appears in an exception, a log line or a
``repr``. Errors name the command (its first word) and the exit status and
quote its stderr, never its stdout.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from base64 import b64encode
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mailroute.errors import TransientError

COMMAND_TIMEOUT = 30.0  # seconds the token command may take
DEFAULT_LIFETIME = 50 * 60.0  # seconds a token is trusted when the command does not say
REFRESH_MARGIN = 60.0  # fetch a new token this long before the old one expires
STDERR_QUOTED = 400  # characters of the command's stderr quoted in an error
_WORDS = re.compile(r"[\w.~+/=-]{8,}")  # what may be (part of) a token, for masking
_CREDENTIALS = re.compile(r"\$(?:CREDENTIALS_DIRECTORY\b|\{CREDENTIALS_DIRECTORY\})")

Clock = Callable[[], float]


class TokenCommandFailed(TransientError):
    """The token command failed or printed no usable token; tried again with backoff.

    Transient because the usual causes (identity provider unreachable, a helper's
    own cache being refreshed) pass; a broken command keeps failing visibly in the
    log and in ``mailroute status``.
    """


@dataclass(frozen=True)
class AccessToken:
    """A token and when (on ``time.monotonic``'s scale) it stops being used."""

    value: str = field(repr=False)
    expires_at: float


def xoauth2_string(user: str, token: str) -> str:
    """The SASL XOAUTH2 initial response (before base64), as Google and Microsoft define it."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def xoauth2_base64(user: str, token: str) -> str:
    """The base64 form sent after ``AUTH XOAUTH2`` / ``AUTHENTICATE XOAUTH2``."""
    return b64encode(xoauth2_string(user, token).encode()).decode("ascii")


class TokenSource:
    """Runs the token command when needed and caches the token until shortly before expiry.

    Thread-safe: the intake thread and the outbox job may ask at the same time;
    one of them runs the command, the other waits for its result.
    """

    def __init__(
        self,
        command: str,
        *,
        timeout: float = COMMAND_TIMEOUT,
        default_lifetime: float = DEFAULT_LIFETIME,
        margin: float = REFRESH_MARGIN,
        clock: Clock = time.monotonic,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.command = command
        self.timeout = timeout
        self.default_lifetime = default_lifetime
        self.margin = margin
        self._clock = clock
        self._environ = environ
        self._lock = threading.Lock()
        self._cached: AccessToken | None = None

    def __repr__(self) -> str:
        return f"TokenSource({self.program!r})"

    @property
    def program(self) -> str:
        """The command's first word: what errors name (the rest may hold account names)."""
        try:
            words = shlex.split(self.command)
        except ValueError:
            words = []
        return words[0] if words else self.command

    def token(self) -> str:
        """A token valid for at least ``margin`` seconds more; runs the command if needed."""
        with self._lock:
            cached = self._cached
            if cached is None or self._clock() >= cached.expires_at:
                cached = self._cached = self._fetch()
            return cached.value

    def invalidate(self, token: str | None = None) -> None:
        """Forget the cached token (after the server refused it), so the next login fetches anew.

        With ``token`` only that token is forgotten: a thread whose login failed with
        an old token must not throw away the fresh one another thread just fetched.
        """
        with self._lock:
            if self._cached is not None and (token is None or self._cached.value == token):
                self._cached = None

    # ---------------------------------------------------------------- internals

    def _argv(self) -> list[str]:
        environ = os.environ if self._environ is None else self._environ
        try:
            words = shlex.split(self.command)
        except ValueError as exc:
            raise TokenCommandFailed(f"OAuth2 token command cannot be split: {exc}") from None
        if not words:
            raise TokenCommandFailed("OAuth2 token command is empty")
        if not any(_CREDENTIALS.search(word) for word in words):
            return words
        directory = environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise TokenCommandFailed(
                f"OAuth2 token command {words[0]}: uses $CREDENTIALS_DIRECTORY, "
                "which is not set (systemd sets it with LoadCredential=)"
            )
        return [_CREDENTIALS.sub(lambda _: directory, word) for word in words]

    def _fetch(self) -> AccessToken:
        argv = self._argv()
        name = argv[0]
        started = self._clock()
        stdout, stderr, status = self._run(argv)
        if status != 0:
            raise TokenCommandFailed(
                f"OAuth2 token command {name} failed with exit status {status}"
                + _quoted(stderr, stdout)
            )
        try:
            value, lifetime = parse_output(stdout)
        except ValueError as exc:
            raise TokenCommandFailed(
                f"OAuth2 token command {name} printed no usable token: {exc}"
                + _quoted(stderr, stdout)
            ) from None
        if lifetime is None:
            lifetime = self.default_lifetime
        return AccessToken(value, started + lifetime - self.margin)

    def _run(self, argv: list[str]) -> tuple[str, str, int]:
        name = argv[0]
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                # Own process group, so a timeout also ends helpers the command started,
                # which would otherwise keep the pipes open and hang communicate().
                start_new_session=True,
            )
        except OSError as exc:
            raise TokenCommandFailed(
                f"OAuth2 token command {name} cannot be run: {exc.strerror or exc}"
            ) from None
        try:
            out, err = process.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            raise TokenCommandFailed(
                f"OAuth2 token command {name} did not finish within {self.timeout:g} s"
                + _quoted(err.decode("utf-8", "replace"), out.decode("utf-8", "replace"))
            ) from None
        return out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), process.returncode


def parse_output(stdout: str) -> tuple[str, float | None]:
    """The token and its remaining lifetime in seconds (None: not stated) from the output.

    Raises ValueError with a message that never quotes the output.
    """
    text = stdout.strip()
    if not text:
        raise ValueError("the output is empty")
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"the output is not valid JSON (line {exc.lineno})") from None
        return _from_json(data)
    if len(text.split()) != 1:
        raise ValueError("expected one token or a JSON object, got several words")
    return text, None


def _from_json(data: Any) -> tuple[str, float | None]:
    if not isinstance(data, dict):
        raise ValueError("the JSON is not an object")
    value = data.get("access_token", data.get("accessToken"))
    if not isinstance(value, str) or not value.strip() or len(value.split()) != 1:
        raise ValueError('the JSON has no "access_token" string')
    return value.strip(), _lifetime(data)


def _lifetime(data: dict[str, Any]) -> float | None:
    """Seconds left, from expires_in, expires_on (UNIX time) or expiry (ISO 8601)."""
    try:
        if data.get("expires_in") is not None:
            return float(data["expires_in"])
        if data.get("expires_on") is not None:
            return float(data["expires_on"]) - time.time()
        if isinstance(data.get("expiry"), str):
            moment = datetime.fromisoformat(data["expiry"].replace("Z", "+00:00"))
            if moment.tzinfo is not None:
                return moment.timestamp() - time.time()
    except (TypeError, ValueError):
        raise ValueError("the JSON states the expiry in a form not understood") from None
    return None


def _quoted(stderr: str, stdout: str) -> str:
    """The tail of stderr on one line, for an error message; stdout is never quoted.

    Anything that also appeared on stdout is masked, in case a helper echoes
    the token it printed into its diagnostics.
    """
    text = stderr
    for word in set(_WORDS.findall(stdout)):
        text = text.replace(word, "********")
    text = " ".join(text.split())
    if not text:
        return ""
    if len(text) > STDERR_QUOTED:
        text = "..." + text[-STDERR_QUOTED:]
    return f": {text}"


_SHARED: dict[str, TokenSource] = {}
_SHARED_LOCK = threading.Lock()


def shared(command: str) -> TokenSource:
    """The one TokenSource of this process for ``command``.

    IMAP sources and SMTP connections are created afresh after every failure, and
    ``[mailbox]`` and ``[smtp]`` often name the same command; sharing keeps one
    cache, so a reconnect does not run the command again.
    """
    with _SHARED_LOCK:
        source = _SHARED.get(command)
        if source is None:
            source = _SHARED[command] = TokenSource(command)
        return source
