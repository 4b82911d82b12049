"""The one verdict on a config: what ``check-config`` passes, ``run`` starts and SIGHUP loads.

``check-config`` once passed a config with no ``[mailbox]`` that ``run`` then refused.
Every entry point now asks :func:`judge`, so a config that passes here is one the daemon
will start with (database and servers aside: those are checked when they are reached).
"""

from __future__ import annotations

from datetime import datetime

from mailroute.config import Config
from mailroute.core.business_calendar import BusinessCalendar
from mailroute.errors import ConfigError


def judge(config: Config, now: datetime) -> list[str]:
    """Refuse (ConfigError) what the daemon cannot run with; return warnings to show.

    Builds the pipeline without a store, so rules, templates and the calendar are
    read exactly as the daemon reads them.
    """
    if not (config.mailbox.host or config.mailbox.maildir):
        raise ConfigError("mailbox.host: set the IMAP server (or mailbox.maildir) to run")
    try:
        calendar = BusinessCalendar.from_config(config.business_hours)
    except ValueError as exc:
        raise ConfigError(f"business_hours: {exc}") from None
    _build_pipeline(config)
    warning = calendar_warning(calendar, now)
    return [warning] if warning else []


def _build_pipeline(config: Config) -> None:
    from mailroute.pipeline.decide import Pipeline

    try:
        Pipeline.from_config(config)
    except ConfigError:
        raise
    except (ValueError, OSError) as exc:
        where = "replies.templates_dir" if isinstance(exc, OSError) else "config"
        raise ConfigError(f"{where}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None


def calendar_warning(calendar: BusinessCalendar, now: datetime) -> str | None:
    """Say so when the coming year's official days off and transfers are not known.

    The government publishes each year's production calendar late in the year
    before; until the `holidays` package knows it, set [business_hours]
    extra_holidays / extra_workdays by hand.
    """
    coming = now.astimezone(calendar.zone).year + 1
    if calendar.calendar_known_for(coming):
        return None
    return (
        f"the {calendar.calendar} production calendar for {coming} is not known to this "
        "installation: update the `holidays` package or list the days off and transferred "
        "working days in [business_hours] extra_holidays / extra_workdays"
    )
