"""The command line: exit codes, check-config, explain, tickets, demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.configs import SAMPLES, write_config

from mailroute.cli import main


@pytest.fixture
def maildir_config(tmp_path: Path, sqlite_url: str) -> Path:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for order, sample in enumerate(sorted(SAMPLES.glob("*.eml"))):
        (maildir / "new" / f"{1700000000 + order}.sample{order}.host").write_bytes(
            sample.read_bytes())
    return write_config(tmp_path / "config.toml", account=None, sink=None,
                        database_url=sqlite_url, maildir=maildir,
                        extra={"replies": {"enabled": False}})


def test_check_config_masks_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[mailbox]\nhost = "imap.example.net"\n[smtp]\npassword = "hunter2"\n',
                      encoding="utf-8")
    assert main(["--config", str(config), "check-config"]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and '"password": "********"' in out and "hunter2" not in out


def test_bad_config_exits_2_naming_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[mailbox]\nbatch_size = 0\n', encoding="utf-8")
    assert main(["check-config", "--config", str(config)]) == 2
    assert "c.toml:2: mailbox.batch_size" in capsys.readouterr().err


def test_explain_json_has_spec_fields(capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(path) for path in sorted(SAMPLES.glob("*.eml"))[:2]]
    assert main(["explain", "--json", *files]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    for key in ("action", "ignore_reason", "request_type", "priority", "organization",
                "registration_number", "missing", "reply", "language", "reasons", "queue"):
        assert key in first
    assert first["request_type"] == "incident" and first["priority"] == "critical"
    assert any(reason["rule"] for reason in first["reasons"])


def test_explain_unreadable_file_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", str(tmp_path / "absent.eml")]) == 1
    assert "cannot read" in capsys.readouterr().out


def test_run_once_then_tickets(maildir_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(maildir_config), "run", "--once"]) == 3  # not migrated
    assert "mailroute db upgrade" in capsys.readouterr().err
    assert main(["--config", str(maildir_config), "db", "upgrade"]) == 0
    assert main(["--config", str(maildir_config), "run", "--once"]) == 0
    capsys.readouterr()
    assert main(["--config", str(maildir_config), "tickets", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [row["number"] for row in listed] == [f"SD-00000{n}" for n in (4, 3, 2, 1)]
    for key in ("number", "status", "request_type", "priority", "organization",
                "registration_number", "requester", "subject", "created_at", "messages"):
        assert key in listed[0]
    second = next(row for row in listed if row["number"] == "SD-000002")
    assert second["messages"] == 2  # the letter and its follow-up (replies are disabled)
    assert main(["--config", str(maildir_config), "tickets", "show", "sd-000002",
                 "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [event["kind"] for event in shown["events"]][:2] == ["created", "follow_up"]
    assert main(["--config", str(maildir_config), "tickets", "show", "SD-999999"]) == 1


def test_demo_prints_requests_and_replies(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "SD-000004" in out
    assert "Replies received by the demo SMTP server (5)" in out
    assert "clarification" in out


def test_set_status_is_recorded_and_validated(
    maildir_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--config", str(maildir_config)]
    assert main([*base, "db", "upgrade"]) == 0
    assert main([*base, "run", "--once"]) == 0
    assert main([*base, "tickets", "set-status", "SD-000001", "in_progress",
                 "--note", "taken"]) == 0
    assert "SD-000001: new -> in_progress" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*base, "tickets", "set-status", "SD-000001", "done"])
    capsys.readouterr()
    assert main([*base, "tickets", "show", "SD-000001", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "in_progress" and shown["first_response_at"]
    last = shown["events"][-1]
    assert (last["kind"], last["old"], last["new"], last["note"]) == (
        "status", "new", "in_progress", "taken")
    assert main([*base, "tickets", "list", "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out) if r["number"] == "SD-000001")
    assert row["first_response_due"] and row["resolution_due"]
    assert row["breached"] in (True, False)


def test_explain_received_at_gives_sla(capsys: pytest.CaptureFixture[str]) -> None:
    urgent = str(sorted(SAMPLES.glob("*.eml"))[0])
    assert main(["explain", "--json", "--received-at", "2026-11-21T23:40:00+03:00",
                 urgent]) == 0
    sla = json.loads(capsys.readouterr().out)["sla"]
    assert sla["first_response_due"] == "2026-11-23T11:00:00+03:00"
    assert sla["resolution_due"] == "2026-11-23T18:00:00+03:00"
    assert sla["paused"] is False


def test_explain_text_shows_the_sla(capsys: pytest.CaptureFixture[str]) -> None:
    urgent = str(sorted(SAMPLES.glob("*.eml"))[0])
    assert main(["explain", "--received-at", "2026-11-21T23:40:00+03:00", urgent]) == 0
    out = capsys.readouterr().out
    assert "first response by    23.11.2026 11:00 +0300" in out
    assert "resolution by        23.11.2026 18:00 +0300" in out
    assert main(["explain", urgent]) == 0  # without --received-at: from now
    assert "first response by" in capsys.readouterr().out


def test_report_command_formats(
    maildir_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime, timedelta

    base = ["--config", str(maildir_config)]
    assert main([*base, "db", "upgrade"]) == 0
    assert main([*base, "run", "--once"]) == 0
    today = datetime.now(UTC).date()
    period = ["--from", str(today - timedelta(days=1)), "--to", str(today + timedelta(days=1))]
    capsys.readouterr()
    assert main([*base, "report", *period, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["created"]["total"] == 4
    by_type = {row["name"]: row["count"] for row in data["created"]["by_type"]}
    assert by_type["service_request"] == 2 and by_type["incident"] == 1
    html = tmp_path / "report.html"
    assert main([*base, "report", *period, "--format", "html", "--output", str(html)]) == 0
    assert "<svg" in html.read_text(encoding="utf-8")
    assert main([*base, "report", "--from", "2026-11-10", "--to", "2026-11-01"]) == 1


def test_suppressions_expire_are_listed_lifted_and_counted_by_status(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A suppression older than ``suppress_for`` no longer silences anyone; the active
    ones are listed, one can be lifted, and `status` counts them."""
    from datetime import UTC, datetime, timedelta

    from mailroute.store import Store
    from mailroute.store import repository as repo

    config = write_config(tmp_path / "config.toml", account=None, sink=None,
                          database_url=sqlite_url, maildir=tmp_path / "Maildir",
                          extra={"replies": {"suppress_for": "30d"}})
    base = ["--config", str(config)]
    assert main([*base, "db", "upgrade"]) == 0
    now = datetime.now(UTC)
    store = Store(sqlite_url)
    try:
        with store.transaction() as session:
            repo.suppress(session, "old@customer.example", "bounce", now - timedelta(days=31))
            repo.suppress(session, "Gone@Customer.example", "SMTP refused: 550 5.1.1", now)
            repo.suppress(session, "lift.me@customer.example", "bounce", now)
        with store.transaction() as session:
            since = now - timedelta(days=30)
            assert not repo.is_suppressed(session, "old@customer.example", since)  # expired
            assert repo.is_suppressed(session, "gone@customer.example", since)
    finally:
        store.dispose()
    capsys.readouterr()
    assert main([*base, "suppressions", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(row["address"] for row in listed) == [
        "gone@customer.example", "lift.me@customer.example"]
    assert main([*base, "suppressions", "lift", "LIFT.me@customer.example"]) == 0
    assert main([*base, "suppressions", "lift", "lift.me@customer.example"]) == 1  # not any more
    capsys.readouterr()
    main([*base, "status", "--json"])
    assert json.loads(capsys.readouterr().out)["suppressed"] == 1


def _verdict_configs(maildir: Path, database_url: str) -> dict[str, str]:
    """Configs that check-config, run and a reload must all judge alike."""
    base = (f'[database]\nurl = "{database_url}"\n[smtp]\nfrom_address = "sd@example.com"\n'
            "[replies]\nenabled = false\n")
    broken_templates = maildir.parent / "templates"
    broken_templates.mkdir(exist_ok=True)
    (broken_templates / "acknowledgement.ru.txt").write_bytes(b"Subject: \xff\xfe not UTF-8\n")
    return {
        "no mailbox": base,
        "maildir": base + f'[mailbox]\nmaildir = "{maildir}"\n',
        "unknown holiday calendar": base + f'[mailbox]\nmaildir = "{maildir}"\n'
                                           '[business_hours]\ncalendar = "XX"\n',
        "unreadable template": base.replace(
            "[replies]\n", f'[replies]\ntemplates_dir = "{broken_templates}"\n'
        ) + f'[mailbox]\nmaildir = "{maildir}"\n',
        "unknown key": base + f'[mailbox]\nmaildir = "{maildir}"\nhots = "imap"\n',
    }


def test_check_config_and_run_give_one_verdict(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The verdict comes before the database is opened, so one database kind is enough."""
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    configs = _verdict_configs(maildir, sqlite_url)
    path = tmp_path / "c.toml"
    path.write_text(configs["maildir"], encoding="utf-8")
    assert main(["--config", str(path), "db", "upgrade"]) == 0
    verdicts = {}
    for name, text in configs.items():
        path.write_text(text, encoding="utf-8")
        capsys.readouterr()
        checked = main(["--config", str(path), "check-config"])
        check_error = capsys.readouterr().err.strip()
        ran = main(["--config", str(path), "run", "--once"])
        run_error = capsys.readouterr().err.strip()
        verdicts[name] = checked
        assert checked == ran, (name, check_error, run_error)
        if checked:
            assert check_error == run_error, name
    assert verdicts == {"no mailbox": 2, "maildir": 0, "unknown holiday calendar": 2,
                        "unreadable template": 2, "unknown key": 2}


def test_reload_refuses_what_check_config_refuses(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from mailroute import config as config_module
    from mailroute.cli.common import open_store
    from mailroute.service.daemon import Daemon

    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    configs = _verdict_configs(maildir, sqlite_url)
    path = tmp_path / "c.toml"
    path.write_text(configs["maildir"], encoding="utf-8")
    assert main(["--config", str(path), "db", "upgrade"]) == 0
    loaded = config_module.load(path, environ={})
    daemon = Daemon(loaded, open_store(loaded), config_path=str(path))
    for name in ("no mailbox", "unknown holiday calendar", "unreadable template"):
        path.write_text(configs[name], encoding="utf-8")
        assert main(["--config", str(path), "check-config"]) == 2
        assert daemon.reload() is False, name
        assert daemon.config is loaded
    path.write_text(configs["maildir"], encoding="utf-8")
    assert daemon.reload() is True


def test_parse_day_words() -> None:
    from datetime import date

    from mailroute.cli.common import parse_day

    today = date(2026, 3, 2)
    assert parse_day("today", today) == today
    assert parse_day("Yesterday", today) == date(2026, 3, 1)
    assert parse_day("7d", today) == date(2026, 2, 23)
    assert parse_day("2026-01-31", today) == date(2026, 1, 31)
    with pytest.raises(ValueError, match="today, yesterday or Nd"):
        parse_day("last week", today)


def test_report_period_words_and_the_7_day_default(
    maildir_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    base = ["--config", str(maildir_config)]
    assert main([*base, "db", "upgrade"]) == 0
    today = datetime.now(ZoneInfo("Europe/Moscow")).date()
    capsys.readouterr()
    for words, first, last in (
        ([], today - timedelta(days=7), today),
        (["--from", "yesterday", "--to", "today"], today - timedelta(days=1), today),
        (["--from", "30d", "--to", "yesterday"], today - timedelta(days=30),
         today - timedelta(days=1)),
    ):
        assert main([*base, "report", *words, "--format", "json"]) == 0, words
        period = json.loads(capsys.readouterr().out)["period"]
        assert (period["first_day"], period["last_day"]) == (str(first), str(last)), words
    with pytest.raises(SystemExit) as usage:
        main([*base, "report", "--from", "last week"])
    assert usage.value.code == 2
    assert "give YYYY-MM-DD, today, yesterday or Nd" in capsys.readouterr().err
