"""Start-up without the garbage collector (mailroute.startup), and its wiring.

The collector is process-wide state: what the entry points do is checked in
subprocesses, and the in-process test puts everything back as it was.
"""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailroute import startup


@pytest.fixture
def collector() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    startup._BEGUN = False
    gc.unfreeze()
    if enabled:
        gc.enable()


def test_settle_does_nothing_unless_an_entry_point_began(collector: None) -> None:
    frozen = gc.get_freeze_count()
    startup.settle()
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_begin_stops_collections_until_settle_freezes_what_start_up_built(
    collector: None,
) -> None:
    startup.begin()
    assert not gc.isenabled()
    built = [[index] for index in range(1000)]  # long-lived state, as imports make
    startup.settle()
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(built)
    startup.settle()  # idempotent
    assert gc.isenabled()


_COMMAND = """
import gc, sys
from mailroute import startup
startup.begin()
from mailroute.cli import main
code = main(sys.argv[1:])
print(gc.isenabled(), gc.get_freeze_count(), code)
"""


def test_a_command_runs_with_the_collector_back_on_and_start_up_frozen(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/db.sqlite"\n'
                      '[mailbox]\nmaildir = "/nonexistent"\n')
    done = subprocess.run([sys.executable, "-c", _COMMAND, "--config", str(config),
                           "check-config"], capture_output=True, text=True, timeout=60)
    enabled, frozen, _code = done.stdout.split()[-3:]
    assert enabled == "True", done.stderr
    assert int(frozen) > 10_000  # the command line's imports, out of the collector's sight


def test_the_console_script_and_python_m_begin_without_the_collector() -> None:
    """Both entry points turn the collector off before the command line runs (the
    console script's ``launch.main``; ``__main__`` before it imports the command line)."""
    launch = subprocess.run(
        [sys.executable, "-c",
         "import gc, sys\nfrom mailroute import launch, startup\n"
         "import mailroute.cli as cli\n"
         "seen = []\ncli.main = lambda: seen.append(gc.isenabled()) or 0\n"
         "launch.main()\nprint(seen)"],
        capture_output=True, text=True, timeout=60)
    assert launch.stdout.strip() == "[False]", launch.stderr
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'mailroute = "mailroute.launch:main"' in pyproject
    main_module = (Path(__file__).resolve().parents[1] / "mailroute" / "__main__.py").read_text()
    assert main_module.index("startup.begin()") < main_module.index("from mailroute.cli")
