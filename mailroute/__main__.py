"""`python -m mailroute`: the command line."""

from mailroute import startup

startup.begin()  # the imports below are most of start-up: see mailroute.startup

from mailroute.cli import main  # noqa: E402

raise SystemExit(main())
