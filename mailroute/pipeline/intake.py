"""Empty the intake folder: save each letter, process it, then file it on the server.

The order is what makes crashes harmless:

1. the raw bytes are committed under (mailbox, UIDVALIDITY, UID);
2. the letter is processed from the saved copy, in its own transaction;
3. only then is it moved to ``processed_folder`` or ``quarantine_folder``.

A crash after 1 finds the UID already saved and does not fetch it twice; after
2 the letter is only moved; after 3 it is gone from the folder. Nothing is moved
before its bytes are in the database, so nothing is lost. Bytes already stored
under another key (after a UIDVALIDITY change, or a second copy) are recognised
by their SHA-256 and filed like the stored letter, never processed twice.

A letter the server will not serve, or will not move, is set aside in
``letter_faults`` with a backoff of its own (``FAULT_RETRY_FIRST`` doubling up to
``FAULT_RETRY_MAX``) while the rest of the folder goes on; `status` shows it.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailroute import logs
from mailroute.config import MailboxConfig
from mailroute.core.arrival import plausible_arrival
from mailroute.mail.mailbox import FetchedLetter, MailSource, UnservedLetter
from mailroute.pipeline.decide import Outcome, Pipeline, age_text, batches, process_pending
from mailroute.pipeline.workers import Interrupted, Understanding, Understood
from mailroute.store import Store
from mailroute.store import repository as repo
from mailroute.store.models import LetterFault

log = logs.get("mailroute.mail.mailbox")
SAVE_ATTEMPTS = 3  # a batch saved meanwhile by another writer is looked at again
MESSAGE_ID = re.compile(  # printable only: a NUL here made PostgreSQL refuse the save
    rb"^message-id:[ \t]*(<[\x21-\x3d\x3f-\x7e\x80-\xff]{1,990}>)", re.IGNORECASE | re.MULTILINE
)
FAULT_RETRY_FIRST = timedelta(minutes=1)
FAULT_RETRY_MAX = timedelta(hours=1)
PROGRESS_EVERY = 10.0  # seconds between progress lines while a backlog drains


def within_bytes(uids: Sequence[str], sizes: Mapping[str, int], budget: int) -> list[str]:
    """The first of ``uids`` whose sizes fit ``budget`` together: never none (a letter
    larger than the budget is fetched alone). A size not known counts as nothing: the
    batch is then bounded by its count alone, as it was before sizes were asked."""
    sized = [(uid, sizes.get(uid, 0)) for uid in uids]
    return next(batches(sized, len(uids), budget), [])


def fault_retry_after(attempts: int) -> timedelta:
    """The pause before a letter's next attempt after ``attempts`` failures in a row."""
    pause: timedelta = FAULT_RETRY_FIRST * 2 ** min(attempts - 1, 16)
    return min(pause, FAULT_RETRY_MAX)


@dataclass
class DrainReport:
    """What one pass over the folder did."""

    fetched: int = 0
    saved: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    filed: dict[str, int] = field(default_factory=dict)
    unserved: int = 0  # letters the server would not hand over this pass
    refused: int = 0  # letters it would not move
    # The earliest next attempt at a letter set aside that is still in the folder: the
    # wait for new mail after the pass must end by then (an IDLE lasts up to 29 min).
    next_attempt_at: datetime | None = None

    def count(self, state: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.state == state)

    def add(self, other: DrainReport) -> None:
        """Fold another mailbox's pass into this one (``run --once`` over several)."""
        self.fetched += other.fetched
        self.saved += other.saved
        self.outcomes += other.outcomes
        for folder, filed in other.filed.items():
            self.filed[folder] = self.filed.get(folder, 0) + filed
        self.unserved += other.unserved
        self.refused += other.refused
        self.next_attempt_at = min(
            (at for at in (self.next_attempt_at, other.next_attempt_at) if at is not None),
            default=None)


def drain(
    source: MailSource,
    store: Store,
    pipeline: Pipeline,
    mailbox: MailboxConfig,
    clock: Callable[[], datetime],
    stop: threading.Event | None = None,
    progress: Callable[[], None] | None = None,
    connected: Callable[[], None] | None = None,
    counted: Callable[[int, int], None] | None = None,
) -> DrainReport:
    """One pass: every letter in the folder now is saved, decided and filed.

    ``progress`` is called after each batch is filed: proof, in the middle of a
    long backlog, that the mailbox and the database both work again. ``connected``
    is called once the folder is selected and listed and the database has answered,
    before the first letter is fetched: a large backlog must not delay start-up.
    ``counted`` gets (letters fetched, letters to fetch) as the backlog goes: a
    progress bar's feed.
    """
    return _Pass(source, store, pipeline, mailbox, clock, stop or threading.Event(),
                 progress or _nothing, connected or _nothing, counted).run()


