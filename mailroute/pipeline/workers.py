"""The pure stages of a letter, parse then analyze, as one verdict; always in a worker
process, under a time budget.

A letter is hostile input: one crafted letter once sent a regular expression into
backtracking for minutes, and every letter behind it waited. So no letter is
understood in the daemon's own process. A worker (a forkserver child, so nothing of
the daemon's threads is copied) understands letters one after another, sends each
verdict as it is reached and keeps the stage it is in where the process that
started it can read it (shared memory, read only when a letter overruns or its
worker dies: a message per stage cost the daemon's process ten pipe reads a
letter); that process watches the CPU time the letter has cost. A letter over
``letter_seconds`` (CPU, or ten times that in wall time for a worker that is stuck
without spending CPU) is given up: the worker is killed, the letter gets a
``Fault`` naming the stage that overran and the budget (it is quarantined, its
bytes kept), a fresh worker takes the letters after it. A stop (SIGTERM) kills the
worker at once and raises ``Interrupted``: the letters in hand stay pending for the
next run.

Parsing and analysing are most of a letter's CPU time, so while the main process
stores one batch a worker can already understand the next: a backlog uses both
cores (``workers`` processes; at least one).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import itertools
import math
import multiprocessing
import multiprocessing.connection
import os
import queue
import resource
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from pathlib import Path

from mailroute import logs, startup
from mailroute.core.letter import ParsedLetter, ParseLimits, parse
from mailroute.core.reply_policy import DELIVERY_REPORT_TYPES
from mailroute.core.verdict import STAGES, Analysis, AnalysisContext, analyze
from mailroute.errors import LetterUnreadable
from mailroute.pipeline.processes import process_context

log = logs.get("mailroute.pipeline.workers")
POLL_SECONDS = 0.05  # how often a letter's cost and a stop are looked at
WALL_FACTOR = 10  # a worker stuck without spending CPU is given up after this many budgets
SLOW_NOTE_SECONDS = 1.0  # a letter in hand this long is recorded for `status`
DEATHS_PER_LETTER = 2  # a letter that kills its worker twice is quarantined
# The kernel's own limit on a worker's CPU for one letter (RLIMIT_CPU, then SIGXCPU), in
# budgets, plus a second: never reached while the daemon watches (it kills at one
# budget), it ends a worker whose daemon is gone and that is too busy to notice.
BACKSTOP_BUDGETS = 2


@dataclass(frozen=True)
class Fault:
    """Why a letter cannot be understood: it is quarantined with this."""

    stage: str
    reason: str
    trace: str | None = None


@dataclass(frozen=True)
class Understood:
    """A letter parsed and analysed, or the fault that stopped it (``parsed`` is kept
    when only analysis failed: a duplicate is still recognised by its Message-ID)."""

    parsed: ParsedLetter | None
    analysis: Analysis | None
    fault: Fault | None = None


class Interrupted(Exception):
    """A stop was asked for while letters were being understood; they stay pending."""


def _no_stage(name: str) -> None:
    pass


def understand(
    raw: bytes,
    context: AnalysisContext,
    limits: ParseLimits,
    stage: Callable[[str], None] = _no_stage,
) -> Understood:
    """Parse and analyse; every failure is the letter's, returned, never raised.

    This runs unbounded: the daemon calls it only inside a worker (``Understanding``).
    """
    step = "parse"
    parsed = None
    try:
        stage(step)
        parsed = parse(raw, limits)
        step = "analyze"

        def entered(name: str) -> None:
            nonlocal step
            step = name
            stage(name)

        return Understood(parsed, analyze(parsed, context, entered))
    except LetterUnreadable as exc:
        return Understood(parsed, None, Fault(exc.stage, exc.reason))
    except Exception as exc:  # a bug meeting an odd letter must not stop the queue
        return Understood(parsed, None, Fault(step, f"{type(exc).__name__}: {exc}",
                                              traceback.format_exc()))


def overran(stage: str, budget: float, cpu: float, wall: float) -> Fault:
    """The fault of a letter given up at its budget."""
    return Fault(stage, f"{stage} took more than the {budget:g} s budget "
                        f"([limits] letter_seconds; {cpu:.1f} s CPU, {wall:.1f} s in hand)")


SlowNote = Callable[[datetime | None], None]


class Understanding:
    """Understands batches of letters in ``workers`` worker processes (at least one),
    each letter under ``letter_seconds``.

    ``submit`` hands a batch to the next worker and returns at once; ``results``
    waits for it. ``on_slow`` is called with the moment a letter was taken in hand
    once it has been in hand for a second, and with None when it is done: what
    `mailroute status` reads to say a letter is in hand for too long.
    """

    def __init__(
        self,
        context: AnalysisContext,
        limits: ParseLimits,
        workers: int,
        letter_seconds: float,
        stop: threading.Event | None = None,
        on_slow: SlowNote | None = None,
    ) -> None:
        self.context, self.limits = context, limits
        self._stop = stop or threading.Event()
        self._slots = [
            _Slot(context, limits, letter_seconds, self._stop, on_slow)
            for _ in range(max(1, workers))
        ]
        self._turns = itertools.cycle(self._slots)

    def submit(self, raws: Sequence[bytes]) -> Future[list[Understood]]:
        """Start understanding these letters; the future's list is in the same order."""
        job: Future[list[Understood]] = Future()
        next(self._turns).jobs.put((list(raws), job))
        return job

    def results(self, job: Future[list[Understood]]) -> list[Understood]:
        """The job's verdicts; raises Interrupted if a stop came first."""
        return job.result()

    def understand_all(self, raws: Sequence[bytes]) -> list[Understood]:
        return self.results(self.submit(raws))

    def close(self) -> None:
        """Stop every worker (a letter in hand is abandoned, not judged)."""
        for slot in self._slots:
            slot.close()


