"""One mailbox's intake loop, and the share of the mailboxes one instance drains.

A daemon runs one :class:`MailboxIntake` per mailbox, each in a thread of its own (IMAP
IDLE blocks). Each holds its mailbox's lock while it drains (see
:mod:`mailroute.store.locks`); with several instances on PostgreSQL, :class:`Share` keeps
an instance from holding more than its part of the mailboxes, so they spread evenly, and
a dead instance's mailboxes are taken within ``STANDBY_RETRY`` seconds by the others.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

from mailroute import logs
from mailroute.config import Config, MailboxConfig
from mailroute.errors import MailboxUnavailable, MailrouteError, TransientError
from mailroute.mail.mailbox import MailSource
from mailroute.pipeline.decide import Pipeline
from mailroute.pipeline.intake import drain
from mailroute.service.metrics import Metrics
from mailroute.store import Store
from mailroute.store.locks import InstanceCount, MailboxLock


class Host(Protocol):
    """What an intake loop needs of the daemon that runs it."""

    @property
    def config(self) -> Config: ...
    @property
    def store(self) -> Store: ...
    @property
    def source_factory(self) -> Callable[[MailboxConfig], MailSource]: ...
    @property
    def clock(self) -> Callable[[], datetime]: ...
    @property
    def stop(self) -> threading.Event: ...
    @property
    def share(self) -> Share: ...
    @property
    def metrics(self) -> Metrics: ...

    def failed(self, part: str, error: str, with_traceback: bool = False,
               event: str | None = None, source: str | None = None) -> None: ...
    def recovered(self, part: str) -> None: ...
    def announce_ready(self) -> None: ...
    def wake_outbox(self) -> None: ...
    def publish_status(self) -> None: ...

log = logs.get("mailroute.service.intake")
MAX_BACKOFF = 300.0
STANDBY_RETRY = 5.0  # seconds between a standby mailbox's tries at its lock
# With other instances about, a held mailbox's wait for mail is cut to this many seconds,
# so that an instance over its share (others joined) lets the surplus go soon.
REBALANCE_CHECK = 15.0
# The shortest wait before a pass that retries a letter set aside (its clock may lag ours).
MIN_RETRY_WAIT = 1.0
COUNT_EVERY = 1.0  # seconds a count of the instances alive is trusted


class Share:
    """How many mailboxes this instance may hold: all of them alone; with others alive
    (PostgreSQL), ``ceil(mailboxes / instances)``. An instance over its share lets the
    surplus go at the end of their rounds, and the others take them."""

    def __init__(self, mailboxes: int, instances: InstanceCount | None) -> None:
        self.mailboxes = mailboxes
        self.instances = instances
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._alive = (0.0, 1)  # (monotonic time counted, instances then)

    def limit(self) -> int:
        if self.instances is None or self.mailboxes == 1:
            return self.mailboxes
        counted_at, alive = self._alive
        if time.monotonic() - counted_at > COUNT_EVERY:  # asked between batches: cached
            alive = max(1, self.instances.alive())
            self._alive = (time.monotonic(), alive)
        return max(1, math.ceil(self.mailboxes / alive))

    def over(self, label: str) -> bool:
        """Whether this instance holds ``label`` beyond its share (others joined)."""
        if not self.shared:
            return False
        with self._lock:
            held = len(self._held) if label in self._held else 0
        return held > self.limit()

    def may_take(self, label: str) -> bool:
        with self._lock:
            return label in self._held or len(self._held) < self.limit()

    def took(self, label: str) -> None:
        with self._lock:
            self._held.add(label)

    def should_let_go(self, label: str) -> bool:
        """True (once per surplus mailbox) when this instance holds more than its share."""
        with self._lock:
            if label in self._held and len(self._held) > self.limit():
                self._held.discard(label)
                return True
            return False

    def let_go(self, label: str) -> None:
        with self._lock:
            self._held.discard(label)

    @property
    def shared(self) -> bool:
        """Whether other instances may share these mailboxes (PostgreSQL, several of them)."""
        return self.instances is not None and self.mailboxes > 1

    def labels(self) -> set[str]:
        with self._lock:
            return set(self._held)

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)


class _Halt(threading.Event):
    """What one mailbox's drain stops on: the daemon stopping, or this instance holding
    the mailbox beyond its share (checked between batches: the letters in hand stay
    pending, and whoever takes the mailbox decides them)."""

    def __init__(self, intake: MailboxIntake) -> None:
        super().__init__()
        self._intake = intake

    def is_set(self) -> bool:
        intake = self._intake
        return intake.daemon.stop.is_set() or intake.daemon.share.over(intake.label)

    def wait(self, timeout: float | None = None) -> bool:
        return self._intake.daemon.stop.wait(timeout) or self.is_set()


@dataclass
class MailboxIntake:
    """The intake loop of one mailbox: its source, lock, backoff and standby state."""

    daemon: Host
    mailbox: MailboxConfig
    pipeline: Pipeline
    source: MailSource | None = None
    standby: bool = False
    heartbeat: float = field(default_factory=time.monotonic)
    backoff: float = 1.0  # seconds before the next attempt after a failure
    worked: bool = False  # "connection lost" only after it once worked

    @property
    def label(self) -> str:
        return self.mailbox.label

    @property
    def part(self) -> str:
        """The name failures are logged and kept under (``intake``, or one per mailbox)."""
        return f"intake:{self.label}" if self.daemon.config.several_mailboxes else "intake"

    @property
    def name(self) -> str:
        """The source's name, which letters are stored and the lock is keyed under."""
        return (self.source or self.daemon.source_factory(self.mailbox)).name

    def loop(self) -> None:
        if self.daemon.config.several_mailboxes:
            logs.bind(mailbox=self.label)
        lock = MailboxLock(self.daemon.store, self.name)
        try:
            while not self.daemon.stop.is_set():
                self.round(lock)
        finally:
            lock.release()
            self.daemon.share.let_go(self.label)

    def take(self, lock: MailboxLock) -> bool:
        """Hold the mailbox lock, or stand by (said once) while another instance does, or
        while this one already drains its share of the mailboxes."""
        share = self.daemon.share
        if share.may_take(self.label) and lock.acquire():
            if self.label not in share.labels():
                log.info("taking over the mailbox" if self.standby else "draining the mailbox",
                         mailbox=self.label, lock=lock.mailbox)
            share.took(self.label)
            self.standby = False
            return True
        if not self.standby:
            reason = ("another instance is draining this mailbox" if share.may_take(self.label)
                      else f"this instance drains its share ({share.held} mailboxes)")
            log.info("standby", mailbox=self.label, reason=reason)
            self.standby = True
        self.heartbeat = time.monotonic()
        self.daemon.announce_ready()
        self.daemon.stop.wait(min(self.mailbox.poll_interval, STANDBY_RETRY))
        return False

    def round(self, lock: MailboxLock) -> None:
        """One pass of the loop; after a failure, waits out the backoff."""
        try:
            if self.take(lock):
                self.drain_and_wait()
                if self.daemon.share.should_let_go(self.label):
                    log.info("mailbox left to another instance", mailbox=self.label,
                             reason="this instance holds more than its share")
                    self.drop_source()
                    lock.release()
                    self.standby = True
            return
        except TransientError as exc:
            never = isinstance(exc, MailboxUnavailable) and not self.worked
            self.daemon.failed(self.part, str(exc), event="cannot connect" if never else None,
                               source=self.name)
        except MailrouteError as exc:
            log.error("intake stopped", error=str(exc))
            self.daemon.stop.set()
            return
        except SQLAlchemyError as exc:  # the database, in a way nobody mapped
            self.daemon.failed(self.part, f"{type(exc).__name__}: {_one_line(exc)}",
                               source=self.name)
        except Exception as exc:  # a bug must not end intake for good: log once, back off
            self.daemon.failed(self.part, f"{type(exc).__name__}: {exc}", with_traceback=True,
                               source=self.name)
        self.drop_source()
        self.daemon.stop.wait(self.backoff)
        self.backoff = min(self.backoff * 2, MAX_BACKOFF)

    def working(self) -> None:
        """Letters moved again: the outage is over, and the next one backs off from 1 s.

        Called after every filed batch, not only after a whole pass: a backlog can
        take minutes, and a second outage within it is a new one.
        """
        self.backoff = 1.0
        self.worked = True
        self.daemon.recovered(self.part)

    def drain_and_wait(self) -> None:
        """Empty the folder, then wait (IDLE or poll) for more."""
        daemon = self.daemon
        if self.source is None:
            self.source = daemon.source_factory(self.mailbox)
        self.heartbeat = started = time.monotonic()
        report = drain(
            self.source, daemon.store, self.pipeline, self.mailbox, daemon.clock, _Halt(self),
            progress=self.working, connected=daemon.announce_ready,
        )
        daemon.metrics.observe_drain(report, time.monotonic() - started, self.label)
        self.working()
        daemon.announce_ready()
        if any(outcome.reply for outcome in report.outcomes):
            daemon.wake_outbox()
        daemon.publish_status()
        self.heartbeat = time.monotonic()
        if daemon.share.over(self.label):
            return  # let go at once (the round does), not after a wait for mail
        wait = self.mailbox.idle_timeout
        if daemon.share.shared:
            wait = min(wait, REBALANCE_CHECK)
        if report.next_attempt_at is not None:  # a letter set aside is due again by then
            due_in = (report.next_attempt_at - daemon.clock()).total_seconds()
            wait = min(wait, max(due_in, MIN_RETRY_WAIT))
        self.source.wait(wait, daemon.stop)

    def fresh(self) -> bool:
        """The loop came round recently (a hung IMAP call would stop it)."""
        limit = self.mailbox.idle_timeout + 3 * self.mailbox.timeout + 60
        return time.monotonic() - self.heartbeat < limit

    def drop_source(self) -> None:
        source, self.source = self.source, None
        if source is not None:
            source.close()


def _one_line(exc: BaseException) -> str:
    return str(exc).replace("\n", " ")
