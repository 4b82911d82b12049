"""The forkserver that the daemon's child processes are forked from.

A worker (``pipeline.workers``) or the outbox process of ``run --once``
(``service.sender``) forked from it starts at once, with mailroute already imported: the
forkserver imports the workers' modules first (its *preload*), on the other core, while
the command's own start-up runs on this one. This module imports nothing of mailroute,
so that ``run`` starts the forkserver before its own imports rather than after the
workers' (~50 ms sooner).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver

_preloaded = False


def process_context() -> multiprocessing.context.ForkServerContext:
    """The forkserver's context, set to preload the workers' modules."""
    global _preloaded
    ctx = multiprocessing.get_context("forkserver")
    if not _preloaded:
        ctx.set_forkserver_preload(["mailroute.pipeline.workers"])
        _preloaded = True
    return ctx


def start_early() -> None:
    """Start the forkserver now, beside the rest of start-up, instead of when the first
    batch is handed to a worker: it imports mailroute before it can fork one (~0.3 s of
    the other core), and that batch waited for it."""
    process_context()
    multiprocessing.forkserver.ensure_running()