class _Slot:
    """One worker process and the thread that feeds and watches it, job after job."""

    def __init__(
        self,
        context: AnalysisContext,
        limits: ParseLimits,
        budget: float,
        stop: threading.Event,
        on_slow: SlowNote | None,
    ) -> None:
        self.context, self.limits, self.budget = context, limits, budget
        self.stop, self.on_slow = stop, on_slow
        self.jobs: queue.SimpleQueue[tuple[list[bytes], Future[list[Understood]]] | None] = (
            queue.SimpleQueue())
        self.worker: _Worker | None = None
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="understanding", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        self.jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        try:
            while (item := self.jobs.get()) is not None:
                raws, job = item
                if not job.set_running_or_notify_cancel():
                    continue
                try:
                    verdicts = self._understand(raws)
                except BaseException as exc:  # Interrupted, or a bug: the caller sees it
                    self._kill()
                    job.set_exception(exc)
                    continue
                self._release()  # before the caller hears: its next pass may want it
                job.set_result(verdicts)
        finally:
            self._kill()

    def _understand(self, raws: list[bytes]) -> list[Understood]:
        verdicts: list[Understood] = []
        deaths = 0
        while len(verdicts) < len(raws):
            if self.stop.is_set() or self._closing.is_set():
                raise Interrupted("stop requested")
            worker = self._worker()
            worker.send(raws[len(verdicts):], self.budget * BACKSTOP_BUDGETS + 1)
            done, fault = self._watch(worker, verdicts, len(raws))
            if fault is None:
                break  # every letter has its verdict
            self._kill()
            deaths = deaths + 1 if fault.stage == "died" else DEATHS_PER_LETTER
            if deaths >= DEATHS_PER_LETTER:
                stage = done or "parse"
                reason = fault.reason if fault.stage != "died" else (
                    f"the worker understanding it died ({fault.reason}), twice")
                verdicts.append(Understood(None, None, Fault(stage, reason)))
                log.error("letter given up", stage=stage, error=reason)
                deaths = 0
        return verdicts

    def _watch(
        self, worker: _Worker, verdicts: list[Understood], total: int
    ) -> tuple[str | None, Fault | None]:
        """Collect verdicts until the batch is done (None, None), or the letter in hand
        overran its budget or killed the worker: (its stage, the fault)."""
        letter = _InHand(worker.cpu())
        while len(verdicts) < total:
            if self.stop.is_set() or self._closing.is_set():
                self._kill()
                raise Interrupted("stop requested")
            message = worker.receive(POLL_SECONDS)
            if message is not None:
                kind, payload, cpu_now = message
                if kind == "died":
                    return worker.stage(), Fault("died", worker.exit_reason())
                assert isinstance(payload, Understood)
                verdicts.append(payload)
                letter.finish(self.on_slow)
                letter = _InHand(cpu_now)
                continue
            cpu, wall = worker.cpu() - letter.cpu_start, time.monotonic() - letter.wall_start
            if cpu > self.budget or wall > self.budget * WALL_FACTOR:
                letter.finish(self.on_slow)
                stage = worker.stage()
                return stage, overran(stage, self.budget, cpu, wall)
            letter.note_if_slow(self.on_slow)
        letter.finish(self.on_slow)
        return None, None

    def _worker(self) -> _Worker:
        if self.worker is None:
            self.worker = _IDLE.take(self.context, self.limits) or _Worker(self.context,
                                                                           self.limits)
        return self.worker

    def _kill(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.kill()

    def _release(self) -> None:
        """The worker is between letters: the next pass may use it."""
        worker, self.worker = self.worker, None
        if worker is not None:
            _IDLE.give_back(worker)


class _InHand:
    """The letter a worker is on: since when and from what CPU time (it began when the
    verdict before it was sent)."""

    def __init__(self, cpu_start: float) -> None:
        self.cpu_start = cpu_start
        self.wall_start = time.monotonic()
        self.taken_at = datetime.now(UTC)
        self.noted = False

    def note_if_slow(self, on_slow: SlowNote | None) -> None:
        if on_slow and not self.noted and time.monotonic() - self.wall_start > SLOW_NOTE_SECONDS:
            self.noted = True
            _in_background(on_slow, self.taken_at)

    def finish(self, on_slow: SlowNote | None) -> None:
        if on_slow and self.noted:
            self.noted = False
            _in_background(on_slow, None)


def _in_background(note: SlowNote, moment: datetime | None) -> None:
    """A database write must not hold up the watch over the budget."""
    threading.Thread(target=note, args=(moment,), name="slow-note", daemon=True).start()


_DIED = ("died", None, 0.0)
# The stages a worker shares, by their index; one left out of STAGES reads "analyze".
_STAGES = ("parse", "analyze", *STAGES)
_STAGE_CODES = {name: code for code, name in enumerate(_STAGES)}
_UNLISTED_STAGE = _STAGE_CODES["analyze"]
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class _Worker:
    """A worker process and its end of the pipe."""

    def __init__(self, context: AnalysisContext, limits: ParseLimits) -> None:
        self.context, self.limits = context, limits
        ctx = process_context()
        self.conn, child = ctx.Pipe()
        self._stage_code = ctx.RawValue(ctypes.c_int, 0)  # one aligned int: no torn read
        self.process: BaseProcess = ctx.Process(
            target=_serve, args=(child, self._stage_code, context, limits),
            name="mailroute-understand", daemon=True,
        )
        self.process.start()
        child.close()
        self._stat = Path(f"/proc/{self.process.pid}/stat")
        self._started = time.monotonic()

    def serves(self, context: AnalysisContext, limits: ParseLimits) -> bool:
        return self.context is context and self.limits == limits

    def send(self, raws: list[bytes], cpu_backstop: float) -> None:
        """Letters to understand, each under the kernel's limit of ``cpu_backstop`` s."""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, EOFError):
            self.conn.send((raws, cpu_backstop))  # if it died, the next receive says so

    def receive(self, timeout: float) -> tuple[str, object, float] | None:
        """The worker's next verdict as ("done", verdict, cpu); None if none came in
        ``timeout``; ("died", None, 0) if it died."""
        try:
            if not self.conn.poll(timeout):
                return None if self.process.is_alive() else _DIED
            message: tuple[str, object, float] = self.conn.recv()
            return message
        except (EOFError, OSError):
            return _DIED

    def stage(self) -> str:
        """The stage the worker is in (or was in when it died)."""
        return _STAGES[self._stage_code.value]

    def cpu(self) -> float:
        """CPU seconds the worker has used; wall time since its start where /proc is absent.
        The same clock as the ``time.process_time()`` the worker reports."""
        try:
            fields = self._stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return time.monotonic() - self._started
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def exit_reason(self) -> str:
        self.process.join(1)
        code = self.process.exitcode
        return f"exit code {code}" if code is None or code >= 0 else f"signal {-code}"

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()


