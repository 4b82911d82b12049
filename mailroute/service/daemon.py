"""Wiring: the intake loop, the outbox job, signals. No business logic lives here.

Threads: the intake loop runs in its own thread (IMAP IDLE blocks); the outbox
and housekeeping jobs run on an APScheduler ``BackgroundScheduler`` with its
in-memory job store (durable state is in mailroute's own tables, so several
instances never share a job store and never run a job twice). The main thread
reads signals (``signals.SignalInbox``; no work runs inside a handler) and pings
the watchdog: SIGTERM/SIGINT stop after the letter in hand, SIGHUP reloads the
configuration.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from mailroute import __version__, logs
from mailroute import config as config_module
from mailroute.config import Config, MailboxConfig
from mailroute.errors import ConfigError, TransientError
from mailroute.mail.mailbox import MailSource
from mailroute.mail.outbox import SESSIONS, DeliveryReport, check_reachable, deliver_due
from mailroute.mail.sources import open_source
from mailroute.mail.webhooks import WebhookReport
from mailroute.mail.webhooks import deliver_due as deliver_webhooks
from mailroute.pipeline.decide import Pipeline, age_text
from mailroute.pipeline.escalations import escalate_breaches
from mailroute.pipeline.intake import DrainReport, drain
from mailroute.pipeline.retention import run_retention
from mailroute.service.config_check import calendar_warning, judge
from mailroute.service.intake_loop import MailboxIntake, Share
from mailroute.service.metrics import Metrics
from mailroute.service.sender import SenderProcess
from mailroute.service.signals import SignalInbox
from mailroute.service.systemd import Notifier
from mailroute.store import Store
from mailroute.store import repository as repo
from mailroute.store.alerts import AlertMail
from mailroute.store.db import sqlite_file
from mailroute.store.locks import InstanceCount, MailboxLock

if TYPE_CHECKING:  # imported where the scheduler starts: `run --once` never needs them
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger

log = logs.get("mailroute.service.daemon")
Clock = Callable[[], datetime]
STOP_GRACE = 8.0
SENDER_IDLE = 0.5  # seconds between outbox passes during `run --once` when no batch was filed
WEBHOOK_INTERVAL = 5.0  # seconds between passes of the webhooks job (an indexed query when idle)


def utc_now() -> datetime:
    return datetime.now(UTC)


def send_period_report(store: Store, config: Config, pipeline: Pipeline, now: datetime) -> int:
    """Build the last complete period's report and queue it; returns the rows queued.

    Reports are imported here, by the job: their figures module is 60 ms of every start
    of a daemon whose first report may be days away."""
    from mailroute.pipeline.reports import (
        build_report,
        previous_period,
        queue_report_mail,
        sla_targets,
    )

    calendar = pipeline.calendar
    schedule = config.reports.schedule
    if schedule == "never":
        return 0
    start, end = previous_period(now, schedule, calendar)
    report = build_report(store, calendar, start, end, now, targets=sla_targets(config.sla))
    return queue_report_mail(store, report, pipeline.identity, config.reports.recipients, now)


@dataclass
class RunReport:
    """What ``run --once`` did."""

    drain: DrainReport
    delivery: DeliveryReport
    webhooks: WebhookReport = field(default_factory=WebhookReport)


class _Sender:
    """Runs the outbox in a thread of its own while ``run --once`` drains the folder.

    ``wake`` (called after each filed batch) starts another outbox pass; without
    one, a pass runs every ``SENDER_IDLE`` seconds. The first error ends the thread:
    a TransientError is logged and left to the final pass after the drain, which
    meets it again or finds the database back; anything else is raised once the
    drain is over. ``delivery`` holds what the thread's passes sent. Not ``enabled``,
    it does nothing.
    """

    def __init__(self, send: Callable[[], DeliveryReport], enabled: bool = True) -> None:
        self._send = send
        self._enabled = enabled
        self._wakeup = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)
        self.delivery = DeliveryReport()
        self.error: BaseException | None = None

    def __enter__(self) -> _Sender:
        if self._enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._wakeup.set()
        if self._enabled:
            self._thread.join()
        if exc_info[0] is None and self.error is not None and not isinstance(
            self.error, TransientError
        ):
            raise self.error

    def wake(self) -> None:
        self._wakeup.set()

    def _run(self) -> None:
        while not self._done.is_set():
            self._wakeup.wait(SENDER_IDLE)
            self._wakeup.clear()
            if self._done.is_set():
                return  # the final pass after the drain sends the rest
            try:
                self.delivery.add(self._send())
            except TransientError as exc:
                self.error = exc
                log.warning("outbox paused until the drain ends", error=str(exc))
                return
            except BaseException as exc:  # raised in the caller's thread once the drain ends
                self.error = exc
                log.error("outbox stopped", error=f"{type(exc).__name__}: {exc}")
                return


@dataclass
class Daemon:
    """One mailroute instance: a mailbox, a database, an SMTP server."""

    config: Config
    store: Store
    source_factory: Callable[[Any], MailSource] = open_source
    clock: Clock = utc_now
    config_path: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.store.use_webhooks(self.config.webhooks)
        self._console_store: Store | None = None
        self.pipeline = Pipeline.from_config(self.config, self.store)
        self._scheduler: BackgroundScheduler | None = None
        self._failing: dict[str, str] = {}
        self._notifier = Notifier()
        self.metrics = Metrics(self.store)
        self._ready = threading.Event()
        mailboxes = self.config.all_mailboxes()
        self.share = Share(len(mailboxes),
                           None if self.store.is_sqlite else InstanceCount(self.store))
        self.intakes = [MailboxIntake(self, box, self._pipeline_for(box)) for box in mailboxes]

    def _pipeline_for(self, mailbox: MailboxConfig, config: Config | None = None,
                      first: Pipeline | None = None) -> Pipeline:
        """The first mailbox's pipeline is the daemon's own (reports, escalations use it)."""
        config = config or self.config
        if mailbox is config.all_mailboxes()[0]:
            return first or self.pipeline
        return Pipeline.from_config(config, self.store, mailbox)

    # ---------------------------------------------------------------- one pass

    def calendar_warning(self) -> str | None:
        """A warning when next year's production calendar is not known yet (logged at start)."""
        return calendar_warning(self.pipeline.calendar, self.clock())

    def run_once(
        self, *, send: bool = True, counted: Callable[[int, int], None] | None = None
    ) -> RunReport:
        """Drain the folder, send the replies that are due (unless ``send`` is false: an
        import that must send nothing), return what happened.

        Replies go out while the drain is still going (an outbox process runs a pass
        after every filed batch, and a last one once the drain is over: see
        ``service/sender``); then one more outbox pass sends what they could not. If
        another instance holds the mailbox, only the replies are sent.
        """
        self._warn_calendar()
        report = DrainReport()
        delivery = DeliveryReport()
        sessions = 1  # standby: the holder's intake runs meanwhile
        for intake in self.intakes:
            drained, sent = self._drain_once(intake, send, counted)
            if drained is not None:
                sessions = SESSIONS
                report.add(drained)
                delivery.add(sent)
        if send:
            delivery.add(self.send_due(sessions=sessions))
            return RunReport(report, delivery, self.send_webhooks())
        return RunReport(report, delivery)

    def _drain_once(
        self, intake: MailboxIntake, send: bool, counted: Callable[[int, int], None] | None
    ) -> tuple[DrainReport | None, DeliveryReport]:
        """Drain one mailbox, if no other instance holds it (None: it does)."""
        source = self.source_factory(intake.mailbox)
        lock = MailboxLock(self.store, source.name)
        several = self.config.several_mailboxes
        try:
            if not lock.acquire():
                log.warning("standby", reason="another instance is draining this mailbox",
                            **({"mailbox": intake.label} if several else {}))
                return None, DeliveryReport()
            with self._sender(send, intake.label if several else None) as sender:
                if several:
                    logs.bind(mailbox=intake.label)
                try:
                    report = drain(source, self.store, intake.pipeline, intake.mailbox,
                                   self.clock, progress=sender.wake, counted=counted)
                finally:
                    if several:
                        logs.unbind("mailbox")
            if isinstance(sender, SenderProcess):  # the thread's passes observed their own
                self._observe_delivery(sender.delivery)
            return report, sender.delivery
        finally:
            lock.release()
            source.close()

    def _sender(self, send: bool, mailbox: str | None) -> _Sender | SenderProcess:
        """What sends replies while a mailbox drains: a process of its own (another
        core: see ``service/sender``), or, on PostgreSQL, a thread for a daemon on
        another clock than the wall's (tests, replays); on SQLite in memory, or on
        another clock, nothing: the replies wait for the drain's end.

        On SQLite a reply's mark must wait for intake's write lock: from the outbox
        process the marks came up to ~0.5 s after the SMTP server took their replies
        (p99 ~0.1 s), against ~1 ms after the drain. Each accepted reply is written
        down first (``mail/accepted``), so that wait is no longer a window in which a
        crash sends it twice; and a backlog drains ~6 % faster. From a thread (one
        turn each within the process) ~15 % of the replies went out during the drain
        and the run was no faster.
        """
        if not send:
            return _Sender(lambda: self.send_due(sessions=SESSIONS), enabled=False)
        sqlite = self.store.is_sqlite
        if self.clock is utc_now and not (sqlite and sqlite_file(self.store.url) is None):
            alert_mail = AlertMail(self.pipeline.identity,
                                   self.config.workflow.escalation_address)
            return SenderProcess(self.config, alert_mail, SENDER_IDLE, mailbox)
        return _Sender(lambda: self.send_due(sessions=SESSIONS), enabled=not sqlite)

    def _warn_calendar(self) -> None:
        warning = self.calendar_warning()
        if warning:
            log.warning("calendar incomplete", detail=warning)

    def send_due(self, sessions: int = 1) -> DeliveryReport:
        """One outbox pass over up to ``sessions`` SMTP connections (see outbox.SESSIONS).

        ``run --once`` uses several; the daemon's outbox job one, as intake runs beside
        it and on SQLite every mark may wait for an intake transaction.
        """
        alert_mail = AlertMail(self.pipeline.identity, self.config.workflow.escalation_address)
        report = deliver_due(self.store, self.config.smtp, self.config.replies, self.clock(),
                             sessions, alert_mail)
        self._observe_delivery(report)
        return report

    def _observe_delivery(self, report: DeliveryReport) -> None:
        self.metrics.observe_delivery(report)
        if report.sent:  # SMTP works: an error from start-up or an outage is over
            self._smtp_works()

    def send_webhooks(self) -> WebhookReport:
        """One pass over the webhook deliveries that are due (none without [[webhooks]]:
        rows queued before they were removed wait for them to come back)."""
        if not self.config.webhooks:
            return WebhookReport()
        report = deliver_webhooks(self.store, self.config.webhooks, self.clock())
        self.metrics.observe_webhooks(report)
        return report

    def _smtp_works(self) -> None:
        """A reply was accepted: forget the recorded SMTP error, so `status` clears."""
        self._recovered("smtp")
        try:
            with self.store.transaction() as session:
                repo.clear_errors(session, "smtp: ")
        except (TransientError, SQLAlchemyError):
            pass  # the next accepted reply tries again

    # ----------------------------------------------------------------- forever

    def run_forever(self) -> None:
        """Serve until SIGTERM/SIGINT; returns after a clean stop."""
        inbox = SignalInbox((signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
        self._warn_calendar()
        self._record_start()
        if self.config.metrics.listen:
            self.metrics.serve(self.config.metrics.listen)
            log.info("metrics served", listen=self.config.metrics.listen)
        console = self._start_console()
        self._scheduler = self._start_scheduler()
        threads = [
            threading.Thread(target=intake.loop, daemon=True,
                             name=f"intake:{intake.label}" if len(self.intakes) > 1 else "intake")
            for intake in self.intakes
        ]
        for thread in threads:
            thread.start()
        self._log_start()
        try:
            self._serve(threads, inbox)
        finally:
            log.info("daemon stopping")
            self._notifier.stopping()
            deadline = time.monotonic() + STOP_GRACE
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            self._scheduler.shutdown(wait=True)
            for intake in self.intakes:
                intake.drop_source()
            if self.share.instances is not None:
                self.share.instances.leave()
            self._notifier.close()
            self.metrics.close()
            if console is not None:
                console.stop()
            inbox.close()
            log.info("daemon stopped")

    def _start_console(self) -> Any:
        """The operators' console under ``[web] listen``: its own thread, its own engine
        and database sessions, so pages never wait on intake nor intake on pages."""
        if not self.config.web.listen:
            return None
        from mailroute.web.serve import ConsoleThread, server_for

        store = Store(self.config.database.url, "mailroute console")
        store.use_webhooks(self.config.webhooks)  # a status changed in the console is an event
        self._console_store = store
        return ConsoleThread(server_for(store, self.config, self.config.web.listen,
                                        self.clock)).start()

    def _record_start(self) -> None:
        """For `status`'s uptime; a database down at start only loses that figure."""
        try:
            with self.store.transaction() as session:
                for intake in self.intakes:
                    repo.record_start(session, intake.name, self.clock())
        except (TransientError, SQLAlchemyError) as exc:
            log.warning("start time not recorded", error=_one_line(exc))

    def _log_start(self) -> None:
        """One line that says what this instance serves: the version, where mail comes
        from and goes to, the database (password masked) and when it replies."""
        smtp, replies = self.config.smtp, self.config.replies
        sources = [(f"maildir {box.maildir}" if box.maildir else
                    f"imap {box.host}:{box.effective_port()}/{box.folder}")
                   for box in self.config.all_mailboxes()]
        named = ([f"{box.label}={source}" for box, source in
                  zip(self.config.all_mailboxes(), sources, strict=True)]
                 if self.config.several_mailboxes else sources)
        log.info("daemon started", version=__version__, mailbox=", ".join(named),
                 smtp=f"{smtp.host}:{smtp.effective_port()}", db=self._db_label(),
                 reply_window=replies.window, max_age=age_text(self.pipeline.max_age),
                 replies="on" if self.pipeline.replies_enabled else "off")

    def _serve(self, threads: list[threading.Thread], inbox: SignalInbox) -> None:
        """Act on signals until a stop; meanwhile tell systemd we are alive while every
        mailbox's intake is (alive, and come round recently: a hung IMAP call stops it)."""
        interval = min(self._notifier.ping_interval or 1.0, 1.0)
        while True:
            self._on_signals(inbox.wait(interval))
            if self.stop.is_set():
                return
            if (self._ready.is_set() and all(thread.is_alive() for thread in threads)
                    and all(intake.fresh() for intake in self.intakes)):
                self._notifier.watchdog()

    def announce_ready(self) -> None:
        """READY=1 once the mailbox, the database and SMTP have all answered.

        Called before the first drain fetches anything (and again after it, in case
        SMTP was away then): a first backlog of thousands of letters takes longer
        than systemd's start timeout, and must not get the start killed.
        """
        if self._ready.is_set():
            return
        try:
            check_reachable(self.config.smtp)
        except TransientError as exc:
            self._failed("smtp", str(exc))
            return
        self._recovered("smtp")
        self._ready.set()
        self._notifier.ready("mailbox, database and SMTP reached")
        log.info("daemon ready")

    def _start_scheduler(self) -> BackgroundScheduler:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.jobstores.memory import MemoryJobStore
        from apscheduler.schedulers.background import BackgroundScheduler

        # APScheduler warns on every run it skips or misses (a job slowed by an
        # outage, a loaded machine); the jobs log their own failures, once each.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        scheduler = BackgroundScheduler(
            jobstores={"default": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(3)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
            timezone=UTC,
        )
        scheduler.add_job(
            self._outbox_job,
            "interval",
            seconds=self.config.replies.send_interval,
            id="outbox",
            next_run_time=self.clock(),
        )
        scheduler.add_job(
            self._webhooks_job,
            "interval",
            seconds=WEBHOOK_INTERVAL,
            id="webhooks",
            next_run_time=self.clock(),
        )
        scheduler.add_job(
            self._escalation_job,
            "interval",
            seconds=self.config.workflow.escalation_interval,
            id="escalation",
        )
        retention = self.config.retention
        if retention.raw_days or retention.anonymize_days:
            scheduler.add_job(self._retention_job, "interval", seconds=retention.interval,
                              id="retention", next_run_time=self.clock())
        schedule = self.config.reports
        if schedule.recipients and schedule.schedule != "never":
            scheduler.add_job(self._report_job, self._report_trigger(), id="report")
        scheduler.start()
        return scheduler

    def _report_trigger(self) -> CronTrigger:
        from apscheduler.triggers.cron import CronTrigger

        reports, zone = self.config.reports, self.pipeline.calendar.zone
        day: dict[str, dict[str, Any]] = {
            "daily": {},
            "weekly": {"day_of_week": "mon"},
            "monthly": {"day": 1},
        }
        return CronTrigger(
            hour=reports.send_at.hour,
            minute=reports.send_at.minute,
            timezone=zone,
            **day[reports.schedule],
        )

    def _report_job(self) -> None:
        self._guarded("report", self._queue_report)

    def _queue_report(self) -> None:
        """Queue the previous period's report for the recipients (once per period)."""
        queued = send_period_report(self.store, self.config, self.pipeline, self.clock())
        if queued:
            log.info("report queued", recipients=queued)
            self.wake_outbox()

    def _retention_job(self) -> None:
        self._guarded("retention", self._retain)

    def _retain(self) -> None:
        purged = run_retention(self.store, self.config.retention, self.clock())
        self.metrics.observe_retention(purged.as_dict())

    def _webhooks_job(self) -> None:
        """One pass over the due webhook deliveries, apart from intake and the outbox:
        a slow receiver holds up nothing else."""
        self._guarded("webhooks", self._post_webhooks)

    def _post_webhooks(self) -> None:
        self.send_webhooks()

    def _escalation_job(self) -> None:
        self._guarded("escalation", self._escalate)

    def _escalate(self) -> None:
        breaches = escalate_breaches(
            self.store, self.config.workflow, self.pipeline.identity, self.clock()
        )
        self.metrics.observe_breaches(breaches)
        if breaches:
            self.wake_outbox()

    def _guarded(self, part: str, work: Callable[[], None]) -> bool:
        """One run of a scheduled job; True when it worked.

        The job stays scheduled whatever happens. A failure is logged when it starts
        (with its traceback if it is neither a known outage nor a database error),
        not on every run, and "recovered" once when a run works again: during an
        outage a job running every few seconds must not fill the log.
        """
        try:
            work()
        except TransientError as exc:
            self._failed(part, str(exc))
            return False
        except SQLAlchemyError as exc:  # the database, in a way nobody mapped: no bug here
            self._failed(part, f"{type(exc).__name__}: {_one_line(exc)}")
            return False
        except Exception as exc:  # a bug: its traceback, once
            self._failed(part, f"{type(exc).__name__}: {exc}", with_traceback=True)
            return False
        self._recovered(part)
        return True

    def _outbox_job(self) -> None:
        """One outbox pass; a failure is logged when it starts (a traceback only for
        what is not a known outage), not on every run, and its end once."""
        try:
            self.send_due()
        except (TransientError, SQLAlchemyError) as exc:
            self._failed("outbox", f"{type(exc).__name__}: {exc}".replace("\n", " "))
        except Exception as exc:  # keep the job scheduled
            self._failed("outbox", f"{type(exc).__name__}: {exc}", with_traceback=True)
        else:
            self._recovered("outbox")

    def wake_outbox(self) -> None:
        if self._scheduler is not None:
            self._scheduler.modify_job("outbox", next_run_time=datetime.now(UTC))

    def _intake_loop(self) -> None:
        """The first (or only) mailbox's intake loop, in the calling thread."""
        self.intakes[0].loop()

    def _intake_round(self, lock: MailboxLock) -> None:
        self.intakes[0].round(lock)

    def publish_status(self) -> None:
        with self.store.transaction() as session:
            outbox = repo.outbox_counts(session)
        polled = self.clock().strftime("%H:%M:%S")
        self._notifier.status(
            f"last poll {polled} UTC; outbox pending {outbox.get('pending', 0)}, "
            f"failed {outbox.get('failed', 0)}"
        )

    # ------------------------------------------------------ errors, logged once

    def failed(
        self, part: str, error: str, with_traceback: bool = False, event: str | None = None,
        source: str | None = None,
    ) -> None:
        """Log a failure when it starts, not on every retry; keep it for `mailroute status`.

        The text changes while the outage lasts (a dropped connection, then refused
        ones): each new text is recorded for `status`, the log says it once
        (``with_traceback``: with the exception being handled, for an unexpected one).
        """
        self.metrics.observe_error(part)
        previous = self._failing.get(part)
        if previous is None:
            (log.exception if with_traceback else log.error)(
                event or self._failure_event(part), part=part, error=error
            )
        if previous != error:
            self._remember_error(part, error, source or self.intakes[0].name)
        self._failing[part] = error

    _failed = failed

    @staticmethod
    def _failure_event(part: str) -> str:
        return "connection lost" if part.startswith("intake") else f"{part} failing"

    def _remember_error(self, part: str, error: str, name: str) -> None:
        try:
            with self.store.transaction() as session:
                repo.record_poll(session, name, None, self.clock(), error=f"{part}: {error}")
        except (TransientError, SQLAlchemyError):
            pass  # the database may be what is failing; the log line is there

    def recovered(self, part: str) -> None:
        if self._failing.pop(part, None) is not None:
            log.info("connection restored" if part.startswith("intake") else f"{part} recovered",
                     part=part)

    _recovered = recovered

    # ----------------------------------------------------------------- signals

    def _on_signals(self, received: list[signal.Signals]) -> None:
        """SIGTERM/SIGINT stop; a burst of SIGHUPs is one reload (all of it is read)."""
        for signum in dict.fromkeys(received):
            log.info("signal received", signal=signum.name)
        if signal.SIGTERM in received or signal.SIGINT in received:
            self.stop.set()
        elif signal.SIGHUP in received:
            self.reload()

    def reload(self) -> bool:
        """Re-read the config; keep the old one, and keep running, if that fails in any way.

        A reload runs on the main thread: whatever escaped from here (the database
        away while the registry is re-read, an unreadable templates directory, a bug)
        ended the daemon. Every failure is one log line and the old config stays.
        """
        self._notifier.reloading("reloading configuration")
        try:
            fresh = config_module.load(self.config_path)
            judge(fresh, self.clock())
            pipeline = Pipeline.from_config(fresh, self.store)
            boxes = {box.label: box for box in fresh.all_mailboxes()}
            if set(boxes) != {intake.label for intake in self.intakes}:
                raise ConfigError("the mailboxes changed: restart mailroute to read another "
                                  "set of mailboxes (a reload changes their settings only)")
            pipelines = [self._pipeline_for(boxes[intake.label], fresh, pipeline)
                         for intake in self.intakes]
        except (ConfigError, ValueError) as exc:
            log.error("config reload rejected", error=_one_line(exc))
            return False
        except TransientError as exc:
            log.error("config reload failed", error=_one_line(exc),
                      detail="the old config is kept; send SIGHUP again once this is resolved")
            return False
        except Exception as exc:  # a reload must never stop the daemon
            log.error("config reload failed", error=f"{type(exc).__name__}: {_one_line(exc)}",
                      detail="the old config is kept")
            return False
        else:
            self.config, self.pipeline = fresh, pipeline
            for intake, mine in zip(self.intakes, pipelines, strict=True):
                intake.mailbox, intake.pipeline = boxes[intake.label], mine
            for store in (self.store, self._console_store):
                if store is not None:
                    store.use_webhooks(fresh.webhooks)
            log.info("config reloaded", source=self.config_path)
            return True
        finally:
            self._notifier.ready("configuration reloaded")

    def _db_label(self) -> str:
        return self.store.engine.url.render_as_string(hide_password=True)


def _one_line(exc: BaseException) -> str:
    return str(exc).replace("\n", " ")
