"""Start-up without the garbage collector, then its objects kept out of its sight.

Importing the command line, SQLAlchemy, pydantic and the rest, judging the config and
building the pipeline allocate some 100,000 objects that live as long as the process,
and free almost none (1,863 of them, measured). With the collector on, each allocation
burst set off collections that walked all of them again: 0.13-0.2 s of a 0.8-1.0 s
start-up. So the command's entry point turns the collector off (:func:`begin`) and
turns it back on once start-up is over (:func:`settle`), after moving everything alive
into the permanent generation (``gc.freeze``, the pattern the ``gc`` documentation
gives for a process that builds long-lived state first), so that the daemon's
collections for years to come do not walk those objects either. The garbage start-up
left is frozen with them: a few hundred KB at most, once per process; a full collection
to free it would cost most of the gain.

The processes forked from the workers' forkserver (the workers, the outbox process of
``run --once``) start with the same imports, inherited, and with what they were handed
unpickled (a worker's compiled rules): :func:`freeze_inherited` keeps those out of their
collections too. A worker's first full collection walked them all: ~0.03 s of each
worker's CPU in a 2,000-letter backlog (bench/README, fourteenth round).

Only the entry points call :func:`begin`; code that imports ``mailroute`` as a library
(tests, the benchmarks' in-process runs) keeps its collector, and :func:`settle` leaves
it as it is.
"""

from __future__ import annotations

import gc

_BEGUN = False


def begin() -> None:
    """The collector off until :func:`settle` (called first thing by an entry point)."""
    global _BEGUN
    _BEGUN = True
    gc.disable()


def settle() -> None:
    """Start-up is over: what it built is frozen, and collections resume. Idempotent;
    nothing happens unless :func:`begin` turned the collector off."""
    global _BEGUN
    if not _BEGUN:
        return
    _BEGUN = False
    gc.freeze()
    gc.enable()


def freeze_inherited() -> None:
    """A forked child is set up (what it inherited, what it was handed): freeze it."""
    gc.freeze()
