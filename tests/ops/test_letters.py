"""Operator commands: status exit codes, quarantine, outbox, replay."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.configs import SAMPLES, write_config

from mailroute import __version__
from mailroute.cli import main

BOMB = (b"From: a@b.example\r\nSubject: deep\r\nMessage-ID: <deep@b.example>\r\n"
        + b"".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode()
                   for i in range(200))
        + b"Content-Type: text/plain\r\n\r\nhi\r\n")


@pytest.fixture
def setup(tmp_path: Path, sqlite_url: str) -> list[str]:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1.bomb.host").write_bytes(BOMB)
    (maildir / "new" / "2.good.host").write_bytes(sorted(SAMPLES.glob("*.eml"))[0].read_bytes())
    config = write_config(tmp_path / "config.toml", account=None, sink=None,
                          database_url=sqlite_url, maildir=maildir,
                          extra={"smtp": {"host": "127.0.0.1", "port": 9, "security": "none",
                                          "timeout": 1}})
    base = ["--config", str(config)]
    assert main([*base, "db", "upgrade"]) == 0
    return base


def test_status_exit_code_follows_health(
    setup: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*setup, "status"]) == 1  # never polled
    assert "never been polled" in capsys.readouterr().out
    assert main([*setup, "run", "--once"]) == 0  # SMTP is down: the reply waits
    capsys.readouterr()
    assert main([*setup, "status", "--json"]) == 1  # ...and status says so, naming SMTP
    status = json.loads(capsys.readouterr().out)
    assert status["healthy"] is False
    assert any("SMTP 127.0.0.1:9 is failing" in p and "refused" in p and "Errno" not in p
               for p in status["problems"]), status["problems"]
    assert status["quarantined"] == 1
    assert status["version"] == __version__ and status["uptime_seconds"] is None  # no daemon
    assert status["endpoints"]["mailbox"].startswith("maildir ")
    assert status["endpoints"]["smtp"] == "127.0.0.1:9"
    assert status["endpoints"]["database"].startswith("sqlite")
    assert status["outbox"] == {"pending": 1}
    assert status["backlog"] == 0 and status["last_poll_at"]  # both filed: none left


def test_status_shows_the_serving_daemons_uptime(
    setup: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from mailroute.config import load
    from mailroute.service.daemon import Daemon
    from mailroute.store import Store

    config = load(setup[1])
    started = datetime.now(UTC) - timedelta(minutes=5)
    daemon = Daemon(config, Store(config.database.url), clock=lambda: started)
    daemon._record_start()
    assert main([*setup, "status", "--json"]) in (0, 1)
    status = json.loads(capsys.readouterr().out)
    assert status["started_at"] == started.isoformat()
    assert 300 <= status["uptime_seconds"] < 400


def test_quarantine_list_show_retry(setup: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*setup, "run", "--once"]) == 0
    capsys.readouterr()
    assert main([*setup, "quarantine", "list", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["stage"] == "parse" and "limit" in row["error"]
    assert main([*setup, "quarantine", "show", str(row["id"]), "--raw"]) == 0
    assert capsys.readouterr().out.encode() == BOMB
    assert main([*setup, "quarantine", "retry", str(row["id"])]) == 1  # still unreadable
    assert "quarantined" in capsys.readouterr().out
    assert main([*setup, "quarantine", "retry", "999"]) == 1
    assert "no letter 999" in capsys.readouterr().err


def test_outbox_list_and_retry(setup: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*setup, "run", "--once"]) == 0
    capsys.readouterr()
    assert main([*setup, "outbox", "list", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["state"] == "pending" and row["attempts"] == 1
    assert "cannot connect" in row["error"]
    assert main([*setup, "outbox", "retry", str(row["id"])]) == 0
    assert "pending again" in capsys.readouterr().out


def test_replay_processes_a_file_once(
    setup: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    letter = sorted(SAMPLES.glob("*.eml"))[2]
    assert main([*setup, "replay", str(letter)]) == 0
    out = capsys.readouterr().out
    assert "processed" in out and "request SD-000001" in out and "acknowledgement queued" in out
    assert main([*setup, "replay", str(letter)]) == 0
    again = capsys.readouterr().out
    assert "already stored as letter 1: processed; request SD-000001" in again
    assert "tickets show SD-000001" in again and "quarantine" not in again


def test_orgs_import_feeds_the_registry(
    setup: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "customers.csv"
    registry.write_text(
        "name,registration_numbers,domains,tier\n"
        "ООО «Полёт-Технологии (официально)»,800 112 233,polyot-tech.ru,gold\n",
        encoding="utf-8")
    assert main([*setup, "orgs", "import", str(registry)]) == 0
    assert "1 organizations imported" in capsys.readouterr().out
    assert main([*setup, "orgs", "list", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["registration_numbers"] == "800112233" and row["tier"] == "gold"
    assert main([*setup, "run", "--once"]) == 0
    capsys.readouterr()
    assert main([*setup, "tickets", "show", "SD-000001", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["organization"] == "ООО «Полёт-Технологии (официально)»"  # from the registry
    assert shown["tier"] == "gold"
    unknown = tmp_path / "Maildir" / "new" / "3.unknown.host"
    unknown.write_bytes(sorted(SAMPLES.glob("*.eml"))[2].read_bytes())  # 8104455667: unknown
    assert main([*setup, "run", "--once"]) == 0
    capsys.readouterr()
    assert main([*setup, "tickets", "show", "SD-000002", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "awaiting_customer"
    assert shown["missing"] == ["registration_number"]


def test_orgs_import_names_a_bad_line(
    setup: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "customers.csv"
    registry.write_text("name,registration_numbers\nООО «А»,80012x\n", encoding="utf-8")
    assert main([*setup, "orgs", "import", str(registry)]) == 2
    assert "customers.csv:2" in capsys.readouterr().err
