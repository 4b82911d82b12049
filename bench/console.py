"""Console pages over 100,000 requests: server time of the queue and a request page.

Requests are bulk-inserted as rows (the pipeline would take an hour for 100,000); a few
real letters go through the pipeline first so the request page has letters to show.
The app runs in-process (Starlette's TestClient, no network), so the figures are the
server's own time: routing, session check, queries and rendering.

    .venv/bin/python bench/console.py [--n 100000] [--db sqlite|postgresql] [--repeat 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from sqlalchemy import insert
from starlette.testclient import TestClient

from mailroute.config import Config
from mailroute.store import Store
from mailroute.store.models import Request
from mailroute.web.app import create_app

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def fill(store: Store, n: int) -> None:
    from web.conftest import seed  # the letters and users of the console tests

    seed(store)
    statuses = ["new", "in_progress", "awaiting_customer", "resolved", "closed"]
    rows = [
        {"number": f"SD-{i:07d}", "status": statuses[i % 5], "request_type": "incident",
         "priority": ["normal", "high", "low", "critical"][i % 4], "queue": "first-line",
         "organization": f"ООО «Клиент {i % 997}»", "registration_number": f"{800000000 + i}",
         "requester": f"user{i}@client{i % 997}.example", "requester_name": None,
         "subject": f"Ошибка в отчёте {i}", "language": "ru", "missing": [], "reasons": [],
         "created_at": NOW - timedelta(minutes=i), "updated_at": NOW,
         "first_response_due": NOW + timedelta(hours=4) - timedelta(minutes=i),
         "resolution_due": NOW + timedelta(days=2) - timedelta(minutes=i), "clarifications": 0}
        for i in range(100, n + 100)
    ]
    with store.transaction() as session:
        for start in range(0, len(rows), 5000):
            session.execute(insert(Request), rows[start:start + 5000])


def measure(client: TestClient, path: str, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (path, answer.status_code)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.db == "sqlite":
            url = f"sqlite:///{tmp}/bench.db"
        else:
            import os
            url = os.environ.get("MAILROUTE_TEST_DATABASE_URL",
                                 "postgresql+psycopg://root@127.0.0.1:5432/test")
        store = Store(url)
        store.upgrade()
        started = time.perf_counter()
        fill(store, args.n)
        print(f"{args.n} requests inserted in {time.perf_counter() - started:.1f} s ({args.db})")
        config = Config.model_validate({"web": {"secure_cookies": False}})
        with TestClient(create_app(store, config, lambda: NOW + timedelta(hours=6))) as client:
            form = client.get("/login").text
            csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            client.post("/login", data={"csrf": csrf, "name": "olga",
                                        "password": "operator-pass-1"})
            pages = ["/", "/?status=new", "/?breached=1", "/?q=Клиент 42",
                     f"/?after=SD-{args.n // 2:07d}", "/?priority=critical&status=in_progress",
                     "/requests/SD-000009", f"/requests/SD-{args.n // 2:07d}"]
            print(f"{'page':45} {'p50 ms':>8} {'p95 ms':>8}")
            for page in pages:
                p50, p95 = measure(client, page, args.repeat)
                print(f"{page:45} {p50:8.1f} {p95:8.1f}")
        store.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
