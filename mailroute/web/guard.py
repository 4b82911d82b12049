"""What every page needs (the store, config, clock, people) and the checks before a
handler runs: a login for every page, CSRF and the operator role for every change."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from mailroute.config import Config
from mailroute.core.business_calendar import BusinessCalendar, Calendars
from mailroute.core.letter import ParseLimits
from mailroute.store import Store
from mailroute.web import i18n
from mailroute.web.auth import COOKIE, Person, Sessions, client_address, same

Handler = Callable[[Request], Awaitable[Response]]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Console:
    """What every page needs: the store, the config, the clock and the people."""

    store: Store
    config: Config
    clock: Callable[[], datetime]
    sessions: Sessions
    calendar: BusinessCalendar  # the desk's (the first mailbox's): reports' days and zone
    limits: ParseLimits
    templates: Environment
    calendars: Calendars | None = None  # each mailbox's, for a request's SLA clock

    @property
    def clocks(self) -> BusinessCalendar | Calendars:
        """What a request's SLA clock is read with: its mailbox's calendar."""
        return self.calendars or self.calendar

    def render(self, request: Request, name: str, status_code: int = 200,
               **context: Any) -> HTMLResponse:
        language = i18n.choose(request.headers.get("accept-language"))
        catalog = i18n.translator(language)
        person: Person | None = getattr(request.state, "person", None)
        html = self.templates.get_template(name).render(
            t=functools.partial(i18n.gettext, catalog), lang=language, person=person,
            csrf=person.csrf_token if person else "", path=request.url.path, **context)
        response = HTMLResponse(html, status_code=status_code)
        response.headers["content-language"] = language
        return response

    async def run(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Database work off the event loop, in a worker thread with its own session."""
        return await run_in_threadpool(function, *args, **kwargs)

    def address(self, request: Request) -> str:
        peer = request.client.host if request.client else None
        return client_address(peer, request.headers.get("x-forwarded-for"),
                              self.config.web.trusted_proxies)


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def viewing(handler: Handler) -> Handler:
    """A page for anyone logged in; others are sent to the login page."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        console = console_of(request)
        person = await console.run(console.sessions.person, request.cookies.get(COOKIE))
        if person is None:
            return RedirectResponse("/login", status_code=303)
        request.state.person = person
        return await handler(request)

    return endpoint


def changing(handler: Callable[[Request, FormData], Awaitable[Response]]) -> Handler:
    """A POST that changes something: a login (401), the session's CSRF token and the
    operator role (403) are required, checked in that order before anything is done."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        console = console_of(request)
        person = await console.run(console.sessions.person, request.cookies.get(COOKIE))
        if person is None:
            return PlainTextResponse("login required", status_code=401)
        form = await request.form()
        if not same(_text(form.get("csrf")), person.csrf_token):
            return PlainTextResponse("missing or wrong CSRF token", status_code=403)
        if not person.may_change:
            return PlainTextResponse("a viewer cannot change requests", status_code=403)
        request.state.person = person
        return await handler(request, form)

    return endpoint


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def route(path: str, endpoint: Handler, methods: list[str] | None = None) -> Route:
    return Route(path, endpoint, methods=methods or ["GET"])
