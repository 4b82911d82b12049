"""The console as an ASGI application: ``create_app(store, config)``.

Every page but ``/healthz`` needs a login (pages redirect to ``/login``); every POST
needs the session's CSRF token, and a viewer's POST that would change something is
refused with 403. Responses carry a strict Content-Security-Policy (no script at all
is served), and database work runs in worker threads with their own sessions, so a
slow page holds up neither other pages nor the daemon's intake.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailroute.config import Config
from mailroute.core.letter import ParseLimits
from mailroute.ops.tickets import calendars
from mailroute.store import Store
from mailroute.web import pages
from mailroute.web.auth import Sessions
from mailroute.web.guard import Console, utc_now

HERE = Path(__file__).parent
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}

class SecurityHeaders:
    """Adds the CSP and its companions to every response, static files included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.decode().lower() not in SECURITY_HEADERS]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, sending)


def create_app(
    store: Store, config: Config, clock: Callable[[], datetime] = utc_now
) -> Starlette:
    """The console (and, when the package has it, the API under /api/v1)."""
    templates = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    each = calendars(config)
    console = Console(
        store, config, clock, Sessions(store, config.web, clock), each.default,
        ParseLimits.from_config(config.limits), templates, calendars=each)
    routes: list[BaseRoute] = [*pages.routes(),
                               Mount("/static", StaticFiles(directory=HERE / "static"))]
    api = _api(store, config, clock)
    if api is not None:
        routes.append(Mount("/api/v1", api))
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])
    app.state.console = console
    return app


def _api(store: Store, config: Config, clock: Callable[[], datetime]) -> ASGIApp | None:
    """The API for programs, mounted when ``mailroute.web.api`` is installed."""
    try:
        from mailroute.web import api  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return None
    made: ASGIApp = api.api_app(store, config, clock)
    return made
