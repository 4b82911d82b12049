"""Issue 16, years of mail: bytes stored per letter, growth per year, and what retention saves.

N generated letters (bench/letters.py: real templates, ~15 % with attachments, some
machine mail, follow-ups and duplicates) go through the real `mailroute run --once`
(Maildir in, replies queued but not sent) into a fresh database. Then:

- the database's size per letter, split by table (SQLite: ``dbstat``; PostgreSQL:
  ``pg_total_relation_size``), and the growth per year at ``--per-day`` letters;
- the same after `mailroute retention run` with every letter past ``raw_days``
  (raw bytes, attachment contents and raw replies purged; SQLite VACUUMed).

    .venv/bin/python bench/storage.py --n 2000 [--db sqlite|postgresql] [--per-day 500]

Prints figures only; exits 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from common import machine_note, mailroute_command, source_tree
from letters import generate

PG_URL = os.environ.get("MAILROUTE_TEST_DATABASE_URL",
                        "postgresql+psycopg://root@127.0.0.1:5432/test")
TABLES = ("letter_bytes", "blobs", "outbox", "letters", "requests", "request_events",
          "attachments")


def _config(workdir: Path, box: Path, url: str) -> Path:
    path = workdir / "config.toml"
    path.write_text(
        f'[mailbox]\nmaildir = "{box}"\naddress = "servicedesk@example.com"\n'
        f'[database]\nurl = "{url}"\n'
        '[replies]\nwindow = "always"\n'
        '[smtp]\nhost = "127.0.0.1"\nport = 9\nsecurity = "none"\n'
        '[retention]\nraw_days = 1\n'
    )
    return path


def _database(kind: str, workdir: Path) -> tuple[str, str | None]:
    if kind == "sqlite":
        return f"sqlite:///{workdir / 'mailroute.db'}", None
    name = f"mailroute_storage_{os.getpid()}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"drop database if exists {name}"))
        conn.execute(sa.text(f"create database {name}"))
    admin.dispose()
    return PG_URL.rsplit("/", 1)[0] + f"/{name}", name


def _sizes(url: str) -> dict[str, int]:
    """Bytes per table (indexes included) and in all."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            rows = db.execute("select name, sum(pgsize) from dbstat group by name").fetchall()
            total = os.path.getsize(path)
        index_of = _sqlite_index_tables(path)
        sizes = dict.fromkeys(TABLES, 0)
        for name, size in rows:
            table = index_of.get(name, name)
            if table in sizes:
                sizes[table] += size
        return {**sizes, "total": total}
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        sizes = {t: int(conn.execute(sa.text(f"select pg_total_relation_size('{t}')")).scalar()
                        or 0) for t in TABLES}
        sizes["total"] = int(conn.execute(sa.text(
            "select pg_database_size(current_database())")).scalar() or 0)
    engine.dispose()
    return sizes


def _sqlite_index_tables(path: str) -> dict[str, str]:
    with sqlite3.connect(path) as db:
        return {name: table for name, table in db.execute(
            "select name, tbl_name from sqlite_master where type = 'index'")}


def _vacuum(url: str) -> None:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            db.execute("VACUUM")
        return
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text("VACUUM FULL"))
    engine.dispose()


def _report(label: str, sizes: dict[str, int], letters: int, per_day: int) -> None:
    per_letter = sizes["total"] / letters
    parts = ", ".join(f"{t} {sizes[t] / letters / 1024:.1f}" for t in TABLES if sizes[t])
    print(f"{label}: {per_letter / 1024:.1f} KiB per letter "
          f"({parts} KiB); at {per_day} letters a day: "
          f"{per_letter * per_day * 365 / 2**30:.2f} GiB a year")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--per-day", type=int, default=500)
    parser.add_argument("--live", action="store_true", help="measure the working tree")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mailroute-storage-"))
    pg_name = None
    try:
        box = workdir / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (box / sub).mkdir(parents=True)
        raw_bytes = 0
        for number, made in enumerate(generate(args.n)):
            (box / "new" / f"{number:07d}.bench").write_bytes(made.raw)
            raw_bytes += len(made.raw)
        url, pg_name = _database(args.db, workdir)
        config = _config(workdir, box, url)
        with source_tree(args.live) as source:
            env = {**os.environ, "PYTHONPATH": str(source.root)}
            print(f"mailroute {source.label}; {args.db}; {machine_note()}")
            run = lambda *a: subprocess.run(  # noqa: E731
                mailroute_command("--config", str(config), *a), env=env, check=True,
                capture_output=True, text=True)
            run("db", "upgrade")
            started = time.monotonic()
            subprocess.run(mailroute_command("--config", str(config), "run", "--once"),
                           env=env, check=False, capture_output=True)  # SMTP is away
            print(f"{args.n} letters ({raw_bytes / args.n / 1024:.1f} KiB raw on average) "
                  f"stored in {time.monotonic() - started:.1f} s")
            _report("stored", _sizes(url), args.n, args.per_day)
            engine = sa.create_engine(url)  # every letter and reply 400 days old
            age = ("received_at - interval '400 days'" if args.db == "postgresql"
                   else "datetime(received_at, '-400 days')")
            with engine.begin() as conn:
                conn.execute(sa.text(f"update letters set received_at = {age}"))
                conn.execute(sa.text(f"update outbox set state = 'sent', created_at = "
                                     f"{age.replace('received_at', 'created_at')}"))
            engine.dispose()
            purged = run("retention", "run").stdout.strip()
            _vacuum(url)
            print(f"retention: {purged}")
            _report("after retention", _sizes(url), args.n, args.per_day)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if pg_name:
            admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f"drop database if exists {pg_name}"))
            admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
