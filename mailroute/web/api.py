"""The API for programs, mounted at /api/v1: the registry as JSON behind bearer tokens.

Endpoints and their shapes are in ``api_schema`` (served as /openapi.json). Every
handler is a plain function, so Starlette runs it in its thread pool: a slow
database read never stalls the event loop, and intake (its own threads or
process) never waits for a client of the API.

Input is checked strictly, before the database sees it: unknown query parameters,
values outside the documented ones and NUL characters (PostgreSQL refuses them in
text) are answered 422, never passed on.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mailroute import __version__
from mailroute.config import Config
from mailroute.core.letter.model import ParseLimits
from mailroute.ops.health import check_health, database_file_problems, mailbox_labels
from mailroute.ops.tickets import calendars, change_status, list_page, show_request
from mailroute.pipeline.status import STATUSES
from mailroute.store import Store
from mailroute.store.repository import RequestFilter, canonical_number
from mailroute.web import api_schema
from mailroute.web.api_schema import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MAX_NOTE,
    MAX_TEXT,
    NUMBER_PATTERN,
    PRIORITIES,
)
from mailroute.web.tokens import Caller, authenticate

log = logging.getLogger(__name__)

_NUMBER = re.compile(NUMBER_PATTERN)
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
_LIST_PARAMETERS = frozenset(
    {"status", "type", "priority", "queue", "organization", "breached", "q", "limit", "cursor"}
)
_CHALLENGE = 'Bearer realm="mailroute"'


class ApiError(HTTPException):
    """An answer other than 200, given as JSON ``{"error": ...}``."""


def api_app(store: Store, config: Config, clock: Callable[[], datetime]) -> Starlette:
    """The API over ``store``; ``clock`` gives now (tests pass a fixed one)."""
    api = _Api(store, config, clock)
    routes = [
        Route("/requests", api.list_requests, methods=["GET"]),
        Route("/requests/{number}", api.show_request, methods=["GET"]),
        Route("/requests/{number}/status", api.set_status, methods=["POST"]),
        Route("/health", api.health, methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )


class _Api:
    def __init__(self, store: Store, config: Config, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.calendar = calendars(config)
        self.limits = ParseLimits.from_config(config.limits)

    def caller(self, request: Request) -> Caller:
        """The token's owner, or 401 with a challenge saying what was wrong."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "send Authorization: Bearer TOKEN",
                           headers={"WWW-Authenticate": _CHALLENGE})
        caller = authenticate(self.store, token.strip(), self.clock())
        if caller is None:
            raise ApiError(401, "unknown or revoked token", headers={
                "WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'})
        return caller

    def list_requests(self, request: Request) -> Response:
        self.caller(request)
        now = self.clock()
        where, limit = _list_query(request, now)
        rows, left = list_page(self.store, limit, where, now)
        more = left > len(rows)
        return JSONResponse({"requests": rows,
                             "next_cursor": rows[-1]["number"] if more and rows else None})

    def show_request(self, request: Request) -> Response:
        self.caller(request)
        detail = show_request(self.store, _number(request), self.clock(), self.limits)
        if detail is None:
            raise ApiError(404, "no such request")
        return JSONResponse(detail)

    async def set_status(self, request: Request) -> Response:
        body = await request.body()
        return await run_in_threadpool(self._set_status, request, body)

    def _set_status(self, request: Request, body: bytes) -> Response:
        caller = self.caller(request)
        if caller.role != "operator":
            raise ApiError(403, "this token may read only (role viewer)")
        status, note = _status_body(_json_body(body))
        number = _number(request)
        changed = change_status(self.store, number, status, self.calendar, self.clock(),
                                note, by=f"api:{caller.name}")
        if changed is None:
            raise ApiError(404, "no such request")
        old, new = changed
        log.info("%s: status %s -> %s through the API (token %s)", canonical_number(number),
                 old, new, caller.name)
        return JSONResponse({"number": canonical_number(number), "old_status": old,
                             "status": new, "changed": old != new})

    def health(self, request: Request) -> Response:
        self.caller(request)
        now = self.clock()
        problems = database_file_problems(self.config.database.url)
        if problems:
            body: dict[str, Any] = {"healthy": False, "problems": problems}
        else:
            body = check_health(
                self.store, self.config.health, now,
                timedelta(seconds=self.config.replies.suppress_for),
                letter_seconds=self.config.limits.letter_seconds,
                labels=mailbox_labels(self.config),
            ).as_dict()
        body["version"] = __version__
        # 200 either way: the answer was given; whether the desk is well is in the body
        return JSONResponse(body)

    def openapi(self, request: Request) -> Response:
        """The contract is public: it describes no data, and clients read it before a token."""
        return JSONResponse(api_schema.document())


def _json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:  # UnicodeDecodeError included
        raise ApiError(400, "the body is not JSON") from None


def _status_body(body: Any) -> tuple[str, str | None]:
    if not isinstance(body, dict):
        raise ApiError(400, 'the body is not a JSON object like {"status": "in_progress"}')
    unknown = sorted(set(body) - {"status", "note"})
    if unknown:
        raise ApiError(422, f"unknown field {unknown[0]!r}; fields: status, note")
    status, note = body.get("status"), body.get("note")
    if status not in STATUSES:
        raise ApiError(422, f"status must be one of: {', '.join(STATUSES)}")
    if note is not None and not (isinstance(note, str) and len(note) <= MAX_NOTE
                                 and "\x00" not in note):
        raise ApiError(422, f"note must be text of at most {MAX_NOTE} characters")
    return status, note


def _number(request: Request) -> str:
    number = str(request.path_params["number"])
    if not _NUMBER.match(number):
        raise ApiError(404, "no such request")
    return number


def _list_query(request: Request, now: datetime) -> tuple[RequestFilter, int]:
    """The filter and page size of GET /requests, or 422/400 for one that is not."""
    params = request.query_params
    for name in params:
        if name not in _LIST_PARAMETERS:
            raise ApiError(422, f"unknown parameter {name!r}")
        if len(params.getlist(name)) > 1:
            raise ApiError(422, f"{name!r} given more than once")
    text = {name: _text(name, params.get(name)) for name in ("type", "queue", "organization", "q")}
    status, priority, cursor = params.get("status"), params.get("priority"), params.get("cursor")
    if status is not None and status not in STATUSES:
        raise ApiError(422, f"status must be one of: {', '.join(STATUSES)}")
    if priority is not None and priority not in PRIORITIES:
        raise ApiError(422, f"priority must be one of: {', '.join(PRIORITIES)}")
    if cursor is not None and not _NUMBER.match(cursor):
        raise ApiError(400, "cursor is not one this API gave")
    breached = _boolean("breached", params.get("breached"))
    where = RequestFilter(
        status=status, request_type=text["type"], priority=priority, queue=text["queue"],
        organization=text["organization"], search=text["q"], after=cursor,
        breached_at=now if breached else None,
    )
    return where, _limit(params.get("limit"))


def _text(name: str, value: str | None) -> str | None:
    """Free text of a filter; empty is no filter."""
    if value is None or value == "":
        return None
    if len(value) > MAX_TEXT or "\x00" in value:
        raise ApiError(422, f"{name} must be text of at most {MAX_TEXT} characters")
    return value


def _boolean(name: str, value: str | None) -> bool:
    if value is None:
        return False
    if value.lower() not in _BOOLEANS:
        raise ApiError(422, f"{name} must be true or false")
    return _BOOLEANS[value.lower()]


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if not re.fullmatch(r"[0-9]{1,4}", value) or not 1 <= int(value) <= MAX_LIMIT:
        raise ApiError(422, f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(value)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("API %s %s failed", request.method, request.url.path)
    return JSONResponse({"error": "internal error; see the server's log"}, status_code=500)
