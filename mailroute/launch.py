"""The ``mailroute`` console script: the command line, started without the collector.

A module of its own, importing nothing, so that the collector is off before the
command line's imports run (``mailroute.startup``).
"""

from __future__ import annotations

from mailroute import startup


def main() -> int:
    startup.begin()
    from mailroute.cli import main as command_line

    return command_line()
