"""The console served for real: uvicorn on a free loopback port over SQLite and PostgreSQL,
with letters (one of them hostile) pushed through the real pipeline.

One server per database for the whole module (``console``); tests that must not share its
login throttle start their own (``start_console``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formataddr
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from support.databases import fresh_postgres_database
from support.databases import sqlite_url as make_sqlite_url
from support.services import free_port

from mailroute.config import Config
from mailroute.pipeline.decide import Pipeline, process_pending
from mailroute.store import Store
from mailroute.store import repository as repo
from mailroute.store.models import Request
from mailroute.web.auth import add_user
from mailroute.web.serve import ConsoleThread, server_for

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # a Monday, 11:00 in Moscow
LATER = NOW + timedelta(days=3)  # the console's clock: some requests are overdue by then
OPERATOR = ("olga", "operator-pass-1")
VIEWER = ("viktor", "viewer-pass-1")
BODY = "Отчёт по продажам не формируется, выдаёт ошибку.\n\nООО «Ромашка»\nрег. номер {n}\n"

# Markup that would run if the console rendered what a stranger wrote as HTML.
HOSTILE_MARKUP = (
    '<script>window.__pwned = "script"; document.title = "pwned";</script>'
    '<img src="x" onerror="window.__pwned = \'onerror\'; document.title = \'pwned\'">'
    '<a href="javascript:window.__pwned=\'link\'" id="evil-link">click me</a>'
    '<style>body { display: none !important; }</style>'
    '<meta http-equiv="refresh" content="0; url=https://evil.example/">'
    '<svg onload="window.__pwned = \'svg\'"><script>window.__pwned = "svg-script"</script></svg>'
    '<div id="injected">injected</div>'
)
HOSTILE_SUBJECT = '<img src=x onerror="document.title=\'pwned\'"> &lt;b&gt;Срочно&#x3c;/b&#62;'
HOSTILE_NAME = '<svg onload=alert(1)> "Иван" </script>'


@dataclass
class Console:
    """A served console: its base URL, its store, the request numbers seeded."""

    url: str
    store: Store
    hostile: str  # number of the hostile letter's request
    numbers: list[str]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=30)

    @contextlib.contextmanager
    def logged_in(self, who: tuple[str, str] = OPERATOR) -> Iterator[httpx.Client]:
        with self.client() as client:
            assert login(client, *who).status_code == 303
            yield client


def login(client: httpx.Client, name: str, password: str,
          headers: dict[str, str] | None = None) -> httpx.Response:
    form = client.get("/login", headers=headers)
    csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    return client.post("/login", data={"csrf": csrf, "name": name, "password": password},
                       headers=headers)


def csrf_of(page: str) -> str:
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def letter(n: int, **headers: str) -> bytes:
    message = EmailMessage()
    message["From"] = headers.pop("sender", f"user{n}@romashka.example")
    message["To"] = "support@vendor.example"
    message["Subject"] = headers.pop("subject", f"Ошибка в отчёте {n}")
    message["Message-ID"] = f"<letter{n}@romashka.example>"
    message.set_content(headers.pop("body", BODY.format(n=800100200 + n)))
    return bytes(message)


def hostile_letter() -> bytes:
    """A letter of every trick: markup in the text, in an HTML part, in the subject and the
    display name (encoded words), and an SVG attachment carrying a script."""
    message = EmailMessage()
    message["From"] = formataddr((HOSTILE_NAME, "attacker@evil.example"))
    message["To"] = "support@vendor.example"
    message["Subject"] = HOSTILE_SUBJECT
    message["Message-ID"] = "<hostile@evil.example>"
    text = f"Не работает отчёт.\n{HOSTILE_MARKUP}\nООО «Ромашка»\nрег. номер 800100299\n"
    message.set_content(text)
    message.add_alternative(f"<html><body>{HOSTILE_MARKUP}<p>{text}</p></body></html>",
                            subtype="html")
    svg = (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)">'
           b"<script>alert(2)</script></svg>")
    message.add_attachment(
        svg,
        maintype="image", subtype="svg+xml", filename="evil.svg")
    return bytes(message)


def seed(store: Store, count: int = 8) -> tuple[str, list[str]]:
    """Letters through the real pipeline; the users; returns (hostile number, all numbers)."""
    raws = [letter(n) for n in range(1, count + 1)] + [hostile_letter()]
    arrivals = [repo.Arrival(str(i), raw, None, NOW) for i, raw in enumerate(raws, 1)]
    with store.transaction() as session:
        repo.save_letters(session, "INBOX", 1, arrivals, NOW)
    process_pending(store, Pipeline.from_config(Config()), lambda: NOW)
    add_user(store, OPERATOR[0], "operator", OPERATOR[1], NOW)
    add_user(store, VIEWER[0], "viewer", VIEWER[1], NOW)
    with store.transaction() as session:
        numbers = [r.number for r, _n in repo.list_requests(session)[0]]
        hostile = session.scalar(
            select(Request.number).where(Request.requester == "attacker@evil.example"))
    assert hostile is not None, "the hostile letter must become a request"
    return hostile, numbers


@contextlib.contextmanager
def serving(url: str, **web: Any) -> Iterator[Console]:
    store = Store(url)
    store.upgrade()
    hostile, numbers = seed(store)
    config = Config.model_validate({"web": {"secure_cookies": False} | web})
    port = free_port()
    thread = ConsoleThread(server_for(store, config, f"127.0.0.1:{port}", lambda: LATER)).start()
    assert thread.server.started, "the console did not start"
    try:
        yield Console(f"http://127.0.0.1:{port}", store, hostile, numbers)
    finally:
        thread.stop()
        store.dispose()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql",
                                                                marks=pytest.mark.services)])
def console(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Console]:
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = make_sqlite_url(tmp_path_factory.mktemp("console"))
        else:
            url = stack.enter_context(fresh_postgres_database())
        yield stack.enter_context(serving(url))


@pytest.fixture
def start_console(tmp_path: Any) -> Iterator[Callable[..., Console]]:
    """Start a console of one's own on SQLite, with ``[web]`` settings given."""
    with contextlib.ExitStack() as stack:
        def start(**web: Any) -> Console:
            return stack.enter_context(serving(make_sqlite_url(tmp_path), **web))
        yield start
