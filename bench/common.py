"""Shared plumbing for the benchmark scripts: which mailroute is measured, RSS, statistics.

Other people edit ``mailroute/`` in this working tree while benchmarks run, and the package
is installed editable, so by default every script measures a snapshot of the last commit
(``git archive HEAD`` into a temporary directory, laid out and byte-compiled like an installed
package) and prints its hash. ``--live`` measures the working tree as it is instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
SHARED_CORPUS = ROOT.parent / "shared" / "corpus" / "dev"
POSTGRES_SERVER = os.environ.get(
    "MAILROUTE_TEST_DATABASE_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)


@dataclass(frozen=True)
class Source:
    """A mailroute source tree to import from, and how to name it in reports."""

    root: Path
    label: str

    def env(self) -> dict[str, str]:
        """Environment for a subprocess that must import this tree, not the editable one."""
        paths = [str(self.root), str(self.root / "tests")]
        old = os.environ.get("PYTHONPATH")
        return os.environ | {"PYTHONPATH": os.pathsep.join([*paths, *([old] if old else [])])}

    def activate(self) -> None:
        """Import mailroute and the test harness from this tree in the current process,
        and in the processes it starts: Python 3.11's forkserver ignores the sys.path it
        is handed and imports its preloaded modules from PYTHONPATH and the editable
        install, so workers ran the working tree's code beside a snapshot's daemon."""
        for path in (self.root / "tests", self.root):
            sys.path.insert(0, str(path))
        os.environ["PYTHONPATH"] = self.env()["PYTHONPATH"]


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


@contextlib.contextmanager
def source_tree(live: bool = False, rev: str = "HEAD") -> Iterator[Source]:
    """The tree to measure: a snapshot of ``rev`` (deleted afterwards), or the working tree."""
    # Name the last commit that changed the application, not a bench/ commit after it.
    commit = _git("log", "-1", "--format=%h", rev, "--", "mailroute", "migrations")
    if live:
        dirty = bool(_git("status", "--porcelain", "--", "mailroute", "migrations"))
        yield Source(ROOT, f"working tree at {commit}{' + uncommitted edits' if dirty else ''}")
        return
    directory = Path(tempfile.mkdtemp(prefix="mailroute-bench-src-"))
    try:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", rev, "mailroute", "migrations", "tests/support"],
            cwd=ROOT, capture_output=True, check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
        # setuptools maps the top-level migrations/ to mailroute.migrations when installing.
        shutil.copytree(directory / "migrations", directory / "mailroute" / "migrations")
        # pip compiles an installed package's modules; without this every timed run compiled
        # them all again (~0.1 s of each start here, where PYTHONDONTWRITEBYTECODE is set).
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(directory / "mailroute")],
                       check=True, stdout=subprocess.DEVNULL)
        yield Source(directory, f"commit {commit}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def mailroute_command(*args: str, profile: Path | None = None) -> list[str]:
    """The real CLI, imported from whatever PYTHONPATH says (no console-script shim).

    With ``profile``, it runs under pyinstrument (a dev tool: ``pip install pyinstrument``
    into the venv), which writes its report there (.html, .txt or .json by extension),
    or under cProfile for a ``.cprofile`` file (read it with ``bench/cprofile_by_package.py``).
    """
    if profile is None:
        return [sys.executable, "-m", "mailroute", *args]
    if profile.suffix == ".cprofile":  # every call of the main thread, in its own CPU time
        return [sys.executable, "-c", _CPROFILE, str(profile), *args]
    renderer = {".html": "html", ".json": "json", ".pstats": "pstats"}.get(
        profile.suffix, "text")
    return [sys.executable, "-m", "pyinstrument", "-r", renderer, "-o", str(profile),
            "-p", "show_all=false", "-m", "mailroute", *args]


# cProfile timed by the main thread's own CPU clock: a call that gives up the interpreter
# lock (a commit, a socket) is not charged for the time another thread then held it.
_CPROFILE = """
import cProfile, runpy, sys, time
out, sys.argv = sys.argv[1], ["mailroute", *sys.argv[2:]]
profiler = cProfile.Profile(time.thread_time)
try:
    profiler.runcall(runpy.run_module, "mailroute", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    profiler.dump_stats(out)
"""


# Why a wrapper: Python spawns children with vfork, and Linux carries the parent's RSS
# high-water mark into the child's ru_maxrss across exec. Measured straight from a bench
# process holding thousands of letters, mailroute would "use" the bench's memory. Spawned
# from this small wrapper instead, its ru_maxrss (RUSAGE_CHILDREN here) is its own.
_MEASURE = """
import json, os, resource, subprocess, sys, threading, time
report, command = sys.argv[1], sys.argv[2:]
helpers = {}  # pid -> (CPU seconds, peak RSS KiB) of the command's own children


def watch(child, done):
    # The command's worker processes (a forkserver and its children) are not always
    # reaped by it, so RUSAGE_CHILDREN may miss them: sample them from /proc instead.
    tick = os.sysconf("SC_CLK_TCK")
    while not done.wait(0.1):
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in (os.getpid(), child):
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[3]) != os.getsid(0):  # not of the command's session
                    continue
                with open(f"/proc/{entry}/status") as f:
                    hwm = next((int(line.split()[1]) for line in f if line.startswith("VmHWM")), 0)
            except (OSError, StopIteration, ValueError, IndexError):
                continue
            helpers[int(entry)] = ((int(fields[11]) + int(fields[12])) / tick, hwm)


