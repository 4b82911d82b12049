"""Security of the console over HTTP (httpx against the served app): logins, CSRF, roles,
throttling, cookie flags and the headers every page carries."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import pytest
from conftest import OPERATOR, VIEWER, Console, csrf_of, login
from sqlalchemy import delete

from mailroute.store.models import LetterBytes

PAGES = ["/", "/quarantine", "/outbox", "/customers", "/reports", "/health", "/webhooks",
         "/requests/SD-000001", "/attachments/1"]


def posts(number: str) -> list[tuple[str, dict[str, str]]]:
    return [
        (f"/requests/{number}/status", {"status": "in_progress", "note": "x"}),
        (f"/requests/{number}/note", {"note": "x"}),
        ("/replies/1/retry", {}),
        ("/quarantine/1/retry", {}),
    ]


def test_healthz_is_the_only_page_without_a_login(console: Console) -> None:
    with console.client() as client:
        assert client.get("/healthz").json() == {"ok": True}
        for page in PAGES:
            answer = client.get(page)
            assert answer.status_code == 303 and answer.headers["location"] == "/login", page
        for path, data in posts(console.hostile):
            assert client.post(path, data=data).status_code == 401, path


def test_a_post_without_the_csrf_token_changes_nothing(console: Console) -> None:
    number = console.numbers[-1]
    with console.logged_in() as client:
        for path, data in posts(number):
            for token in (None, "wrong"):
                sent = data | ({"csrf": token} if token else {})
                assert client.post(path, data=sent).status_code == 403, (path, token)
        page = client.get(f"/requests/{number}").text
        assert "in_progress" not in page.split('id="history"')[1]
    with console.client() as client:  # the login form needs its token too
        answer = client.post("/login", data={"name": OPERATOR[0], "password": OPERATOR[1]})
        assert answer.status_code == 403 and "mailroute_session" not in answer.cookies


def test_a_viewer_reads_but_cannot_change_anything(console: Console) -> None:
    number = console.numbers[-1]
    with console.logged_in(VIEWER) as client:
        page = client.get(f"/requests/{number}")
        assert page.status_code == 200 and 'id="status-form"' not in page.text
        csrf = csrf_of(page.text)
        for path, data in posts(number):
            assert client.post(path, data=data | {"csrf": csrf}).status_code == 403, path
        assert "by=viktor" not in client.get(f"/requests/{number}").text


def test_an_operator_changes_the_status_and_it_is_in_the_history(console: Console) -> None:
    number = console.numbers[-2]
    with console.logged_in() as client:
        csrf = csrf_of(client.get(f"/requests/{number}").text)
        answer = client.post(f"/requests/{number}/status",
                             data={"csrf": csrf, "status": "in_progress", "note": "looking"})
        assert answer.status_code == 303
        page = client.get(answer.headers["location"]).text
        assert 'id="status">in_progress' in page and "by=olga" in page and "note=looking" in page
        client.post(f"/requests/{number}/note", data={"csrf": csrf, "note": "called them"})
        assert "note=called them" in client.get(f"/requests/{number}").text


def test_the_session_cookie_is_httponly_and_samesite(console: Console) -> None:
    with console.client() as client:
        answer = login(client, *OPERATOR)
        assert answer.status_code == 303
        cookie = answer.headers["set-cookie"].lower()
        assert "mailroute_session=" in cookie
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert len(answer.cookies["mailroute_session"]) >= 40
        # the database keeps only its hash: a copied database opens no session
        csrf = csrf_of(client.get("/").text)
        assert client.post("/logout", data={"csrf": csrf}).status_code == 303
        assert client.get("/").status_code == 303


def test_the_cookie_is_secure_unless_turned_off(
    start_console: Callable[..., Console]
) -> None:
    served = start_console(secure_cookies=True)
    with served.client() as client:
        form = client.get("/login")
        assert "; secure" in form.headers["set-cookie"].lower()
        csrf = csrf_of(form.text)  # a client on plain HTTP keeps Secure cookies to itself:
        answer = client.post(  # sent here by hand
            "/login", data={"csrf": csrf, "name": OPERATOR[0], "password": OPERATOR[1]},
            headers={"cookie": f"mailroute_login={csrf}"})
        assert answer.status_code == 303 and "; secure" in answer.headers["set-cookie"].lower()


def test_every_page_sends_a_strict_content_security_policy(console: Console) -> None:
    with console.logged_in() as client:
        for page in [*PAGES[:-1], f"/requests/{quote(console.hostile)}", "/login"]:
            answer = client.get(page)
            assert answer.status_code == 200, page
            policy = answer.headers["content-security-policy"]
            assert "default-src 'self'" in policy and "unsafe-inline" not in policy
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert "<script" not in answer.text.split("<main>")[0]


def test_login_throttling_engages_per_address_and_per_name(
    start_console: Callable[..., Console]
) -> None:
    served = start_console(login_attempts=3, login_window=600, trusted_proxies=["127.0.0.1"])
    with served.client() as client:
        for _ in range(3):
            assert login(client, OPERATOR[0], "wrong").status_code == 401
        refused = login(client, *OPERATOR)  # the right password, but the name is locked
        assert refused.status_code == 429 and "mailroute_session" not in refused.cookies
        # another name from another address (through the trusted proxy) still gets in
        assert login(client, *VIEWER, headers={"x-forwarded-for": "192.0.2.7"}
                     ).status_code == 303
        for n in range(3):  # one address trying many names
            login(client, f"nobody{n}", "x", headers={"x-forwarded-for": "192.0.2.99"})
        assert login(client, *VIEWER, headers={"x-forwarded-for": "192.0.2.99"}
                     ).status_code == 429


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(
    start_console: Callable[..., Console]
) -> None:
    served = start_console(login_attempts=2, login_window=600)  # no trusted proxies
    with served.client() as client:
        for n in range(2):  # each claims another address: all count against 127.0.0.1
            login(client, f"guess{n}", "x", headers={"x-forwarded-for": f"198.51.100.{n}"})
        answer = login(client, *VIEWER, headers={"x-forwarded-for": "198.51.100.200"})
        assert answer.status_code == 429


def test_attachments_download_and_never_display(console: Console) -> None:
    with console.logged_in() as client:
        page = client.get(f"/requests/{quote(console.hostile)}").text
        link = page.split('href="/attachments/', 1)[1].split('"', 1)[0]
        answer = client.get(f"/attachments/{link}")
        assert answer.status_code == 200
        assert answer.headers["content-disposition"].startswith("attachment;")
        assert answer.headers["content-type"] == "application/octet-stream"
        assert b"<script>" in answer.content


@pytest.mark.parametrize(("accept", "word"), [("ru-RU,ru;q=0.9,en;q=0.5", "Очередь"),
                                               ("en-GB,en;q=0.8", "Queue")])
def test_the_interface_speaks_the_browsers_language(
    console: Console, accept: str, word: str
) -> None:
    with console.logged_in() as client:
        answer = client.get("/", headers={"accept-language": accept})
        assert f">{word}<" in answer.text


def test_the_queue_filters_searches_and_pages(console: Console) -> None:
    with console.logged_in() as client:
        everything = client.get("/").text
        assert all(number in everything for number in console.numbers)
        found = client.get("/", params={"q": "attacker@evil"}).text
        assert console.hostile in found and console.numbers[-1] + "<" not in found
        assert "Nothing found." in client.get("/", params={"status": "closed"}).text
        paged = client.get("/", params={"after": console.numbers[2]}).text
        assert console.numbers[3] in paged and f">{console.numbers[0]}<" not in paged
        assert 'class="late"' in client.get("/", params={"breached": "1"}).text


def test_an_attachment_whose_letter_was_purged_answers_gone(
    start_console: Callable[..., Console]
) -> None:
    """Files are read from their letter's bytes: once retention purged those, the link
    says so (410), not "no such attachment"."""
    served = start_console()
    with served.logged_in() as client:
        page = client.get(f"/requests/{quote(served.hostile)}").text
        link = page.split('href="/attachments/', 1)[1].split('"', 1)[0]
        assert client.get(f"/attachments/{link}").status_code == 200
        with served.store.transaction() as session:
            session.execute(delete(LetterBytes))
        answer = client.get(f"/attachments/{link}")
        assert answer.status_code == 410 and "retention" in answer.text
        assert client.get("/attachments/999999").status_code == 404