def _nothing() -> None:
    pass


@dataclass
class _InFlight:
    """A saved batch, (id, bytes) of its new letters, and the job understanding them."""

    saved: list[tuple[int, bytes]]
    future: Future[list[Understood]]


@dataclass
class _Pass:
    source: MailSource
    store: Store
    pipeline: Pipeline
    mailbox: MailboxConfig
    clock: Callable[[], datetime]
    stop: threading.Event
    progress: Callable[[], None]
    connected: Callable[[], None]
    counted: Callable[[int, int], None] | None = None
    report: DrainReport = field(default_factory=DrainReport)
    uidvalidity: int = 0
    copies: dict[str, int] = field(default_factory=dict)  # uid -> letter already stored
    resting: set[str] = field(default_factory=set)  # uids set aside until a later pass
    reused: set[str] = field(default_factory=set)  # UIDs of filed letters, in the folder again

    def run(self) -> DrainReport:
        started = time.monotonic()
        try:
            return self._run()
        finally:
            self._log_summary(time.monotonic() - started)

    def _log_summary(self, seconds: float) -> None:
        """One line per drain, however it ended: what a backlog (or one letter) became."""
        report = self.report
        log.info("drain finished", letters=report.fetched, requests=report.count("processed"),
                 follow_ups=report.count("follow_up"), ignored=report.count("ignored"),
                 quarantined=report.count("quarantined"),
                 replies_queued=sum(1 for outcome in report.outcomes if outcome.reply),
                 seconds=round(seconds, 1))

    def _run(self) -> DrainReport:
        self.uidvalidity = self.source.select()
        uids = self.source.list_uids()
        with self.store.transaction() as session:
            known = repo.known_uids(session, self.source.name, self.uidvalidity, uids)
            self.resting = self._resting(session)
        self.reused = known.filed
        self.connected()
        new = [uid for uid in uids if uid not in known.unfiled and uid not in self.resting]
        size = self.mailbox.batch_size
        backlog = len(new) >= 2 * size  # worth more than one worker
        pipeline = self.pipeline
        understanding = Understanding(pipeline.context, pipeline.limits,
                                      self.mailbox.workers if backlog else 1,
                                      pipeline.letter_seconds, self.stop, self._note_slow)
        try:
            self._save_and_decide(new, size, understanding)
            if not self.stop.is_set():
                self._process_and_file(understanding=understanding)  # left by a crash
        except Interrupted:
            log.info("stopped with letters in hand", detail="they stay pending for the next run")
        finally:
            understanding.close()
        self._note_withheld()
        # what is still in the folder now, not what was there when the pass began: status
        # showed the old figure until the next pass, up to an IDLE renewal later
        left = max(0, len(uids) - sum(self.report.filed.values()))
        with self.store.transaction() as session:
            repo.record_poll(session, self.source.name, self.uidvalidity, self.clock(),
                             backlog=left)
            self.report.next_attempt_at = self._next_attempt(session, uids)
        return self.report

    def _next_attempt(self, session: Session, uids: list[str]) -> datetime | None:
        """When the first letter set aside in this folder is due again. Only letters
        still listed count: a fault left for a letter gone from the folder would
        otherwise cut every wait to nothing."""
        ahead = self._faults_ahead(session)
        if not ahead:
            return None  # the usual pass: no set of a large folder's UIDs to build
        listed = set(uids)
        return min((fault.next_attempt_at for fault in ahead if fault.uid in listed),
                   default=None)

    def _note_withheld(self) -> None:
        """One line for the whole pass, however many old letters a history held."""
        withheld = sum(1 for outcome in self.report.outcomes if outcome.too_old)
        if withheld:
            log.warning(f"registered without reply (older than {age_text(self.pipeline.max_age)})",
                        count=withheld)

    def _save_and_decide(self, new: list[str], size: int, understanding: Understanding) -> None:
        """Fetch and save batch after batch; each is understood while the one before it
        is decided and filed."""
        ahead: deque[_InFlight] = deque()  # saved, being understood, not decided
        meter = _Progress(len(new), self.counted)
        start = 0
        while start < len(new):
            meter.note(start)
            if self.stop.is_set():
                return
            window = new[start : start + size]
            uids = window if len(window) == 1 else within_bytes(
                window, self.source.sizes(window), self.mailbox.batch_bytes)
            start += len(uids)
            saved = self._save_batch(self._fetch(uids))
            self.store.note_growth(len(saved))
            raws = [raw for _id, raw in saved]
            ahead.append(_InFlight(saved, understanding.submit(raws)))
            if len(ahead) > 1:  # keep one batch being understood while this one is decided
                self._decide_and_file(understanding, ahead.popleft())
        meter.note(len(new))
        while ahead and not self.stop.is_set():
            self._decide_and_file(understanding, ahead.popleft())

    def _note_slow(self, since: datetime | None) -> None:
        """A letter has been in hand for a while (``since``), or no longer (None)."""
        try:
            with self.store.transaction() as session:
                repo.note_in_hand(session, self.source.name, since)
        except Exception as exc:  # the database may be away: `status` says so by itself
            log.warning("cannot record the letter in hand", error=f"{type(exc).__name__}: {exc}")

    def _decide_and_file(self, understanding: Understanding, job: _InFlight) -> None:
        """Decide the letters saved up to this batch (older ones left by a crash too), and
        file them with any copies of stored letters the batch held."""
        verdicts = understanding.results(job.future)
        ready = {letter_id: known for (letter_id, _raw), known in
                 zip(job.saved, verdicts, strict=True)}
        self._process_and_file(up_to=max(ready, default=0), ready=ready,
                               understanding=understanding)
        self.progress()

    def _resting(self, session: Session) -> set[str]:
        """UIDs of this folder whose fault's next attempt is still to come."""
        return {fault.uid for fault in self._faults_ahead(session)}

    def _faults_ahead(self, session: Session) -> list[LetterFault]:
        """This folder's letters set aside whose next attempt is still to come."""
        now = self.clock()
        return [fault for fault in repo.letter_faults(session, self.source.name)
                if fault.uidvalidity == self.uidvalidity and fault.next_attempt_at > now]

    def _fetch(self, uids: list[str]) -> list[FetchedLetter]:
        """The batch's letters; those the server would not serve are set aside."""
        letters: list[FetchedLetter] = []
        unserved: dict[str, str] = {}
        for item in self.source.fetch(uids):
            if isinstance(item, UnservedLetter):
                unserved[item.uid] = item.error
            else:
                letters.append(item)
        self._set_aside(unserved, "fetch")
        self.report.unserved += len(unserved)
        return letters

    def _set_aside(self, failures: Mapping[str, str], action: str) -> None:
        """Record each failed letter with its own next attempt, and say so once per attempt."""
        if not failures:
            return
        now = self.clock()
        with self.store.transaction() as session:
            for uid, error in failures.items():
                fault = repo.record_letter_fault(
                    session, self.source.name, self.uidvalidity, uid, action=action,
                    error=error, now=now, retry_after=fault_retry_after,
                )
                log.warning("letter set aside", uid=uid, action=action, error=error,
                            attempts=fault.attempts, retry_at=fault.next_attempt_at.isoformat())
        self.resting.update(failures)

    def _save_batch(self, batch: list[FetchedLetter]) -> list[tuple[int, bytes]]:
        """Commit a fetched batch's raw bytes in one transaction (one fsync, not one per
        letter). Nothing has moved on the server yet: a failure re-fetches the batch.
        Returns (id, bytes) of the letters saved anew."""
        now = self.clock()
        arrivals = [
            repo.Arrival(f.uid, f.raw, header_message_id(f.raw), self._arrival(f, now))
            for f in batch
        ]
        ids = self._save(arrivals, [f.uid for f in batch], now)
        for fetched, (letter_id, is_new) in zip(batch, ids, strict=True):
            self._note_saved(fetched, letter_id, is_new)
        return [(letter_id, f.raw) for f, (letter_id, is_new) in zip(batch, ids, strict=True)
                if is_new]

    @staticmethod
    def _arrival(fetched: FetchedLetter, now: datetime) -> datetime:
        """The server's arrival time, or ``now`` when it cannot be true (and a log line)."""
        arrival = plausible_arrival(fetched.received_at, fetched.raw, now)
        if arrival.replaced:
            log.warning("arrival time replaced", uid=fetched.uid, reason=arrival.replaced,
                        used=arrival.at.isoformat())
        return arrival.at

    def _save(
        self, arrivals: list[repo.Arrival], uids: list[str], now: datetime
    ) -> list[tuple[int, bool]]:
        """(id, is_new) of each arrival. A writer that saved some of these bytes between
        our look and our insert (the unique fingerprint says so) makes us look again."""
        for attempt in range(1, SAVE_ATTEMPTS + 1):
            try:
                with self.store.transaction() as session:
                    ids = repo.save_arrivals(session, self.source.name, self.uidvalidity,
                                             arrivals, now)
                    repo.clear_letter_faults(session, self.source.name, self.uidvalidity, uids)
                    return ids
            except IntegrityError:
                if attempt == SAVE_ATTEMPTS:
                    raise
                log.info("letters saved meanwhile by another writer", letters=len(arrivals))
        raise AssertionError("unreachable")

    def _note_saved(self, fetched: FetchedLetter, letter_id: int, is_new: bool) -> None:
        self.report.fetched += 1
        if fetched.uid in self.reused:
            log.warning("UID reused by the server", uid=fetched.uid, letter=letter_id,
                        uidvalidity=self.uidvalidity,
                        action="saved as a new letter" if is_new else "same bytes as a letter "
                        "stored before: filed like it")
        if is_new:
            self.report.saved += 1
            log.info("letter fetched", uid=fetched.uid, letter=letter_id, size=len(fetched.raw))
        else:
            self.copies[fetched.uid] = letter_id
            log.info("letter already stored", uid=fetched.uid, letter=letter_id)

    def _process_and_file(
        self,
        up_to: int | None = None,
        ready: Mapping[int, Understood] | None = None,
        understanding: Understanding | None = None,
    ) -> None:
        self.report.outcomes += process_pending(self.store, self.pipeline, self.clock,
                                                up_to=up_to, ready=ready,
                                                understanding=understanding,
                                                source=self.source.name)
        with self.store.transaction() as session:
            moves = repo.letters_to_file(session, self.source.name, self.uidvalidity)
            copy_states = repo.letter_states(session, list(self.copies.values()))
        by_folder: dict[str, list[str]] = {}
        for uid, state in moves.values():
            if uid not in self.resting:
                by_folder.setdefault(self._folder_for(state), []).append(uid)
        for uid, letter_id in list(self.copies.items()):
            state = copy_states.get(letter_id, "pending")
            if state != "pending":
                by_folder.setdefault(self._folder_for(state), []).append(uid)
                del self.copies[uid]
        refused: dict[str, str] = {}
        for folder, uids in by_folder.items():
            refused_here = self.source.file(uids, folder)
            refused.update(refused_here)
            filed = len(uids) - len(refused_here)
            self.report.filed[folder] = self.report.filed.get(folder, 0) + filed
            log.info("letters filed", folder=folder, count=filed)
        with self.store.transaction() as session:
            for folder, uids in by_folder.items():
                moved = set(uids) - refused.keys()
                ids = [lid for lid, (uid, state) in moves.items()
                       if uid in moved and self._folder_for(state) == folder]
                repo.mark_filed(session, ids, folder)
                repo.clear_letter_faults(session, self.source.name, self.uidvalidity, moved)
        self._set_aside(refused, "file")
        self.report.refused += len(refused)

    def _folder_for(self, state: str) -> str:
        if state == "quarantined":
            return self.mailbox.quarantine_folder
        return self.mailbox.processed_folder


class _Progress:
    """A progress line every ``PROGRESS_EVERY`` seconds while a backlog is fetched:
    done/total, letters per second and the time left at that pace."""

    def __init__(self, total: int, counted: Callable[[int, int], None] | None) -> None:
        self.total = total
        self.counted = counted
        self.started = self.last = time.monotonic()

    def note(self, done: int) -> None:
        if self.counted is not None:
            self.counted(done, self.total)
        now = time.monotonic()
        if not done or done == self.total or now - self.last < PROGRESS_EVERY:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        left = (self.total - done) / rate if rate else 0.0
        log.info("draining", done=f"{done}/{self.total}", per_second=round(rate, 1),
                 left=_duration(left))


def _duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``42s``: a time left a person reads at a glance."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def header_message_id(raw: bytes) -> str | None:
    """The Message-ID from the header block, cheaply, for logs before full parsing."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    head = raw[: end if end >= 0 else 65536]
    match = MESSAGE_ID.search(head)
    return match.group(1).decode("ascii", "replace") if match else None
