"""Instructions the imports of start-up cost, counted by callgrind: figures noise cannot move.

A 2,000-letter ``run --once`` spends a sixth of its wall time before the first letter is
fetched, most of it importing; the workers' forkserver imports at the same time on the
other core. Their CPU time moves with the host by a quarter (bench/README), so this
counts instructions instead, as ``instructions.py`` does for a worker's letter, for:

- ``python``: the interpreter starting and stopping, importing nothing of ours (the floor);
- ``run``: what the ``run`` command imports before it reads its config (the command
  line, the daemon, the workers' module, the config check);
- ``forkserver``: what the forkserver preloads (``mailroute.pipeline.workers``).

The interpreter runs with ``-S`` and a ``sys.path`` of the measured tree and this
environment's site-packages, so the editable install cannot put another tree's modules
in; the modules are compiled first, so the counts do not include compiling them.

    python bench/startup.py
    python bench/startup.py --rev b1227a9
"""

from __future__ import annotations

import argparse
import compileall
import sys
import sysconfig
from pathlib import Path

from common import (
    Source,
    add_source_arguments,
    callgrind_instructions,
    machine_note,
    require_valgrind,
    source_tree,
    terminate_on_sigterm,
)

IMPORTS = {
    "python": "",
    "run": ("from mailroute import startup\nstartup.begin()\n"
            "import mailroute.cli, mailroute.cli.run, mailroute.pipeline.workers, "
            "mailroute.service.config_check, mailroute.service.daemon\n"),
    "forkserver": "import mailroute.pipeline.workers\n",
}
CHILD = """
import sys
sys.path[:0] = [{tree!r}, {site!r}]
{imports}
if {check}:
    import mailroute
    assert mailroute.__file__.startswith({tree!r}), mailroute.__file__
"""


def count(source: Source, what: str) -> int:
    """Instructions a child interpreter executed importing ``what``."""
    code = CHILD.format(tree=str(source.root), site=sysconfig.get_paths()["purelib"],
                        imports=IMPORTS[what], check=bool(IMPORTS[what]))
    return callgrind_instructions(["-S", "-c", code],
                                  {"PYTHONHASHSEED": "0", "PATH": "/usr/bin:/bin"},
                                  source.root, what)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_source_arguments(parser)
    args = parser.parse_args()
    require_valgrind()
    terminate_on_sigterm()
    with source_tree(args.live, args.rev) as source:
        compileall.compile_dir(str(Path(source.root) / "mailroute"), quiet=1)
        counts = {what: count(source, what) for what in IMPORTS}
    floor = counts["python"]
    print(f"# bench/startup.py: {source.label}; {machine_note()}")
    print(f"start-up instructions: run's imports {(counts['run'] - floor) / 1e6:.0f} M, "
          f"the forkserver's preload {(counts['forkserver'] - floor) / 1e6:.0f} M "
          f"(beyond the interpreter's own {floor / 1e6:.0f} M)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
