"""`tickets list` filters and limit, `tickets show` as readable text (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.configs import SAMPLES, write_config

from mailroute.cli import main
from mailroute.ops.tickets import list_page
from mailroute.store import Store
from mailroute.store.models import Request
from mailroute.store.repository import RequestFilter

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.upgrade()
    yield store
    store.dispose()


def add(store: Store, number: int, created: datetime, **fields: Any) -> None:
    values: dict[str, Any] = {
        "number": f"SD-{number:06d}", "status": "new", "request_type": "incident",
        "priority": "normal", "queue": "1c", "organization": "ООО «Ромашка»",
        "registration_number": "800123456", "requester": f"user{number}@customer.example",
        "language": "ru", "missing": [], "reasons": [], "created_at": created,
        "updated_at": created, "clarifications": 0,
    }
    with store.transaction() as session:
        session.add(Request(**(values | fields)))


def numbers(store: Store, where: RequestFilter, limit: int | None = None) -> tuple[list[int], int]:
    rows, total = list_page(store, limit, where, NOW)
    return [int(row["number"][3:]) for row in rows], total


def test_list_filters(store: Store) -> None:
    hour = timedelta(hours=1)
    add(store, 1, NOW - 72 * hour, status="resolved", first_response_due=NOW - 70 * hour,
        first_response_at=NOW - 71 * hour, resolved_at=NOW - 60 * hour)
    add(store, 2, NOW - 48 * hour, priority="critical", first_response_due=NOW - 47 * hour)
    add(store, 3, NOW - 30 * hour, request_type="service_request", queue="hr",
        organization="Romashka LLC", registration_number="7701")
    add(store, 4, NOW - 2 * hour, status="awaiting_customer", first_response_due=NOW - hour)
    add(store, 5, NOW - hour, priority="low", resolution_due=NOW - 0.5 * hour,
        first_response_at=NOW - 0.9 * hour)
    assert numbers(store, RequestFilter()) == ([5, 4, 3, 2, 1], 5)
    assert numbers(store, RequestFilter(), limit=2) == ([5, 4], 5)
    assert numbers(store, RequestFilter(status="new")) == ([5, 3, 2], 3)
    assert numbers(store, RequestFilter(request_type="service_request")) == ([3], 1)
    assert numbers(store, RequestFilter(priority="critical")) == ([2], 1)
    assert numbers(store, RequestFilter(queue="hr")) == ([3], 1)
    assert numbers(store, RequestFilter(organization="Ромашка")) == ([5, 4, 2, 1], 4)
    assert numbers(store, RequestFilter(organization="romashka")) == ([3], 1)
    assert numbers(store, RequestFilter(organization="7701")) == ([3], 1)
    assert numbers(store, RequestFilter(since=NOW - 40 * hour)) == ([5, 4, 3], 3)
    # 2: first response overdue; 5: resolution overdue; 4 waits for the customer (paused);
    # 1 was answered and resolved in time.
    assert numbers(store, RequestFilter(breached_at=NOW)) == ([5, 2], 2)
    rows, _ = list_page(store, None, RequestFilter(breached_at=NOW), NOW)
    assert all(row["breached"] for row in rows)
    assert numbers(store, RequestFilter(status="new", priority="critical", breached_at=NOW)) \
        == ([2], 1)


def test_search_and_keyset_pages(store: Store) -> None:
    hour = timedelta(hours=1)
    add(store, 1, NOW - 5 * hour, subject="Отчёт не формируется")
    add(store, 2, NOW - 4 * hour, organization="ЗАО «Лютик»", registration_number="7701")
    add(store, 3, NOW - 3 * hour, requester="anna@lutik.example", subject="50% off_line")
    add(store, 4, NOW - 2 * hour, subject=None, organization=None)
    add(store, 5, NOW - hour, subject="Ошибка 42")
    assert numbers(store, RequestFilter(search="отчёт")) == ([1], 1)
    assert numbers(store, RequestFilter(search="ЛЮТИК")) == ([2], 1)
    assert numbers(store, RequestFilter(search="lutik")) == ([3], 1)
    assert numbers(store, RequestFilter(search="4")) == ([5, 4], 2)  # SD-000004 and "42"
    assert numbers(store, RequestFilter(search="sd-000002")) == ([2], 1)
    assert numbers(store, RequestFilter(search="%")) == ([3], 1)  # wildcards taken literally
    assert numbers(store, RequestFilter(search="o_f")) == ([], 0)  # not "off"
    # a page's last number is the next page's cursor; the count is what is left
    assert numbers(store, RequestFilter(), limit=2) == ([5, 4], 5)
    assert numbers(store, RequestFilter(after="SD-000004"), limit=2) == ([3, 2], 3)
    assert numbers(store, RequestFilter(after="SD-000002"), limit=2) == ([1], 1)
    assert numbers(store, RequestFilter(after="SD-000004", search="отчёт")) == ([1], 1)
    assert numbers(store, RequestFilter(after="SD-999999")) == ([], 0)


@pytest.fixture
def ran(tmp_path: Path, sqlite_url: str) -> list[str]:
    """The bundled samples run through `run --once`; returns the --config arguments."""
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for order, sample in enumerate(sorted(SAMPLES.glob("*.eml"))):
        (maildir / "new" / f"{1700000000 + order}.sample{order}.host").write_bytes(
            sample.read_bytes())
    config = write_config(tmp_path / "config.toml", account=None, sink=None,
                          database_url=sqlite_url, maildir=maildir,
                          extra={"replies": {"enabled": False}})
    base = ["--config", str(config)]
    assert main([*base, "db", "upgrade"]) == 0
    assert main([*base, "run", "--once"]) == 0
    return base


def test_list_is_a_table_with_headers_due_times_and_more(
    ran: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main([*ran, "tickets", "list"]) == 0
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["NUMBER", "STATUS", "TYPE", "PRIORITY"]
    assert "RESPONSE DUE" in header and "BREACHED" in header
    assert "\x1b" not in out  # no colour codes in a pipe
    assert [row.split()[0] for row in rows] == ["SD-000004", "SD-000003", "SD-000002",
                                                "SD-000001"]
    due_column = header.index("RESPONSE DUE")
    assert rows[-1][due_column:due_column + 2] == "20"  # SD-000001 has a due time
    assert main([*ran, "tickets", "list", "--limit", "2"]) == 0
    limited = capsys.readouterr().out.splitlines()
    assert [row.split()[0] for row in limited[1:3]] == ["SD-000004", "SD-000003"]
    assert limited[-1].startswith("... 2 more")
    assert main([*ran, "tickets", "list", "--priority", "critical"]) == 0
    assert [row.split()[0] for row in capsys.readouterr().out.splitlines()[1:]] == ["SD-000001"]
    assert main([*ran, "tickets", "list", "--since", "today", "--type", "nothing"]) == 0
    assert capsys.readouterr().out.strip() == "no requests match"


def test_show_is_readable_and_takes_a_bare_number(
    ran: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main([*ran, "tickets", "show", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Request:") and "SD-000001: incident, critical" in out
    assert "None" not in out and "{'" not in out and "[]" not in out
    head, _, rest = out.partition("Reasons:\n")
    reasons = rest.partition("\n\n")[0].splitlines()
    assert len(reasons) >= 2 and all(line.startswith("  - ") for line in reasons)
    assert "Response due:" in head and "Breached:" in head
    assert "Letters:" in rest and "History:" in rest
    assert main([*ran, "tickets", "show", "sd-000001"]) == 0
    assert capsys.readouterr().out == out
    assert main([*ran, "tickets", "show", "99"]) == 1
