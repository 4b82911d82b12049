"""Signals as messages for the main loop: nothing is done inside a signal handler.

A Python signal handler runs on the main thread between any two bytecodes, so work
done there can need a lock the interrupted code already holds: a reload started by
SIGHUP in the middle of a watchdog ping waited forever for the notifier's lock, and
the daemon neither pinged, reloaded nor stopped again. Here the handlers do nothing;
the interpreter's own C handler writes each signal's number to a socket
(``signal.set_wakeup_fd``), and the main loop reads them when it is ready to act.
"""

from __future__ import annotations

import select
import signal
import socket
from collections.abc import Iterable
from types import FrameType
from typing import Any

_KNOWN = frozenset(int(signum) for signum in signal.Signals)


def _noted(_signum: int, _frame: FrameType | None) -> None:
    """Installed so the default action (terminate) does not run; the wakeup socket
    already carries the signal to the main loop."""


class SignalInbox:
    """The signals that arrived, handed to whoever calls :meth:`wait` (the main thread).

    Must be created and closed on the main thread, like every signal handler.
    """

    def __init__(self, signums: Iterable[signal.Signals]) -> None:
        self._receive, self._send = socket.socketpair()
        self._receive.setblocking(False)
        self._send.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._send.fileno(), warn_on_full_buffer=False)
        self._previous: dict[signal.Signals, Any] = {
            signum: signal.signal(signum, _noted) for signum in signums
        }

    def wait(self, timeout: float) -> list[signal.Signals]:
        """The signals received since the last call, in order; waits up to ``timeout``
        seconds for the first one."""
        readable, _, _ = select.select([self._receive], [], [], timeout)
        if not readable:
            return []
        received = bytearray()
        while True:
            try:
                chunk = self._receive.recv(4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            received += chunk
        return [signal.Signals(number) for number in received if number in _KNOWN]

    def close(self) -> None:
        """Put the previous handlers back and release the socket pair."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_fd)
        self._receive.close()
        self._send.close()
