"""A retention pass as the daemon and `mailroute retention run` make it: the config's
periods applied to the store, and one log line saying what went."""

from __future__ import annotations

from datetime import datetime

from mailroute import logs
from mailroute.config import RetentionConfig
from mailroute.store import Store
from mailroute.store.retention import Purged, apply

log = logs.get("mailroute.pipeline.retention")


def run_retention(
    store: Store, config: RetentionConfig, now: datetime, dry_run: bool = False
) -> Purged:
    """Apply ``[retention]``; logs what it removed (nothing when nothing was due)."""
    purged = apply(store, config.raw_days, config.anonymize_days, now, dry_run=dry_run)
    if purged.anything:
        log.info("retention dry run" if dry_run else "retention purge", **purged.as_dict(),
                 raw_days=config.raw_days, anonymize_days=config.anonymize_days)
    return purged