class _IdleWorkers:
    """Workers kept between drain passes: starting one costs up to a second (the
    forkserver prepares the main module), and most passes bring a letter or two.
    A worker is bound to the rules it was started with; after a reload the old
    ones are stopped as they are met."""

    KEEP = 4

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []

    def take(self, context: AnalysisContext, limits: ParseLimits) -> _Worker | None:
        with self._lock:
            idle, self._idle = self._idle, []
        found = None
        for worker in idle:
            usable = worker.serves(context, limits) and worker.process.is_alive()
            if usable and found is None:
                found = worker
            elif usable:
                self.give_back(worker)
            else:
                worker.kill()
        return found

    def give_back(self, worker: _Worker) -> None:
        with self._lock:
            if len(self._idle) < self.KEEP:
                self._idle.append(worker)
                return
        worker.kill()


_IDLE = _IdleWorkers()


def _serve(
    conn: multiprocessing.connection.Connection,
    stage_code: ctypes.c_int,
    context: AnalysisContext,
    limits: ParseLimits,
) -> None:
    """The worker: understand each batch received, keeping the stage it is in where
    its parent reads it, and sending each verdict."""
    startup.freeze_inherited()
    threading.Thread(target=_exit_with_parent, name="parent-watch", daemon=True).start()

    def stage(name: str) -> None:
        stage_code.value = _STAGE_CODES.get(name, _UNLISTED_STAGE)

    while True:
        try:
            raws: list[bytes]
            raws, cpu_backstop = conn.recv()
        except (EOFError, OSError):
            return
        for raw in raws:
            limit_cpu(cpu_backstop)
            verdict = understand(raw, context, limits, stage)
            conn.send(("done", without_file_bytes(verdict), time.process_time()))


