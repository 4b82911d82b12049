"""The console's pages and the operator actions behind their forms."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute

from mailroute import logs
from mailroute.core.classify import TYPES
from mailroute.errors import MailrouteError
from mailroute.ops import letters as ops_letters
from mailroute.ops import tickets as ops_tickets
from mailroute.pipeline.status import STATUSES
from mailroute.store.repository import RequestFilter
from mailroute.web import reading
from mailroute.web.auth import COOKIE, Throttled, same
from mailroute.web.guard import changing, console_of, route, viewing
from mailroute.web.reports import health_page, report_page

log = logs.get("mailroute.web")

LOGIN_COOKIE = "mailroute_login"
PRIORITIES = ("critical", "high", "normal", "low")
FILTERS = ("status", "type", "priority", "queue", "org", "q")


async def healthz(request: Request) -> Response:
    """For a load balancer: the process answers (no login, nothing about the desk)."""
    return JSONResponse({"ok": True})


async def login_form(request: Request, error: str = "", status_code: int = 200) -> Response:
    token = secrets.token_urlsafe(24)
    response = console_of(request).render(request, "login.html", status_code=status_code,
                                          error=error, login_csrf=token)
    _cookie(request, response, LOGIN_COOKIE, token, 600)
    return response


async def login(request: Request) -> Response:
    console = console_of(request)
    form = await request.form()
    if not same(_field(form, "csrf"), request.cookies.get(LOGIN_COOKIE, "")):
        return PlainTextResponse("missing or wrong CSRF token", status_code=403)
    address = console.address(request)
    try:
        token = await console.run(console.sessions.login, _field(form, "name"),
                                  _field(form, "password"), address)
    except Throttled:
        return await login_form(request, "Too many failed logins; try again later.", 429)
    if token is None:
        return await login_form(request, "Wrong name or password.", 401)
    response = RedirectResponse("/", status_code=303)
    _cookie(request, response, COOKIE, token, int(console.config.web.session_hours * 3600))
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


async def logout(request: Request) -> Response:
    console = console_of(request)
    person = await console.run(console.sessions.person, request.cookies.get(COOKIE))
    form = await request.form()
    if person is None or not same(_field(form, "csrf"), person.csrf_token):
        return PlainTextResponse("missing or wrong CSRF token", status_code=403)
    await console.run(console.sessions.logout, person)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def _cookie(request: Request, response: Response, name: str, value: str, seconds: int) -> None:
    response.set_cookie(name, value, max_age=seconds, path="/", httponly=True,
                        samesite="strict", secure=console_of(request).config.web.secure_cookies)


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) and name != "password" else (
        value if isinstance(value, str) else "")


@viewing
async def queue(request: Request) -> Response:
    console = console_of(request)
    asked = {key: request.query_params.get(key, "").strip()[:200] for key in FILTERS}
    breached = request.query_params.get("breached") == "1"
    now = console.clock()
    where = RequestFilter(
        status=asked["status"] or None, request_type=asked["type"] or None,
        priority=asked["priority"] or None, queue=asked["queue"] or None,
        organization=asked["org"] or None, search=asked["q"] or None,
        breached_at=now if breached else None,
        after=request.query_params.get("after", "").strip()[:40] or None)
    found = await console.run(reading.queue_page, console.store, console.clocks, where, now)
    kept = {k: v for k, v in asked.items() if v} | ({"breached": "1"} if breached else {})
    return console.render(
        request, "queue.html", found=found, asked=asked, breached=breached,
        statuses=STATUSES, types=TYPES, priorities=PRIORITIES,
        first="/?" + urlencode(kept) if where.after else None,
        next="/?" + urlencode(kept | {"after": found["last"]}) if found["last"] else None)


def _page_number(text: str | None) -> int:
    try:
        return min(max(1, int(text or "1")), 1_000_000)
    except ValueError:
        return 1


@viewing
async def request_page(request: Request) -> Response:
    console = console_of(request)
    number = request.path_params["number"]
    detail = await console.run(reading.request_page, console.store, number, console.limits,
                               console.clocks, console.clock())
    if detail is None:
        return console.render(request, "message.html", 404, message="Not found.")
    return console.render(request, "request.html", r=detail, statuses=STATUSES,
                          done=request.query_params.get("done") == "1")


@changing
async def change_status(request: Request, form: FormData) -> Response:
    console = console_of(request)
    number = request.path_params["number"]
    person = request.state.person
    try:
        changed = await console.run(
            ops_tickets.change_status, console.store, number, _field(form, "status"),
            console.clocks, console.clock(), _field(form, "note")[:2000] or None,
            by=person.name)
    except MailrouteError as exc:
        return PlainTextResponse(str(exc), status_code=400)
    if changed is None:
        return PlainTextResponse("no such request", status_code=404)
    log.info("status changed in the console", request=number, user=person.name,
             old=changed[0], new=changed[1])
    return _back_to(number)


@changing
async def add_note(request: Request, form: FormData) -> Response:
    console = console_of(request)
    number, note = request.path_params["number"], _field(form, "note")[:5000]
    if not note:
        return PlainTextResponse("an empty note", status_code=400)
    if not await console.run(reading.add_note, console.store, number,
                             request.state.person.name, note, console.clock()):
        return PlainTextResponse("no such request", status_code=404)
    return _back_to(number)


@changing
async def retry_reply(request: Request, form: FormData) -> Response:
    console = console_of(request)
    try:
        await console.run(ops_letters.retry_reply, console.store,
                          int(request.path_params["item"]), console.clock())
    except LookupError as exc:
        return PlainTextResponse(str(exc), status_code=409)
    number = _field(form, "number")
    return _back_to(number) if number else RedirectResponse("/outbox", status_code=303)


def _back_to(number: str) -> Response:
    return RedirectResponse(f"/requests/{quote(number)}?done=1", status_code=303)


@viewing
async def download(request: Request) -> Response:
    console = console_of(request)
    found = await console.run(reading.attachment, console.store,
                              int(request.path_params["item"]), console.limits)
    if found is None:
        return PlainTextResponse("no such attachment", status_code=404)
    filename, content = found
    if content is None:
        return PlainTextResponse("this attachment's letter was purged by retention "
                                 "([retention] raw_days)", status_code=410)
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_") or "file"
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
    return Response(content, media_type="application/octet-stream",
                    headers={"content-disposition": disposition})


@viewing
async def quarantine(request: Request) -> Response:
    console = console_of(request)
    rows = await console.run(ops_letters.quarantined, console.store)
    return console.render(request, "quarantine.html", rows=rows)


@changing
async def retry_letter(request: Request, form: FormData) -> Response:
    console = console_of(request)
    letter_id = int(request.path_params["item"])
    try:
        outcome = await console.run(_retry_letter, console, letter_id)
    except LookupError as exc:
        return PlainTextResponse(str(exc), status_code=409)
    log.info("quarantined letter retried in the console", letter=letter_id,
             user=request.state.person.name, state=outcome.state)
    return RedirectResponse("/quarantine", status_code=303)


def _retry_letter(console: Any, letter_id: int) -> Any:
    def pipeline_of(source: str) -> Any:
        return ops_letters.pipeline_for(console.config, console.store, source)

    return ops_letters.retry_letter(console.store, pipeline_of, letter_id, console.clock())


@viewing
async def outbox(request: Request) -> Response:
    console = console_of(request)
    state = request.query_params.get("state") or None
    rows = await console.run(ops_letters.outbox_rows, console.store, state)
    return console.render(request, "outbox.html", rows=rows[-500:][::-1], state=state)


@viewing
async def customers(request: Request) -> Response:
    console = console_of(request)
    rows = await console.run(reading.organizations, console.store)
    configured = [{"name": o.name, "registration_numbers": o.registration_numbers,
                   "domains": o.domains, "tier": o.tier}
                  for o in getattr(console.config.registry, "organizations", [])]
    return console.render(request, "customers.html", rows=rows, configured=configured)


@viewing
async def reports(request: Request) -> Response:
    console = console_of(request)
    days = _page_number(request.query_params.get("days") or "7")
    context = await console.run(report_page, console, min(days, 92))
    return console.render(request, "reports.html", **context)


@viewing
async def health(request: Request) -> Response:
    console = console_of(request)
    context = await console.run(health_page, console, timedelta(
        seconds=console.config.replies.suppress_for))
    return console.render(request, "health.html", **context)


@viewing
async def webhooks(request: Request) -> Response:
    console = console_of(request)
    found = await console.run(reading.webhook_deliveries, console.store)
    return console.render(request, "webhooks.html", **found)


def routes() -> list[BaseRoute]:
    return [
        route("/healthz", healthz),
        route("/login", login_form),
        route("/login", login, ["POST"]),
        route("/logout", logout, ["POST"]),
        route("/", queue),
        route("/requests/{number}", request_page),
        route("/requests/{number}/status", change_status, ["POST"]),
        route("/requests/{number}/note", add_note, ["POST"]),
        route("/replies/{item:int}/retry", retry_reply, ["POST"]),
        route("/attachments/{item:int}", download),
        route("/quarantine", quarantine),
        route("/quarantine/{item:int}/retry", retry_letter, ["POST"]),
        route("/outbox", outbox),
        route("/customers", customers),
        route("/reports", reports),
        route("/health", health),
        route("/webhooks", webhooks),
    ]
