"""The pure stages of a letter, parse then analyze, as one verdict; in worker processes
when a backlog makes that pay.

Parsing and analysing are most of a letter's CPU time and touch nothing, so while the
main process stores one batch, a worker can already understand the next: a backlog
then uses both cores. A worker is a process started for one drain pass (a
forkserver child, so nothing of the daemon's threads is copied), holding the
pass's rules; a pass with only a few letters does everything in-process.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
import traceback
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from mailroute.core.letter import ParsedLetter, ParseLimits, parse
from mailroute.core.verdict import Analysis, AnalysisContext, analyze
from mailroute.errors import LetterUnreadable


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


def understand(raw: bytes, context: AnalysisContext, limits: ParseLimits) -> Understood:
    """Parse and analyse; every failure is the letter's, returned, never raised."""
    stage = "parse"
    parsed = None
    try:
        parsed = parse(raw, limits)
        stage = "analyze"
        return Understood(parsed, analyze(parsed, context))
    except LetterUnreadable as exc:
        return Understood(parsed, None, Fault(exc.stage, exc.reason))
    except Exception as exc:  # a bug meeting an odd letter must not stop the queue
        return Understood(parsed, None, Fault(stage, f"{type(exc).__name__}: {exc}",
                                              traceback.format_exc()))


class Understanding:
    """Understands batches of letters, in ``workers`` processes (0: in this one).

    Starting a worker takes about a second (a forkserver, imports), so it starts in
    the background and batches are understood here until it answers: the first
    letters of a backlog do not wait for it.
    """

    def __init__(self, context: AnalysisContext, limits: ParseLimits, workers: int) -> None:
        self.context, self.limits = context, limits
        self._pool: ProcessPoolExecutor | None = None
        self._ready = threading.Event()
        if workers > 0:
            self._pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("forkserver"),
                initializer=_start_worker,
                initargs=(context, limits),
            )
            threading.Thread(target=self._warm_up, args=(self._pool,), name="workers",
                             daemon=True).start()

    def _warm_up(self, pool: ProcessPoolExecutor) -> None:
        try:
            pool.submit(_understand_in_worker, []).result()
        except (BrokenProcessPool, RuntimeError, OSError):
            return  # never ready: everything is understood in this process
        self._ready.set()

    def submit(self, raws: Sequence[bytes]) -> Future[list[Understood]]:
        """Start understanding these letters; the future's list is in the same order."""
        if self._pool is not None and self._ready.is_set():
            try:
                return self._pool.submit(_understand_in_worker, list(raws))
            except (BrokenProcessPool, RuntimeError):
                self._pool = None  # a worker died: carry on in this process
        done: Future[list[Understood]] = Future()
        done.set_result([understand(raw, self.context, self.limits) for raw in raws])
        return done

    def results(self, job: Future[list[Understood]], raws: Sequence[bytes]) -> list[Understood]:
        """The job's verdicts; if its worker died (a letter may have killed it), the
        letters are understood here instead, and later batches stay here too."""
        try:
            return job.result()
        except BrokenProcessPool:
            self._pool = None
            return [understand(raw, self.context, self.limits) for raw in raws]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


_worker_rules: tuple[AnalysisContext, ParseLimits] | None = None


def _start_worker(context: AnalysisContext, limits: ParseLimits) -> None:
    global _worker_rules
    _worker_rules = (context, limits)
    threading.Thread(target=_exit_with_parent, name="parent-watch", daemon=True).start()


def _exit_with_parent() -> None:
    """Leave as soon as the process that started this worker is gone.

    A worker waits on its task queue, whose both ends it holds, so a parent killed
    with SIGKILL would leave it (and the forkserver it keeps alive) running forever,
    holding the daemon's stderr. The parent's sentinel is a pipe only the parent
    writes to: it reads as closed the moment the parent dies, however it died.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    multiprocessing.connection.wait([parent.sentinel])
    os._exit(0)  # nothing to flush: a worker keeps no state of its own


def _understand_in_worker(raws: list[bytes]) -> list[Understood]:
    assert _worker_rules is not None, "worker started without its rules"
    context, limits = _worker_rules
    return [understand(raw, context, limits) for raw in raws]
