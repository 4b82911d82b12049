"""Where a backlog's time goes: SQL statements, commits and Python, counted per letter.

pyinstrument (``bench/backlog.py --profile``) shows which functions are slow; this shows
what the database is asked to do. It runs the same ``Daemon.run_once`` the CLI runs, but
in this process, with SQLAlchemy's cursor events and the dialect's commit timed: how many
statements and commits each letter costs, how long they take in the driver (SQLite's fsync
of the WAL, PostgreSQL's round trip and WAL flush), and what is left for Python. With
``--pyinstrument FILE`` the same run is also sampled (.html or .txt). With ``--timers``
the main thread's CPU (``time.thread_time``) is summed around the functions of the hot
path (``TIMED``, or ``--time module:Qualified.name``): samplers charged SQLAlchemy-heavy
calls up to twice what they cost, and these timers are what the figures in README use.

    python bench/dbprofile.py --n 1000 --db sqlite
    python bench/dbprofile.py --n 2000 --db sqlite --timers
    python bench/dbprofile.py --n 1000 --db postgresql --pyinstrument /tmp/pg.html
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backlog import append_letters, database, upgrade
from common import UNCAPPED, machine_note, source_tree, terminate_on_sigterm
from letters import LetterFactory, Mix

WORDS = re.compile(r"\s+")
# What --timers wraps: the daemon's hot path, outer parts first (each figure is inclusive).
TIMED = (
    "mailroute.pipeline.intake:_Pass._fetch",
    "mailroute.pipeline.intake:_Pass._save_batch",
    "mailroute.store.repository:fingerprint",
    "mailroute.pipeline.decide:_decide_batch",
    "mailroute.pipeline.decide:_lookups_for",
    "mailroute.pipeline.decide:_decide",
    "mailroute.pipeline.decide:_Steps.new_request",
    "mailroute.pipeline.decide:_Steps.follow_up",
    "mailroute.pipeline.decide:_draft",
    "mailroute.store.repository:ReplyBuffer.write",
    "sqlalchemy.orm.session:Session.flush",
    "sqlalchemy.orm.session:Session.commit",
    "mailroute.pipeline.decide:_log",
    "mailroute.pipeline.intake:_Pass._process_and_file",
    "mailroute.service.daemon:Daemon.send_due",
    "mailroute.mail.outbox:_claim",
    "mailroute.mail.outbox:_update",
    "mailroute.mail.outbox:_renew",
    "structlog._native:BoundLoggerFilteringAtInfo.info",
    "structlog._native:BoundLoggerFilteringAtWarning.info",
)


@dataclass
class Timers:
    """Main-thread CPU summed around named functions (inclusive; recursion counted once)."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _undo: list[Callable[[], None]] = field(default_factory=list)

    def wrap(self, target: str) -> bool:
        import importlib
        import threading

        module_name, _, qualname = target.partition(":")
        owner: Any = importlib.import_module(module_name)
        *path, name = qualname.split(".")
        for part in path:
            owner = getattr(owner, part, None)
            if owner is None:
                return False
        original = (owner.__dict__.get(name) if isinstance(owner, type)
                    else getattr(owner, name, None))
        if original is None or isinstance(original, (staticmethod, classmethod)):
            return False
        main = threading.main_thread()
        depth = [0]

        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not main or depth[0]:
                return original(*args, **kwargs)
            depth[0] += 1
            started = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[target] += time.thread_time() - started
                self.calls[target] += 1
                depth[0] -= 1

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, original))
        return True

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()

    def report(self, letters: int) -> list[str]:
        lines = [f"{'main thread CPU around':60} {'calls':>7} {'total s':>8} {'ms/letter':>9}"]
        for target, seconds in self.seconds.items():
            lines.append(f"{target:60} {self.calls[target]:7} {seconds:8.2f} "
                         f"{seconds / letters * 1e3:9.3f}")
        return lines


