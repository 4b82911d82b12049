"""The outbox of ``run --once`` while it drains a backlog: in a process of its own.

Intake keeps the daemon's process busy (fetching, saving, deciding); the replies its
batches queue were sent by a thread of that same process, which took turns with intake
for the interpreter lock (on PostgreSQL intake took 9.4 s alone and 12.3 s beside that
thread, for 2,000 letters). On PostgreSQL a child process, forked from the workers'
forkserver, runs outbox passes beside intake on the other core: one after each filed batch
(``wake``), or every ``idle`` seconds, in one event loop whose SMTP sessions stay open
from one pass to the next (``KeptSessions``). What the outbox promises is unchanged: it is the
same ``deliver_due``, with its claims, leases and marks, in another process, as a second
instance would run it. (Not on SQLite, where its marks would wait for intake's write
lock: ``Daemon._sender`` says why.)

When the drain ends the child makes one last pass, on its open sessions (if it has any),
for the replies of the batches filed since its last pass began (the last batch's, at
least), and leaves; the daemon's own pass after the drain then finds nothing left but
what an error held back. That pass used to send the last batch's replies itself, after
waiting for the child to finish its pass and exit, over SMTP sessions it had still to
open (a 2,000-letter backlog: the drain's end to the last reply sent 0.26 s before,
0.18 s since).

The child reads the wall clock; a daemon given another clock (tests, replays) sends from
a thread instead (``daemon._Sender``). The first error ends the child: a TransientError
is logged and left to the final pass after the drain; anything else is raised in the
daemon once the drain is over, as text (the exception itself need not survive pickling).
A drain that ended in an error gets no last pass from the child (the daemon makes none
either). The child watches its parent and stops after its current pass when the parent
is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mailroute import logs, startup
from mailroute.config import Config
from mailroute.errors import TransientError
from mailroute.mail.outbox import SESSIONS, DeliveryReport, KeptSessions, deliver_due_async
from mailroute.pipeline.processes import process_context
from mailroute.store import Store
from mailroute.store.alerts import AlertMail

log = logs.get("mailroute.service.sender")


class SenderFailed(RuntimeError):
    """The sender process stopped on an error that is not an outage."""


@dataclass
class SentSummary:
    """What the child's passes did, in plain values that cross a pipe.

    Suppressions and alerts are settled by the child's own passes; the parent only
    counts (summary line, metrics).
    """

    paused: str | None = None  # the outage that ended the child early, if one did
    sent: list[int] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    desk_rejections: list[tuple[int, str]] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)
    smtp_errors: list[str] = field(default_factory=list)

    def add(self, report: DeliveryReport) -> None:
        self.sent += report.sent
        self.retried += report.retried
        self.failed += report.failed
        self.skipped += report.skipped
        self.desk_rejections += report.desk_rejections
        self.suppressed += report.suppressed
        self.smtp_errors += report.smtp_errors

    def report(self) -> DeliveryReport:
        return DeliveryReport(sent=self.sent, retried=self.retried, failed=self.failed,
                              skipped=self.skipped, desk_rejections=self.desk_rejections,
                              suppressed=self.suppressed, smtp_errors=self.smtp_errors)


class SenderProcess:
    """Outbox passes in a child process while the caller drains (a context manager).

    ``wake`` asks for a pass now; leaving the block asks for a last pass (none if the
    block ended in an exception), then collects what the child sent (``delivery``). A
    TransientError in the child is logged there and ends it quietly; any other error is
    raised here on leaving.
    """

    def __init__(self, config: Config, alert_mail: AlertMail, idle: float,
                 mailbox: str | None = None) -> None:
        ctx = process_context()
        self._wakeup = ctx.Event()
        self._done = ctx.Event()
        self._finish = ctx.Event()  # set with done: the drain is over, make a last pass
        self._results, child_end = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_serve, name="mailroute-outbox", daemon=True,
            args=(config, alert_mail, idle, mailbox, self._wakeup, self._done, self._finish,
                  child_end))
        self._child_end = child_end
        self.delivery = DeliveryReport()
        self.paused: str | None = None  # the database or other outage that stopped it
        self.pid: int | None = None
        self.exitcode: int | None = None

    def __enter__(self) -> SenderProcess:
        self._process.start()
        self._child_end.close()  # the child holds the only writing end: EOF when it dies
        self.pid = self._process.pid
        return self

    def wake(self) -> None:
        self._wakeup.set()

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            self._finish.set()
        self._done.set()
        self._wakeup.set()
        try:
            summary, error = self._results.recv()
        except (EOFError, OSError):  # killed, or died before it could say
            self._process.join()
            summary = SentSummary()
            error = f"the outbox process ended without a word (exit code {self._process.exitcode})"
        self._process.join()
        self.exitcode = self._process.exitcode
        self._results.close()
        self.delivery = summary.report()
        self.paused = summary.paused
        if error is not None and exc_info[0] is None:
            raise SenderFailed(error)


def _serve(
    config: Config,
    alert_mail: AlertMail,
    idle: float,
    mailbox: str | None,
    wakeup: Any,
    done: Any,
    finish: Any,
    results: multiprocessing.connection.Connection,
) -> None:
    """The child: a pass on each wake (or every ``idle`` s) until told to stop."""
    logs.configure(config.logging.level, config.logging.format)
    if mailbox is not None:
        logs.bind(mailbox=mailbox)
    threading.Thread(target=_stop_with_parent, args=(done, wakeup), name="parent-watch",
                     daemon=True).start()
    summary = SentSummary()
    store = Store(config.database.url, "mailroute outbox")
    store.use_webhooks(config.webhooks)
    kept = KeptSessions(config.smtp)
    startup.freeze_inherited()
    error: str | None = None
    try:
        error = asyncio.run(_passes(store, config, alert_mail, idle, wakeup, done, finish,
                                    summary, kept))
    except Exception as exc:  # around the passes (their loop, the wait): said like one in them
        error = f"{type(exc).__name__}: {exc}"
        log.error("outbox stopped", error=error)
    finally:
        store.dispose()
        log.info("outbox process finished", sent=len(summary.sent),
                 retrying=len(summary.retried), failed=len(summary.failed),
                 connections=kept.opened)
        results.send((summary, error))
        results.close()


async def _passes(
    store: Store, config: Config, alert_mail: AlertMail, idle: float, wakeup: Any,
    done: Any, finish: Any, summary: SentSummary, kept: KeptSessions,
) -> str | None:
    """The passes, in one event loop, so that their SMTP sessions stay open between
    them (``KeptSessions``); the error to raise in the parent, if one ended them.

    Once ``done`` is seen, one more pass if ``finish`` is set too: begun after the
    drain's end, it sees every reply the drain queued (a pass that was under way
    then may have claimed before the last batch was filed). Only a child that has
    reached the SMTP server makes it: its gain is the sessions it holds, and a child
    that never sent would open new ones, with credentials of its own (an OAuth2 token
    command runs once a process), where the daemon's process already holds them."""
    try:
        while True:
            last = done.is_set()
            if not last:
                await asyncio.to_thread(wakeup.wait, idle)
                wakeup.clear()
                last = done.is_set()
            if last and not (finish.is_set() and kept.opened):
                break  # the drain failed, the parent is gone, or nothing to gain
            try:
                summary.add(await deliver_due_async(
                    store, config.smtp, config.replies, datetime.now(UTC), SESSIONS,
                    alert_mail, kept))
            except TransientError as exc:
                log.warning("outbox paused until the drain ends", error=str(exc))
                summary.paused = str(exc)
                break
            except Exception as exc:  # said to the parent, raised there after the drain
                error = f"{type(exc).__name__}: {exc}"
                log.error("outbox stopped", error=error)
                return error
            if last:
                break
        return None
    finally:
        with contextlib.suppress(Exception):  # QUIT is a courtesy; the drain goes on
            await kept.close()


def _stop_with_parent(done: Any, wakeup: Any) -> None:
    """A parent killed mid-drain leaves no one to stop this child: stop it after its pass."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    multiprocessing.connection.wait([parent.sentinel])
    done.set()
    wakeup.set()