started = time.perf_counter()
process = subprocess.Popen(command)
done = threading.Event()
watcher = threading.Thread(target=watch, args=(process.pid, done), daemon=True)
watcher.start()
code = process.wait()
done.set()
watcher.join()
wall = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(report, "w") as out:
    json.dump({"code": code, "wall": wall, "maxrss_kb": usage.ru_maxrss,
               "user": usage.ru_utime, "system": usage.ru_stime,
               "helpers_cpu": sum(cpu for cpu, _rss in helpers.values()),
               "helpers_maxrss_kb": max((rss for _cpu, rss in helpers.values()), default=0),
               "helpers": len(helpers),
               "helpers_each": sorted((cpu for cpu, _rss in helpers.values()), reverse=True)},
              out)
sys.exit(code)
"""


@dataclass(frozen=True)
class Usage:
    """What the kernel counted for one measured command."""

    code: int
    wall: float
    rss_mb: float
    user: float
    system: float
    helpers: int = 0  # worker processes of the command (understanding a backlog)
    helpers_cpu: float = 0.0  # their CPU seconds, sampled every 0.1 s (the last tick missed)
    helpers_rss_mb: float = 0.0  # the largest peak RSS among them
    helpers_each: tuple[float, ...] = ()  # each one's CPU seconds, largest first


def run_measured(command: Sequence[str], env: dict[str, str], output: Path,
                 report: Path, cwd: Path | None = None) -> Usage:
    """Run ``command`` (stdout and stderr to ``output``) with its own peak RSS and CPU.

    The wrapper gets a session of its own, so an interrupt can end it with its child.
    """
    import json

    with output.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-c", _MEASURE, str(report.resolve()),
                                    *command],
                                   stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
                                   env=env, cwd=cwd, start_new_session=True)
        try:
            process.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    data = json.loads(report.read_text())
    return Usage(data["code"], data["wall"], data["maxrss_kb"] / 1024, data["user"],
                 data["system"], data["helpers"], data["helpers_cpu"],
                 data["helpers_maxrss_kb"] / 1024, tuple(data.get("helpers_each", ())))


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--rev`` and ``--live``: which tree :func:`source_tree` gives the script."""
    parser.add_argument("--rev", default="HEAD", help="the commit to measure (a snapshot of it)")
    parser.add_argument("--live", action="store_true",
                        help="measure the working tree instead of a snapshot of HEAD")


def outbox_rows(start: int, count: int, at: datetime, *, state: str = "pending",
                domains: int = 150, body_lines: int = 40) -> list[dict[str, object]]:
    """Rows of the outbox table (for one ``insert(OutboxItem)``): acknowledgements created
    and due ``at``, one recipient each, spread over ``domains`` domains, with a body of
    ``body_lines`` lines of 11 bytes (a reply of ours is 2-3 KB: 250 lines)."""
    rows: list[dict[str, object]] = []
    for number in range(start, start + count):
        recipient = f"c{number}@dom{number % domains}.example"
        raw = (f"From: ServiceDesk <servicedesk@example.com>\r\nTo: {recipient}\r\n"
               f"Subject: [SD-{number:06d}] test\r\nMessage-ID: <r{number}@example.com>\r\n"
               "\r\n" + "body line\r\n" * body_lines).encode()
        rows.append({"kind": "acknowledgement", "sender": "servicedesk@example.com",
                     "recipient": recipient, "counted_as": recipient,
                     "recipient_domain": recipient.partition("@")[2],
                     "message_id": f"<r{number}@example.com>", "subject": "s", "raw": raw,
                     "state": state, "attempts": 0 if state == "pending" else 1,
                     "not_before": at, "created_at": at})
    return rows


def terminate_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so ``finally`` blocks clean up as on Ctrl-C."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def process_cpu(pid: int) -> float:
    """CPU seconds (user and system) a running process has spent, from ``/proc``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb() -> float:
    """This process's peak resident set (ru_maxrss is in KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident set now, from /proc (0 where there is none)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def spread(values: Sequence[float]) -> str:
    """Best, median and worst of repeated measurements, so variance is visible."""
    if len(values) == 1:
        return f"{values[0]:.1f}"
    middle = statistics.median(values)
    return f"best {max(values):.1f} / median {middle:.1f} / worst {min(values):.1f}"


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: every figure was really observed)."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def machine_note() -> str:
    """CPU count, model and load, for the record next to every figure."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPU ({model}), load {load}, Python {sys.version.split()[0]}"


# A desk that expects a backlog of thousands answers each letter: the reply caps (30 a
# domain, 300 for the desk, an hour) are for floods, and would make a benchmark measure
# suppressed replies instead of sent ones.
UNCAPPED = {"desk_hourly_limit": 1_000_000, "per_domain_limit": 1_000_000}


_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")
_SINK = """
import sys
from support.smtp import SmtpSink
sink = SmtpSink()
sink.start()
print(sink.port, flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def smtp_sink_process(env: dict[str, str]) -> Iterator[tuple[int, int]]:
    """(port, pid) of an aiosmtpd sink in a process of its own: its CPU is not the
    measured process's, and ``process_cpu(pid)`` reads it."""
    sink = subprocess.Popen([sys.executable, "-c", _SINK], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert sink.stdout is not None
        yield int(sink.stdout.readline()), sink.pid
    finally:
        sink.kill()
        sink.wait()


def require_valgrind() -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind not found: install Debian's valgrind package")


def callgrind_instructions(arguments: Sequence[str], env: dict[str, str], cwd: Path,
                           what: str) -> int:
    """Instructions ``python arguments...`` executed, by callgrind's own summary."""
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, *arguments],
        env=env, cwd=cwd, capture_output=True, text=True, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode or found is None:
        raise SystemExit(f"callgrind run ({what}) failed ({done.returncode}):\n"
                         f"{done.stderr[-2000:]}")
    return int(found.group(1))
