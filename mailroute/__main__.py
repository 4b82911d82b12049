"""`python -m mailroute`: the command line."""

from mailroute.cli import main

raise SystemExit(main())
