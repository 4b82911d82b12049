"""SignalInbox: signals reach the main loop as data, and the old handlers come back."""

from __future__ import annotations

import os
import signal
import threading

from mailroute.service.signals import SignalInbox


def test_signals_arrive_in_order_and_nothing_runs_in_the_handler() -> None:
    before = signal.getsignal(signal.SIGHUP)
    inbox = SignalInbox((signal.SIGHUP, signal.SIGUSR1))
    try:
        assert inbox.wait(0.01) == []
        for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGHUP):
            os.kill(os.getpid(), signum)  # the default action would end this process
        assert inbox.wait(5) == [signal.SIGHUP, signal.SIGUSR1, signal.SIGHUP]
        assert inbox.wait(0.01) == []
    finally:
        inbox.close()
    assert signal.getsignal(signal.SIGHUP) is before


def test_a_signal_sent_from_another_thread_wakes_the_waiting_one() -> None:
    inbox = SignalInbox((signal.SIGUSR2,))
    try:
        threading.Timer(0.2, os.kill, args=(os.getpid(), signal.SIGUSR2)).start()
        assert inbox.wait(10) == [signal.SIGUSR2]
    finally:
        inbox.close()
