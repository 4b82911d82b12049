"""`mailroute backup` copies the SQLite database while the daemon writes to it, and the
copy is a database a daemon can be restored onto: it opens, is whole, and `status`
calls it healthy."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from email.message import EmailMessage
from pathlib import Path

from support.configs import write_config
from support.maildir import deliver, empty_maildir
from support.smtp import SmtpSink

MAILROUTE = [sys.executable, "-m", "mailroute"]
LETTERS = 150


def mailroute(config: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MAILROUTE, "--config", str(config), *arguments],
                          capture_output=True, text=True, timeout=120, check=False)


def letter(n: int) -> bytes:
    message = EmailMessage()
    message["From"] = f"user{n}@romashka.example"
    message["To"] = "servicedesk@example.com"
    message["Subject"] = f"Ошибка в отчёте {n}"
    message["Message-ID"] = f"<backup{n}@romashka.example>"
    message.set_content(f"Отчёт не формируется.\n\nООО «Ромашка»\nрег. номер {800100200 + n}\n")
    return bytes(message)


def requests_in(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return int(db.execute("select count(*) from requests").fetchone()[0])


def test_a_backup_taken_under_a_running_daemon_restores_healthy(
    tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    box = empty_maildir(tmp_path)
    database = tmp_path / "mailroute.db"
    config = write_config(tmp_path / "config.toml", account=None, sink=smtp_sink,
                          database_url=f"sqlite:///{database}", maildir=box)
    assert mailroute(config, "db", "upgrade").returncode == 0

    def arrive() -> None:  # letters keep arriving while the copies are taken
        for n in range(LETTERS):
            deliver(box, f"{n}.host", letter(n))
            time.sleep(0.03)

    log = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen([*MAILROUTE, "--config", str(config), "run"],
                              stdout=subprocess.DEVNULL, stderr=log)
    copies = []
    try:
        arriving = threading.Thread(target=arrive)
        arriving.start()
        deadline = time.monotonic() + 60
        while requests_in(database) == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        while arriving.is_alive() or len(copies) < 2:  # copies while the daemon writes
            copy = tmp_path / f"copy{len(copies)}.db"
            taken = mailroute(config, "backup", str(copy))
            assert taken.returncode == 0, taken.stderr
            assert "integrity ok" in taken.stdout
            copies.append(copy)
            time.sleep(0.3)
        arriving.join()
        while requests_in(database) < LETTERS and time.monotonic() < deadline:
            time.sleep(0.2)
        assert requests_in(database) == LETTERS
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        log.close()

    figures = [requests_in(copy) for copy in copies]  # each a whole database
    assert figures == sorted(figures) and figures[-1] <= LETTERS
    assert any(0 < figure < LETTERS for figure in figures), figures  # taken mid-drain
    assert not list(tmp_path.glob(".*.partial"))
    restored = write_config(tmp_path / "restored.toml", account=None, sink=smtp_sink,
                            database_url=f"sqlite:///{copies[-1]}", maildir=box)
    status = mailroute(restored, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "healthy" in status.stdout
    print(f"\n[backup] requests in the copies taken while {LETTERS} letters arrived: {figures}")


def test_a_backup_refuses_to_overwrite_and_names_postgresql_tools(
    tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    database = tmp_path / "mailroute.db"
    config = write_config(tmp_path / "config.toml", account=None, sink=smtp_sink,
                          database_url=f"sqlite:///{database}")
    assert mailroute(config, "db", "upgrade").returncode == 0
    (tmp_path / "taken.db").write_bytes(b"precious")
    refused = mailroute(config, "backup", str(tmp_path / "taken.db"))
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert (tmp_path / "taken.db").read_bytes() == b"precious"
    forced = mailroute(config, "backup", "--force", str(tmp_path / "taken.db"))
    assert forced.returncode == 0 and requests_in(tmp_path / "taken.db") == 0
    postgres = write_config(tmp_path / "pg.toml", account=None, sink=smtp_sink,
                            database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    refused = mailroute(postgres, "backup", str(tmp_path / "pg.db"))
    assert refused.returncode == 1 and "pg_dump" in refused.stderr


def test_retention_run_purges_what_is_due_and_says_so(
    tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    box = empty_maildir(tmp_path)
    for n in range(3):
        (box / "new" / f"{n}.host").write_bytes(letter(n))
    database = tmp_path / "mailroute.db"
    config = write_config(tmp_path / "config.toml", account=None, sink=smtp_sink,
                          database_url=f"sqlite:///{database}", maildir=box,
                          extra={"retention": {"raw_days": 30}, "replies": {"enabled": False}})
    assert mailroute(config, "db", "upgrade").returncode == 0
    assert mailroute(config, "run", "--once").returncode == 0
    with sqlite3.connect(database) as db:  # two of them arrived long ago
        db.execute("update letters set received_at = '2025-01-10 09:00:00.000000' "
                   "where id in (1, 2)")

    dry = mailroute(config, "retention", "run", "--dry-run")
    assert dry.returncode == 0 and "letters purged: 2" in dry.stdout and "would be" in dry.stdout
    done = mailroute(config, "retention", "run")
    assert done.returncode == 0 and "letters purged: 2" in done.stdout, done.stdout
    assert "retention purge" in done.stderr and "letters=2" in done.stderr  # the log line
    again = mailroute(config, "retention", "run")
    assert "letters purged: 0" in again.stdout
    gone = mailroute(config, "quarantine", "show", "--raw", "1")
    assert gone.returncode == 1 and "purged" in gone.stderr
    kept = mailroute(config, "quarantine", "show", "--raw", "3")
    assert kept.returncode == 0 and "backup2@romashka.example" in kept.stdout
    assert requests_in(database) == 3
