"""The one verdict on a config: what ``check-config`` passes, ``run`` starts and SIGHUP loads.

``check-config`` once passed a config with no ``[mailbox]`` that ``run`` then refused.
Every entry point now asks :func:`judge`, so a config that passes here is one the daemon
will start with (database and servers aside: those are checked when they are reached).
"""

from __future__ import annotations

from datetime import datetime

from mailroute.config import Config, MailboxConfig
from mailroute.core.business_calendar import BusinessCalendar
from mailroute.errors import ConfigError


def judge(config: Config, now: datetime) -> list[str]:
    """Refuse (ConfigError) what the daemon cannot run with; return warnings to show.

    Builds the pipeline without a store, so rules, templates and the calendar are
    read exactly as the daemon reads them.
    """
    warnings: list[str] = []
    for index, box in enumerate(config.all_mailboxes()):
        section = f"mailboxes.{index}" if config.mailboxes else "mailbox"
        if not (box.host or box.maildir):
            raise ConfigError(f"{section}.host: set the IMAP server (or {section}.maildir) "
                              "to run")
        seen = config.for_mailbox(box)
        try:
            calendar = BusinessCalendar.from_config(seen.business_hours)
        except ValueError as exc:
            where = f"{section}.business_hours" if box.business_hours else "business_hours"
            raise ConfigError(f"{where}: {exc}") from None
        _build_pipeline(config, box, section)
        warning = calendar_warning(calendar, now)
        if warning and warning not in warnings:
            warnings.append(warning)
    return warnings


def _build_pipeline(config: Config, box: MailboxConfig, section: str) -> None:
    from mailroute.pipeline.decide import Pipeline

    try:
        Pipeline.from_config(config, mailbox=box)
    except ConfigError:
        raise
    except (ValueError, OSError) as exc:
        where = (f"{section}.templates_dir" if isinstance(exc, OSError) and box.templates_dir
                 else "replies.templates_dir" if isinstance(exc, OSError) else "config")
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
