"""Log lines for people who tail them: one line per event, key=value, secrets redacted.

Stable ids come first (``msgid= uid= request=``) so ``grep request=SD-000123``
finds a request's whole story. ``format = "json"`` gives one JSON object per line.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO


def _import_structlog_without_rich() -> None:
    """Import structlog with rich hidden from it.

    structlog's console renderer and its rich tracebacks import rich, and through it
    pygments and attrs, whenever rich is installed (it is: the command line's tables
    use it). That was ~60 ms of the start-up of every process, the daemon's and the
    workers' forkserver's alike, for renderers mailroute never uses; without rich,
    structlog keeps its plain formatters, which are the ones ``configure`` asks for.
    """
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` fails at once
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


_import_structlog_without_rich()

import structlog  # noqa: E402  (imported above; this name is for the code and its types)

KEY_ORDER = ["ts", "msgid", "uid", "request", "letter", "outbox", "event"]
SECRET_KEYS = ("password", "passwd", "secret", "token", "authorization")


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace the value of any key that looks like a credential."""
    for key in event:
        if _is_secret(key):
            event[key] = "********"
    return event


@functools.lru_cache(maxsize=4096)  # keys come from the code: a bound that is never reached
def _is_secret(key: str) -> bool:
    """Per key, once: a log line has a handful of keys from a small fixed set, and the
    outbox writes a line for every reply."""
    return any(word in key.lower() for word in SECRET_KEYS)


class KeyValueLine:
    """The logfmt line of structlog's ``LogfmtRenderer`` (``key_order``, keys that are
    missing dropped, True as a bare flag), written faster: a value with nothing to
    escape (nearly all of them) is joined as it is, and a key is checked once.

    Every letter costs the daemon a few lines, and the outbox one a reply; structlog's
    renderer tested each character of every key and ran three replacements on every
    value (about 5 µs of a line's 12).
    """

    def __init__(self, key_order: list[str]) -> None:
        self.key_order = tuple(key_order)

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> str:
        pairs = []
        for key in self.key_order:
            value = event.pop(key, None)
            if value is not None:
                pairs.append(_pair(key, value))
        pairs.extend(_pair(key, value) for key, value in event.items())
        return " ".join(pairs)


def _pair(key: str, value: Any) -> str:
    _check_key(key)
    if value is None:
        return f"{key}="
    if value is True:
        return key
    if value is False:
        return f"{key}=false"
    text = value if type(value) is str else str(value)
    if _NEEDS_ESCAPING.search(text) is None:
        return f"{key}={text}"
    quoted = " " in text or "=" in text or '"' in text
    if quoted and "\\" in text:
        text = text.replace("\\", "\\\\")
    text = text.replace('"', '\\"').replace("\n", "\\n")
    return f'{key}="{text}"' if quoted else f"{key}={text}"


_NEEDS_ESCAPING = re.compile(r'[ ="\n]')


@functools.lru_cache(maxsize=4096)  # keys come from the code: a bound that is never reached
def _check_key(key: str) -> None:
    if any(c <= " " for c in key):
        raise ValueError(f'Invalid key: "{key}"')


def configure(level: str = "info", fmt: str = "keyvalue", stream: TextIO | None = None) -> None:
    """Route structlog to ``stream`` (stderr, which journald collects).

    Under systemd (``$JOURNAL_STREAM`` set) journald stamps each line itself, so
    the ``ts=`` field is left out there.
    """
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if fmt == "json"
        else KeyValueLine(KEY_ORDER)
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        redact,
        structlog.processors.format_exc_info,
    ]
    if "JOURNAL_STREAM" not in os.environ:
        processors.insert(0, structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"))
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream or _CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was set up."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def bind(**values: Any) -> None:
    """Add ``values`` to every line this thread or task logs from now on."""
    structlog.contextvars.bind_contextvars(**values)


def unbind(*keys: str) -> None:
    structlog.contextvars.unbind_contextvars(*keys)


def get(name: str = "mailroute") -> Any:
    """A logger; call ``configure`` first in entry points."""
    return structlog.get_logger(name)
