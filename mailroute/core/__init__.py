"""The pure core: bytes -> letter -> verdict -> reply drafts, calendar, SLA, reports.

Nothing here reads a clock, a file after start-up, a socket or a database: `now`, rules
and templates come in as arguments (tests/core/test_purity.py holds it to that)."""