def without_file_bytes(verdict: Understood) -> Understood:
    """The verdict without its attachments' decoded bytes, which the daemon no longer
    stores (it keeps the raw letter, and a download reads the file from it): 81 of the
    87 MB that the verdicts of 2,000 benchmark letters carried through the pipe.
    Delivery reports keep theirs: deciding reads them."""
    parsed = verdict.parsed
    if parsed is None or not parsed.attachments:
        return verdict
    light = tuple(
        item if item.content_type in DELIVERY_REPORT_TYPES or not item.content
        else dataclasses.replace(item, content=b"")
        for item in parsed.attachments
    )
    letter = dataclasses.replace(parsed, attachments=light)
    analysis = verdict.analysis
    if analysis is not None and analysis.letter is parsed:  # one letter in the pipe, not two
        analysis = dataclasses.replace(analysis, letter=letter)
    return dataclasses.replace(verdict, parsed=letter, analysis=analysis)


def limit_cpu(seconds: float) -> None:
    """Let the kernel end this process once it has spent ``seconds`` more of CPU.

    The daemon gives a letter up at its budget by killing the worker; but a worker
    whose daemon died (SIGKILL, OOM) while it was deep in one regular expression
    never sees its parent go (the thread watching for that needs the interpreter
    lock, which the match holds) and would burn a core forever. RLIMIT_CPU is
    counted by the kernel whatever the process does: past the soft limit it
    sends SIGXCPU, whose default action ends the process.
    """
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    limit = math.ceil(time.process_time() + seconds)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (limit, hard))


def _exit_with_parent() -> None:
    """Leave as soon as the process that started this worker is gone.

    A worker waits on its pipe, so a parent killed with SIGKILL would leave it (and
    the forkserver it keeps alive) running forever, holding the daemon's stderr. The
    parent's sentinel is a pipe only the parent writes to: it reads as closed the
    moment the parent dies, however it died.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    multiprocessing.connection.wait([parent.sentinel])
    os._exit(0)  # nothing to flush: a worker keeps no state of its own
