"""Issue 7: a backlog of N letters through the real ``mailroute run --once``, end to end.

A private Dovecot on loopback gets N generated letters (MULTIAPPEND over one connection,
not timed); then the real CLI runs in a subprocess with replies window "always" and SMTP
pointed at an aiosmtpd sink in this process. Timed from spawning the command to its exit:
fetch, save, parse, classify, store, file on the server, queue the reply and send it. The
peak RSS of the mailroute process is the kernel's count (``ru_maxrss``, see common.py). Afterwards
the database and the sink are checked: every letter must have a final state and every reply
due must have arrived, or the figure is worthless.

Phases come from the timestamps of mailroute's own log lines (start-up until the first
letter is fetched; intake until the last letters are filed; the outbox until the last reply
is sent). Dovecot runs with ``mail_fsync = never`` (the test harness default), so the IMAP
side is cheaper than on a production server.

    python bench/backlog.py --n 1000 --db sqlite
    python bench/backlog.py --n 10000 --db postgresql
    python bench/backlog.py --n 1000 --db sqlite --profile /tmp/backlog.html
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from common import (
    POSTGRES_SERVER,
    UNCAPPED,
    Source,
    Usage,
    add_source_arguments,
    machine_note,
    mailroute_command,
    process_cpu,
    run_measured,
    source_tree,
    terminate_on_sigterm,
)
from letters import LetterFactory, Mix

TARGETS = {"sqlite": 500.0, "postgresql": 300.0}  # letters/s end to end (issue 7)
APPEND_BATCH_BYTES = 16_000_000
LOG_LINE = re.compile(r'^ts=(\S+) .*?event=("[^"]*"|\S+)')


@dataclass
class Run:
    """What one backlog run measured and found."""

    n: int
    db: str
    append_seconds: float = 0.0
    wall: float = 0.0
    rss_mb: float = 0.0
    cpu_user: float = 0.0
    cpu_system: float = 0.0
    helpers: int = 0
    helpers_cpu: float = 0.0
    helpers_rss_mb: float = 0.0
    helpers_each: tuple[float, ...] = ()
    dovecot_cpu: float = 0.0  # Dovecot's processes during the run (a new IMAP session each)
    postgres_cpu: float = 0.0  # the PostgreSQL server's during the run (PostgreSQL runs)
    # the server's backends by the application_name of their connection (PostgreSQL runs)
    postgres_by_name: dict[str, tuple[float, int]] = field(default_factory=dict)
    sink_cpu: float = 0.0  # the bench process during the run: the SMTP sink receiving
    exit_code: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    mark_lag: list[float] = field(default_factory=list)  # s from a reply's 250 to its mark
    states: dict[str, int] = field(default_factory=dict)
    outbox: dict[str, int] = field(default_factory=dict)
    received: int = 0
    filed: dict[str, int] = field(default_factory=dict)
    summary: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.n / self.wall if self.wall else 0.0


# ------------------------------------------------------------------------------ servers


@contextlib.contextmanager
def database(kind: str, workdir: Path, number: int) -> Iterator[str]:
    """A fresh, empty database URL, dropped or deleted afterwards."""
    if kind == "sqlite":
        path = workdir / f"mailroute-{number}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    from sqlalchemy.engine import make_url
    from support.databases import fresh_postgres_database

    with fresh_postgres_database(make_url(POSTGRES_SERVER)) as url:
        yield url


def append_letters(account: Any, factory: LetterFactory, n: int, mix: Mix) -> float:
    """MULTIAPPEND the letters in ~16 MB batches over one connection; returns seconds."""
    started = time.perf_counter()
    with account.client() as imap:
        batch: list[bytes] = []
        size = 0
        for letter in factory.generate(n):
            mix.add(letter)
            batch.append(letter.raw)
            size += len(letter.raw)
            if size >= APPEND_BATCH_BYTES or len(batch) >= 500:
                imap.multiappend("INBOX", batch)
                batch, size = [], 0
        if batch:
            imap.multiappend("INBOX", batch)
    return time.perf_counter() - started


# --------------------------------------------------------------------------------- run


def upgrade(source: Source, config: Path) -> None:
    """``mailroute db upgrade``; its own words on failure."""
    done = subprocess.run(mailroute_command("--config", str(config), "db", "upgrade"),
                          env=source.env(), cwd=config.parent, capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise SystemExit(f"mailroute db upgrade failed ({done.returncode}):\n{done.stderr}")


def run_mailroute(source: Source, config: Path, log: Path, profile: Path | None) -> Usage:
    """``mailroute run --once`` with its wall time, exit code, CPU and peak RSS.

    Run from the config's directory: ``-m mailroute`` (and pyinstrument's ``-m``) put the
    current directory first on sys.path, so started from the repository root the
    snapshot measured was in fact the working tree."""
    command = mailroute_command("--config", str(config), "run", "--once",
                                profile=profile.resolve() if profile else None)
    return run_measured(command, source.env(), log, log.with_suffix(".usage.json"),
                        cwd=config.parent)


DOVECOT_PROCESSES = ("dovecot", "imap", "imap-login", "auth", "log", "config", "anvil",
                     "stats", "indexer", "indexer-worker")


def dovecot_cpu() -> float:
    """CPU seconds used so far by this machine's Dovecot processes (the bench's own),
    with the children the master reaped: the IMAP session mailroute used is gone."""
    return servers_cpu(DOVECOT_PROCESSES, reaper="dovecot")


def postgres_cpu() -> float:
    """CPU seconds used so far by this machine's PostgreSQL server (the postmaster, its
    backends and the backends it reaped, among them the sessions mailroute used)."""
    return servers_cpu(("postgres",), reaper="postgres")


class BackendSampler:
    """The CPU of the PostgreSQL backends serving one database, by the ``application_name``
    of their connection, sampled every ``every`` s while mailroute runs (a backend's last
    sample stands for its whole life: what it spent after it, at most ``every`` s before
    it ended, is left to "the rest"). The sampler's own connection is not counted in any
    name, only in the server's total."""

    NAME = "bench backend sampler"

    def __init__(self, url: str, every: float = 0.2) -> None:
        self.url = url.replace("postgresql+psycopg://", "postgresql://")
        self.every = every
        self.seen: dict[int, tuple[str, float]] = {}  # pid -> (name, CPU s at its last sample)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backend-sampler", daemon=True)

    def __enter__(self) -> BackendSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True, application_name=self.NAME) as conn:
            while not self._stop.is_set():
                rows = conn.execute(
                    "SELECT pid, application_name FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchall()
                for pid, name in rows:
                    try:
                        self.seen[pid] = (name or "(none)", process_cpu(pid))
                    except OSError:
                        continue
                self._stop.wait(self.every)

    def by_name(self) -> dict[str, tuple[float, int]]:
        """CPU s and backends, by application_name, largest first."""
        totals: dict[str, tuple[float, int]] = {}
        for name, cpu in self.seen.values():
            total, count = totals.get(name, (0.0, 0))
            totals[name] = (total + cpu, count + 1)
        return dict(sorted(totals.items(), key=lambda item: -item[1][0]))


def servers_cpu(names: tuple[str, ...], reaper: str) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                head, _, tail = f.read().rpartition(")")
            name = head.split("(", 1)[1]
            if name in names:
                fields = tail.split()
                total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
                if name == reaper:  # the master; other processes of its name reaped none
                    total += (int(fields[13]) + int(fields[14])) / tick  # reaped children
        except (OSError, IndexError, ValueError):
            continue
    return total


def own_cpu() -> float:
    """This process's CPU seconds: while mailroute runs, that is the SMTP sink's work."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


SENT_LINE = re.compile(r'^ts=(\S+) .*?msgid=("[^"]*"|\S+).*?event="reply sent"')


def mark_lag(log: Path, sink: Any) -> list[float]:
    """Seconds from the sink accepting each reply to its ``reply sent`` line, which is
    logged once the mark is committed: the moment a crash would send it again."""
    accepted = {mail.message["Message-ID"]: mail.received_at for mail in sink.received()}
    lags = []
    for line in log.read_text(errors="replace").splitlines():
        match = SENT_LINE.match(line)
        if match and (at := accepted.get(match.group(2).strip('"'))):
            logged = datetime.fromisoformat(match.group(1).replace("Z", "+00:00")).timestamp()
            lags.append(max(logged - at, 0.0))
    return sorted(lags)


def phases(log: Path, spawned: float) -> dict[str, float]:
    """Seconds per phase, from the ts= of mailroute's log lines (UTC, microseconds)."""
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        moment = datetime.fromisoformat(match.group(1).replace("Z", "+00:00")).timestamp()
        event = match.group(2).strip('"')
        first.setdefault(event, moment)
        last[event] = moment
    result: dict[str, float] = {}
    fetched = first.get("letter fetched")
    filed = last.get("letters filed")
    sent = last.get("reply sent")
    if fetched:
        result["start-up"] = fetched - spawned
    if fetched and filed:
        result["intake"] = filed - fetched
    if filed and sent:
        result["outbox"] = sent - filed
    return result


def check(run: Run, url: str, account: Any, sink: Any) -> None:
    """Every letter in a final state and filed; every reply due received by the sink."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            run.states = dict(connection.execute(
                text("SELECT state, count(*) FROM letters GROUP BY state")).all())
            run.outbox = dict(connection.execute(
                text("SELECT state, count(*) FROM outbox GROUP BY state")).all())
            unfiled = connection.execute(
                text("SELECT count(*) FROM letters WHERE filed_to IS NULL")).scalar_one()
            requests = connection.execute(text("SELECT count(*) FROM requests")).scalar_one()
    finally:
        engine.dispose()
    final = sum(run.states.get(state, 0) for state in
                ("processed", "follow_up", "ignored", "duplicate", "quarantined"))
    if final != run.n or sum(run.states.values()) != run.n:
        run.problems.append(f"letters in final states {final}, stored "
                            f"{sum(run.states.values())}, expected {run.n}: {run.states}")
    if run.states.get("processed", 0) != requests:
        run.problems.append(f"{requests} requests for {run.states.get('processed')} processed")
    if unfiled:
        run.problems.append(f"{unfiled} letters not filed")
    due = sum(run.outbox.values())
    run.received = len(sink.received())
    if run.outbox.get("sent", 0) != due or run.received != due:
        run.problems.append(f"replies due {due}, sent {run.outbox.get('sent', 0)}, "
                            f"received by the sink {run.received}")
    run.filed = {folder: len(account.uids(folder)) for folder in ("INBOX", "Processed")}
    with contextlib.suppress(Exception):
        run.filed["Quarantine"] = len(account.uids("Quarantine"))
    if run.filed["INBOX"]:
        run.problems.append(f"{run.filed['INBOX']} letters left in INBOX")
    if run.exit_code:
        run.problems.append(f"mailroute exited {run.exit_code}")


def one_run(args: argparse.Namespace, source: Source, dovecot: Any, sink: Any,
            workdir: Path, number: int) -> Run:
    from support.configs import write_config

    run = Run(args.n, args.db)
    account = dovecot.new_account()
    sink.clear()
    mix = Mix()
    run.append_seconds = append_letters(account, LetterFactory(args.seed), args.n, mix)
    if number == 1:
        print("# " + str(mix).replace("\n", "\n# "), flush=True)
    with database(args.db, workdir, number) as url:
        config = write_config(
            workdir / f"config-{number}.toml", account=account, sink=sink, database_url=url,
            window="always", extra=config_extra(args),
        )
        upgrade(source, config)
        log = workdir / f"mailroute-{number}.log"
        spawned = time.time()
        profile = args.profile
        if profile is not None and args.repeat > 1:
            profile = profile.with_stem(f"{profile.stem}-{number}")
        with contextlib.ExitStack() as sampling:
            sampler = (sampling.enter_context(BackendSampler(url))
                       if run.db == "postgresql" else None)
            before = dovecot_cpu(), own_cpu(), postgres_cpu()
            usage = run_mailroute(source, config, log, profile)
            run.dovecot_cpu, run.sink_cpu = dovecot_cpu() - before[0], own_cpu() - before[1]
            if run.db == "postgresql":
                run.postgres_cpu = postgres_cpu() - before[2]
        if sampler is not None:
            run.postgres_by_name = sampler.by_name()
        run.wall, run.exit_code, run.rss_mb = usage.wall, usage.code, usage.rss_mb
        run.cpu_user, run.cpu_system = usage.user, usage.system
        run.helpers, run.helpers_cpu, run.helpers_rss_mb = (
            usage.helpers, usage.helpers_cpu, usage.helpers_rss_mb)
        run.helpers_each = usage.helpers_each
        run.phases = phases(log, spawned)
        run.mark_lag = mark_lag(log, sink)
        lines = log.read_text(errors="replace").splitlines()
        run.summary = next((x for x in reversed(lines) if x.startswith("mailroute:")), "")
        check(run, url, account, sink)
        if args.keep_log:
            shutil.copy(log, args.keep_log)
    return run


def report(run: Run, label: str, journaled: bool = False) -> str:
    target = TARGETS[run.db]
    states = ", ".join(f"{k}={v}" for k, v in sorted(run.states.items()))
    phase_text = ", ".join(f"{k} {v:.2f} s" for k, v in run.phases.items())
    verdict = "met" if run.rate >= target else "NOT met"
    cpu = run.cpu_user + run.cpu_system + run.helpers_cpu
    whole = cpu + run.dovecot_cpu + run.sink_cpu + run.postgres_cpu
    server = f", PostgreSQL {run.postgres_cpu:.1f} s" if run.db == "postgresql" else ""
    each = " + ".join(f"{x:.1f}" for x in run.helpers_each)
    helper_text = (f" + {run.helpers_cpu:.1f} s in {run.helpers} worker process(es) ({each})"
                   if run.helpers else "")
    helper_rss = f" (workers {run.helpers_rss_mb:.0f} MB each at most)" if run.helpers else ""
    return (
        f"backlog n={run.n} db={run.db} [{label}]: {run.wall:.1f} s wall, "
        f"{run.rate:.0f} letters/s end to end (target >= {target:.0f}: {verdict}); "
        f"{phase_text}; mailroute CPU {run.cpu_user:.1f} s user + {run.cpu_system:.1f} s sys"
        f"{helper_text} ({run.n / cpu:.0f} letters per CPU-second, all processes); "
        f"peak RSS {run.rss_mb:.0f} MB{helper_rss}; letters {states}; "
        f"replies {run.outbox.get('sent', 0)} "
        f"sent / {sum(run.outbox.values())} due / {run.received} received; "
        f"check {'OK' if not run.problems else 'FAILED: ' + '; '.join(run.problems)}; "
        f"(APPEND {run.n / run.append_seconds:.0f} letters/s, not timed)\n"
        f"#   CPU of everything on the machine for this run: mailroute {cpu:.1f} s, Dovecot "
        f"{run.dovecot_cpu:.1f} s, SMTP sink {run.sink_cpu:.1f} s{server} = {whole:.1f} s, "
        f"{whole / run.n * 1000:.2f} ms a letter; {os.cpu_count()} cores could do at most "
        f"{run.n / whole * (os.cpu_count() or 1):.0f} letters/s at that cost"
        f"{lag_text(run.mark_lag, journaled and run.db == 'sqlite')}"
        f"{backends_text(run)}"
    )


def backends_text(run: Run) -> str:
    """The PostgreSQL server's CPU by the connections mailroute named, and the rest."""
    if not run.postgres_by_name:
        return ""
    named = sum(cpu for cpu, _count in run.postgres_by_name.values())
    parts = [f"{name} {cpu:.2f} s ({count} connection{'s' if count > 1 else ''})"
             for name, (cpu, count) in run.postgres_by_name.items()]
    return (f"\n#   PostgreSQL by connection (sampled): {', '.join(parts)}; the rest (the "
            f"server's own processes, the sampler, ends of backends) "
            f"{max(0.0, run.postgres_cpu - named):.2f} s")


def lag_text(lags: list[float], journaled: bool = False) -> str:
    """From the sink's 250 to the committed mark: the at-least-once window, unless the
    accepted reply is written down before it (``journaled``: SQLite, mail/accepted)."""
    if not lags:
        return ""
    def at(share: float) -> float:
        return lags[min(len(lags) - 1, int(share * len(lags)))] * 1000
    return (f"\n#   a reply's mark was committed {at(0.5):.1f} ms (median), {at(0.99):.1f} ms "
            f"(p99), {lags[-1] * 1000:.1f} ms (max) after the SMTP server took it "
            f"({len(lags)} replies): "
            + ("written down before it (mail/accepted): a crash then sends nothing again"
               if journaled else "a crash then sends it again"))


def config_extra(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The bench's own config keys, then each ``--set`` (which wins)."""
    extra: dict[str, dict[str, Any]] = {"logging": {"level": args.log_level},
                                        "replies": dict(UNCAPPED)}
    for item in args.set:
        name, _, value = item.partition("=")
        section, _, key = name.partition(".")
        if not (section and key and value):
            raise SystemExit(f"--set {item!r}: expected SECTION.KEY=VALUE")
        extra.setdefault(section, {})[key] = tomllib.loads(f"v = {value}")["v"]
    return extra


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--db", choices=sorted(TARGETS), default="sqlite")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=1, help="runs, each on fresh state")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a config key for this run (a what-if; repeatable), e.g. "
                             "mailbox.batch_size=200; VALUE is read as TOML")
    parser.add_argument("--profile", type=Path,
                        help="run mailroute under pyinstrument, report to this file")
    parser.add_argument("--keep-log", type=Path, help="copy mailroute's log here (the last run's)")
    add_source_arguments(parser)
    args = parser.parse_args()
    terminate_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="mailroute-bench-backlog-"))
    failed = False
    try:
        with contextlib.ExitStack() as stack:
            source = stack.enter_context(source_tree(args.live, rev=args.rev))
            source.activate()
            from support.dovecot import DovecotServer
            from support.smtp import SmtpSink

            sink = stack.enter_context(SmtpSink())
            dovecot = stack.enter_context(DovecotServer())
            print(f"# bench/backlog.py: {source.label}; {machine_note()}", flush=True)
            if args.profile:
                print("# under pyinstrument: timings include the profiler's overhead")
            for number in range(1, args.repeat + 1):
                run = one_run(args, source, dovecot, sink, workdir, number)
                failed |= bool(run.problems)
                print(report(run, source.label,
                             (source.root / "mailroute/mail/accepted.py").exists()),
                      flush=True)
                print(f"#   {run.summary}", flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
