"""A tiny sd_notify client, so the daemon can report to systemd without libsystemd.

``Type=notify`` units tell systemd when they are ready, alive (watchdog), reloading or
stopping by sending newline-separated ``KEY=VALUE`` datagrams to the AF_UNIX socket named
in ``$NOTIFY_SOCKET``. The protocol is a few lines of stdlib code, so mailroute does not
depend on the python-systemd binding (a C extension built against libsystemd's headers).

Nothing here raises on socket trouble, waits long or logs: outside systemd, or when the
manager is away for a moment (``daemon-reexec``), every call just returns False and the
daemon carries on.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping
from types import TracebackType

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"
# How long a notification may wait for room in the manager's queue (it holds only a few
# datagrams): a manager that does not read must not hold up the daemon's main loop.
SEND_WAIT = 2.0


def socket_address(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The address in ``$NOTIFY_SOCKET``, ready for ``sendto``; None when not usable.

    A leading "@" names a Linux abstract socket (the "@" becomes a NUL byte). Other forms
    systemd may use (``vsock:``) are not supported and count as "not under systemd".
    """
    environ = os.environ if environ is None else environ
    value = environ.get(NOTIFY_SOCKET_ENV, "")
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return os.fsencode(value)
    return None


def _message(fields: tuple[str, ...]) -> bytes:
    """Join fields into one datagram; a newline inside a field would split it in two.

    Undecodable text (surrogates from file names, say) becomes "?" rather than an error.
    """
    text = "\n".join(" ".join(field.splitlines()) for field in fields)
    return text.encode("utf-8", errors="replace")


def notify(*fields: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send one notification, e.g. ``notify("READY=1", "STATUS=serving")``.

    Opens a socket for this one message: fine for rare events. Returns True when the
    datagram was sent, False when not under systemd or on any socket error.
    """
    address = socket_address(environ)
    if address is None or not fields:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            if not _send_within(sock, _message(fields), address, SEND_WAIT):
                return False
    except OSError:
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout systemd enforces (``WatchdogSec=``), in seconds, or None.

    None when no watchdog is set, or when ``$WATCHDOG_PID`` names another process (the
    variable was inherited, so the watchdog is not ours). Ping at least every half of it.
    """
    environ = os.environ if environ is None else environ
    try:
        usec = int(environ.get(WATCHDOG_USEC_ENV, ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = environ.get(WATCHDOG_PID_ENV)
    if pid is not None:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 1_000_000


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd expects in ``MONOTONIC_USEC=``."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """One daemon's link to systemd: a socket kept open for frequent watchdog pings.

    Safe to share between threads (the intake loop and the outbox job both ping). All
    methods return True when the message was sent and False otherwise; none raises.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self._address = socket_address(environ)
        self._watchdog = watchdog_interval(environ)
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """True when started by systemd with a notification socket."""
        return self._address is not None

    @property
    def watchdog_timeout(self) -> float | None:
        """``WatchdogSec=`` in seconds, or None when there is no watchdog for us."""
        return self._watchdog

    @property
    def ping_interval(self) -> float | None:
        """How often to call :meth:`watchdog`: half the timeout, as sd_watchdog_enabled(3)
        advises, so one late ping does not get the service killed."""
        return None if self._watchdog is None else self._watchdog / 2

    def send(self, *fields: str, wait: bool = True) -> bool:
        """Send raw ``KEY=VALUE`` fields in one datagram.

        With the manager's queue full, waits up to ``SEND_WAIT`` for room (``wait``),
        or not at all: a blocking send once held the main loop, and with it the
        notifier's lock, for as long as nobody read, so SIGTERM went unheard.
        """
        if self._address is None or not fields:
            return False
        try:
            with self._lock:
                if self._socket is None:
                    self._socket = socket.socket(
                        socket.AF_UNIX,
                        socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
                    )
                return _send_within(self._socket, _message(fields), self._address,
                                    SEND_WAIT if wait else 0.0)
        except OSError:
            return False

    def ready(self, status: str | None = None) -> bool:
        """Startup (or a reload) is complete: systemd marks the unit active."""
        return self.send("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        """A one-line state shown by ``systemctl status``."""
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        """Proof of life; without one every ``WatchdogSec=`` systemd restarts the unit.

        Never waits: a full queue already holds pings enough, and the next comes soon.
        """
        return self.send("WATCHDOG=1", wait=False)

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun, so systemd shows "deactivating" rather than a hang."""
        return self.send("STOPPING=1", *_status(status))

    def reloading(self, status: str | None = None) -> bool:
        """A reload has begun; send :meth:`ready` when it is done.

        ``MONOTONIC_USEC=`` is what ``Type=notify-reload`` (systemd >= 253) requires to
        match the message to the reload request; older managers ignore it.
        """
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", *_status(status))

    def close(self) -> None:
        """Release the socket; later calls open a new one."""
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def __del__(self) -> None:
        # The socket is an internal detail: a Notifier dropped without close() must not
        # leave a ResourceWarning behind (the test suite turns warnings into errors).
        sock = getattr(self, "_socket", None)
        if sock is not None:
            sock.close()

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _send_within(sock: socket.socket, message: bytes, address: bytes, wait: float) -> bool:
    """Send on a non-blocking socket, retrying while the queue is full for up to ``wait``
    seconds (poll() says a datagram socket is writable even then, so it cannot tell)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            sock.sendto(message, address)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        else:
            return True


def _status(text: str | None) -> tuple[str, ...]:
    return () if text is None else (f"STATUS={text}",)
