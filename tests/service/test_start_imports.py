"""What ``run`` loads at start: every import is paid again by each start of the daemon
and of each ``run --once``, before the first letter is read."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Modules only other commands or later jobs need: alembic for `db upgrade` (the schema
# check reads the revisions itself), the report figures for the report job, rich (and
# what it brings: pygments, attrs) for the command line's tables and progress bar, not
# for logging (mailroute.logs hides it from structlog), and APScheduler for the
# daemon's jobs, which `run --once` never starts.
NOT_AT_START = ("alembic", "mailroute.core.report.figures", "mailroute.pipeline.reports",
                "rich", "pygments", "attr", "apscheduler")


@pytest.mark.parametrize("module", NOT_AT_START)
def test_run_starts_without_loading_what_only_other_work_needs(module: str) -> None:
    probe = ("import sys, mailroute.cli, mailroute.cli.run, mailroute.service.daemon, "
             "mailroute.pipeline.workers, mailroute.service.config_check;"
             f"print({module!r} in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"
    # the report job imports them when it runs: tests/pipeline/test_conversation.py
    # (test_weekly_report_is_mailed_once) mails a report through it