@dataclass
class Ledger:
    """Driver time per kind of statement, and commits."""

    count: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    commits: int = 0
    commit_seconds: float = 0.0
    _started: dict[int, float] = field(default_factory=dict)

    def kind(self, statement: str) -> str:
        """``SELECT letters``, ``INSERT outbox``, ``UPDATE counters``, ``SAVEPOINT`` ..."""
        words = WORDS.split(statement.strip(), 12)
        verb = words[0].upper()
        table = ""
        if verb == "SELECT":
            upper = [w.upper() for w in words]
            table = words[upper.index("FROM") + 1] if "FROM" in upper else ""
            if not table:
                match = re.search(r"\bFROM\s+(\w+)", statement, re.IGNORECASE)
                table = match.group(1) if match else ""
        elif verb in ("INSERT", "DELETE"):
            table = words[2] if len(words) > 2 else ""
        elif verb == "UPDATE":
            table = words[1] if len(words) > 1 else ""
        return f"{verb} {table}".strip()

    def install(self, engine: Any) -> None:
        from sqlalchemy import event

        @event.listens_for(engine, "before_cursor_execute")
        def before(conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
            self._started[id(cursor)] = time.perf_counter()

        @event.listens_for(engine, "after_cursor_execute")
        def after(conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
            started = self._started.pop(id(cursor), None)
            if started is not None:
                kind = self.kind(statement)
                self.count[kind] += 1
                self.seconds[kind] += time.perf_counter() - started

        dialect = engine.dialect
        original: Callable[[Any], None] = dialect.do_commit

        def do_commit(dbapi_connection: Any) -> None:
            started = time.perf_counter()
            try:
                original(dbapi_connection)
            finally:
                self.commits += 1
                self.commit_seconds += time.perf_counter() - started

        dialect.do_commit = do_commit

    def report(self, n: int, wall: float) -> Iterator[str]:
        statements = sum(self.count.values())
        driver = sum(self.seconds.values())
        rest = wall - driver - self.commit_seconds
        yield (f"{statements} statements ({statements / n:.1f} per letter) taking {driver:.1f} s "
               f"in the driver; {self.commits} commits ({self.commits / n:.1f} per letter) "
               f"taking {self.commit_seconds:.1f} s; the rest, {rest:.1f} s of {wall:.1f} s, "
               f"is Python (mailroute, SQLAlchemy, imapclient, aiosmtplib, "
               "logging) and waiting for Dovecot and the SMTP sink")
        yield f"{'statement':28} {'count':>7} {'per letter':>10} {'total s':>8} {'mean ms':>8}"
        for kind in sorted(self.seconds, key=self.seconds.__getitem__, reverse=True)[:18]:
            count, seconds = self.count[kind], self.seconds[kind]
            yield (f"{kind:28} {count:7d} {count / n:10.2f} {seconds:8.2f} "
                   f"{seconds / count * 1000:8.3f}")


def module_of(path: str) -> str:
    """``sqlalchemy``, ``email``, ``mailroute/core/classify.py`` ...: who spends the time."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/mailroute/" in path:
        return "mailroute/" + path.rsplit("/mailroute/", 1)[1]
    if "/lib/python3" in path:
        rest = path.split("/lib/python3", 1)[1].split("/", 2)
        return rest[1].removesuffix(".py") if len(rest) > 1 else path
    return path or "<built-in>"


def self_time_by_module(root: Any, n: int) -> Iterator[str]:
    """pyinstrument's samples summed by where the code lives (self time, not inclusive).

    Time in C functions (a driver's execute, a socket read, a hash) is charged to the C
    function and the Python module that called it, which says more than "<built-in>".
    """
    totals: dict[str, float] = defaultdict(float)
    stack = [root]
    while stack:
        frame = stack.pop()
        stack.extend(frame.children)
        own = frame.time - sum(child.time for child in frame.children)
        if own <= 0:
            continue
        caller = frame.parent
        while caller is not None and (not caller.file_path
                                      or caller.file_path.startswith("<")):
            caller = caller.parent
        where = module_of(caller.file_path) if caller is not None else "?"
        path = frame.file_path or ""
        if frame.function.startswith("["):  # pyinstrument's [self]: its parent's own time
            name = where
        elif not path or path.startswith("<"):
            name = f"{frame.function} (C, from {where})"
        else:
            name = module_of(path)
        totals[name] += own
    whole = sum(totals.values()) or 1
    yield f"{'self time by module':56} {'s':>7} {'share':>6} {'ms/letter':>9}"
    for name, seconds in sorted(totals.items(), key=lambda x: x[1], reverse=True)[:30]:
        yield f"{name[:56]:56} {seconds:7.2f} {seconds / whole:6.1%} {seconds / n * 1000:9.2f}"


def library_time_by_caller(root: Any, n: int, library: str = "sqlalchemy") -> Iterator[str]:
    """Inclusive time spent inside ``library``, charged to the mailroute function that
    called into it: where moving from the ORM to Core statements would pay."""
    totals: dict[str, float] = defaultdict(float)
    stack: list[tuple[Any, str]] = [(root, "?")]
    while stack:
        frame, caller = stack.pop()
        path = frame.file_path or ""
        if f"/{library}/" in path:
            totals[caller] += frame.time  # the whole call, whatever it called below
            continue
        if "/mailroute/" in path:
            caller = f"{module_of(path)}:{frame.function}"
        stack.extend((child, caller) for child in frame.children)
    whole = sum(totals.values())
    yield f"{library + ' time by the mailroute function calling it':56} {'s':>7} {'ms/letter':>9}"
    for name, seconds in sorted(totals.items(), key=lambda x: x[1], reverse=True)[:20]:
        yield f"{name[:56]:56} {seconds:7.2f} {seconds / n * 1000:9.2f}"
    yield f"{'(all)':56} {whole:7.2f} {whole / n * 1000:9.2f}"


def apply_what_ifs(args: argparse.Namespace, store: Any) -> str:
    """Headroom experiments done from outside: nothing under mailroute/ is edited."""
    done = []
    if args.sqlite_synchronous and store.is_sqlite:
        from sqlalchemy import event

        def pragma(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute(f"PRAGMA synchronous={args.sqlite_synchronous}")

        event.listen(store.engine, "connect", pragma)
        done.append(f"SQLite synchronous={args.sqlite_synchronous}")
    if args.cache_ssl_context:
        import functools

        import mailroute.mail.outbox

        real = mailroute.mail.outbox.ssl.create_default_context
        cached = functools.lru_cache(maxsize=8)(lambda cafile=None: real(cafile=cafile))

        class _Ssl:
            create_default_context = staticmethod(cached)
            CERT_NONE = mailroute.mail.outbox.ssl.CERT_NONE

        mailroute.mail.outbox.ssl = _Ssl  # type: ignore[assignment]
        done.append("one SSL context per process")
    if args.log_level != "info":
        done.append(f"log level {args.log_level}")
    return ", ".join(done)


def measure(args: argparse.Namespace, source: Any, workdir: Path) -> None:
    from support.configs import write_config
    from support.dovecot import DovecotServer
    from support.smtp import SmtpSink

    from mailroute import config as config_module
    from mailroute import logs
    from mailroute.service.daemon import Daemon
    from mailroute.store import Store

    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(SmtpSink())
        dovecot = stack.enter_context(DovecotServer())
        account = dovecot.new_account()
        mix = Mix()
        append_letters(account, LetterFactory(args.seed), args.n, mix)
        url = stack.enter_context(database(args.db, workdir, 1))
        path = write_config(workdir / "config.toml", account=account, sink=sink,
                            database_url=url, window="always",
                            extra={"logging": {"level": args.log_level}, "replies": UNCAPPED})
        upgrade(source, path)
        config = config_module.load(str(path))
        log_file = stack.enter_context((workdir / "mailroute.log").open("w"))
        logs.configure(config.logging.level, config.logging.format, stream=log_file)
        store = Store(config.database.url)
        ledger = Ledger()
        ledger.install(store.engine)
        what_if = apply_what_ifs(args, store)
        daemon = Daemon(config, store, config_path=str(path))
        timers = Timers()
        for target in (args.time or (TIMED if args.timers else ())):
            if not timers.wrap(target):
                print(f"# --timers: no function {target}", file=sys.stderr)
        profiler = None
        if args.pyinstrument:
            from pyinstrument import Profiler

            profiler = Profiler()
            profiler.start()
        started = time.perf_counter()
        cpu = time.process_time()
        result = daemon.run_once()
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu
        timers.undo()
        if profiler is not None:
            profiler.stop()
            output = (profiler.output_html() if args.pyinstrument.suffix == ".html"
                      else profiler.output_text(unicode=True, color=False, show_all=False))
            args.pyinstrument.write_text(output)
            session_root = profiler.last_session.root_frame() if profiler.last_session else None
        store.dispose()
        log_lines = sum(1 for _ in (workdir / "mailroute.log").open())
        print(f"# bench/dbprofile.py: {source.label}; {machine_note()}")
        print(f"# n={args.n} db={args.db}; in-process Daemon.run_once: {wall:.1f} s wall, "
              f"{cpu:.1f} s CPU ({args.n / wall:.0f} letters/s); fetched "
              f"{result.drain.fetched}, replies sent {len(result.delivery.sent)}; "
              f"{log_lines} log lines ({log_lines / args.n:.1f} per letter)"
              + ("; under pyinstrument" if profiler else "")
              + (f"; WHAT-IF (not mailroute's behaviour): {what_if}" if what_if else ""))
        for line in ledger.report(args.n, wall):
            print(line)
        if timers.seconds:
            for line in timers.report(args.n):
                print(line)
        if profiler is not None and session_root is not None:
            for line in self_time_by_module(session_root, args.n):
                print(line)
            for line in library_time_by_caller(session_root, args.n):
                print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pyinstrument", type=Path, help="also sample; report to this file")
    parser.add_argument("--timers", action="store_true",
                        help="main-thread CPU around the hot path's functions (TIMED)")
    parser.add_argument("--time", action="append", metavar="MODULE:NAME",
                        help="time this function instead (repeatable)")
    what_if = parser.add_argument_group("what-if experiments (headroom; mailroute unchanged)")
    what_if.add_argument("--sqlite-synchronous", choices=["OFF", "NORMAL", "FULL"],
                         help="PRAGMA synchronous on every SQLite connection")
    what_if.add_argument("--cache-ssl-context", action="store_true",
                         help="build the SMTP SSL context once, not per connection")
    what_if.add_argument("--log-level", default="info", choices=["info", "warning"])
    parser.add_argument("--live", action="store_true",
                        help="measure the working tree instead of a snapshot of HEAD")
    args = parser.parse_args()
    terminate_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="mailroute-bench-profile-"))
    try:
        with source_tree(args.live) as source:
            source.activate()
            measure(args, source, workdir)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
