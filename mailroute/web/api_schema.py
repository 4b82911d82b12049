"""The API's OpenAPI 3 document, written by hand next to the code it describes.

schemathesis (tests/web/test_api.py) checks every answer against it, so a field added
to a response without being added here fails the tests.
"""

from __future__ import annotations

from typing import Any

from mailroute import __version__
from mailroute.pipeline.status import STATUSES

PRIORITIES = ("critical", "normal", "low")
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
MAX_TEXT = 200  # a filter's or search's length
MAX_NOTE = 2000
# Text without NUL, which PostgreSQL cannot keep or compare.
NO_NUL = "^[^\\u0000]*$"
# A request number or a cursor: letters, digits and dashes (SD-000042, or just 42).
NUMBER_PATTERN = "^[A-Za-z0-9-]{1,40}$"


def _nullable(kind: str, **more: Any) -> dict[str, Any]:
    return {"type": kind, "nullable": True, **more}


_TIME = _nullable("string", format="date-time")
_TEXT = _nullable("string")

_SUMMARY_FIELDS: dict[str, Any] = {
    "number": {"type": "string", "example": "SD-000001"},
    "status": {"type": "string", "enum": list(STATUSES)},
    "request_type": {"type": "string"},
    "priority": {"type": "string"},
    "organization": _TEXT,
    "registration_number": _TEXT,
    "requester": {"type": "string"},
    "subject": _TEXT,
    "created_at": {"type": "string", "format": "date-time"},
    "arrived_at": {"type": "string", "format": "date-time",
                   "description": "When its first letter arrived."},
    "messages": {"type": "integer", "description": "Letters in plus replies out."},
    "first_response_due": _TIME,
    "resolution_due": _TIME,
    "breached": {"type": "boolean"},
    "queue": _TEXT,
    "mailbox": {**_TEXT, "description": "The mailbox it came in through (its name or "
                "address); null for a request from before there were several."},
}

_ATTACHMENT = {
    "type": "object",
    "required": ["filename", "content_type", "size", "inline"],
    "properties": {
        "filename": {"type": "string"},
        "content_type": {"type": "string"},
        "size": {"type": "integer"},
        "inline": {"type": "boolean"},
    },
}

_LETTER = {
    "type": "object",
    "required": ["id", "state", "from", "message_id", "received_at", "subject", "text",
                 "attachments"],
    "properties": {
        "id": {"type": "integer"},
        "state": {"type": "string"},
        "from": _TEXT,
        "message_id": _TEXT,
        "received_at": {"type": "string", "format": "date-time"},
        "subject": _TEXT,
        "text": _nullable("string", description="The letter as text, as the rules read it: "
                          "HTML is converted, never passed on. null if it cannot be read."),
        "attachments": {"type": "array", "items": _ATTACHMENT},
    },
}

_REPLY = {
    "type": "object",
    "required": ["id", "kind", "state", "to", "message_id", "not_before", "sent_at",
                 "attempts", "error"],
    "properties": {
        "id": {"type": "integer"},
        "kind": {"type": "string"},
        "state": {"type": "string"},
        "to": {"type": "string"},
        "message_id": {"type": "string"},
        "not_before": {"type": "string", "format": "date-time"},
        "sent_at": _TIME,
        "attempts": {"type": "integer"},
        "error": _TEXT,
    },
}

_DETAIL_FIELDS: dict[str, Any] = {
    "requester_name": _TEXT,
    "language": {"type": "string"},
    "missing": {"type": "array", "items": {"type": "string"}},
    "tier": _TEXT,
    "clarifications": {"type": "integer"},
    "first_response_at": _TIME,
    "resolved_at": _TIME,
    "closed_at": _TIME,
    "parent": _nullable("string", description="The request this one follows."),
    "reasons": {
        "type": "array",
        "description": "Why the rules decided as they did: {rule, sets, detail}.",
        "items": {"anyOf": [{"type": "object"}, {"type": "string"}]},
    },
    "letters": {"type": "array", "items": _LETTER},
    "replies": {"type": "array", "items": _REPLY},
    "events": {
        "type": "array",
        "description": "The history, oldest first; each kind has its own further fields.",
        "items": {
            "type": "object",
            "required": ["at", "kind"],
            "properties": {"at": {"type": "string", "format": "date-time"},
                           "kind": {"type": "string"}},
        },
    },
}

_HEALTH = {
    "type": "object",
    "required": ["healthy", "problems", "version"],
    "properties": {
        "healthy": {"type": "boolean"},
        "problems": {"type": "array", "items": {"type": "string"}},
        "version": {"type": "string"},
        "last_poll_at": _TIME,
        "backlog": _nullable("integer"),
        "pending_letters": {"type": "integer"},
        "quarantined": {"type": "integer"},
        "outbox": {"type": "object", "additionalProperties": {"type": "integer"}},
        "oldest_unsent_due": _TIME,
        "last_error": _TEXT,
        "last_error_at": _TIME,
        "alerts": {"type": "array", "items": {"type": "string"}},
        "caps": {"type": "array", "items": {"type": "string"}},
        "suppressed": {"type": "integer"},
        "letter_faults": {"type": "array", "items": {"type": "string"}},
        "in_hand_since": _TIME,
        "started_at": _TIME,
        "mailboxes": {
            "type": "array",
            "description": "With several mailboxes, each one's last poll, backlog and error.",
            "items": {"type": "object", "properties": {
                "mailbox": {"type": "string"}, "last_poll_at": _TIME,
                "backlog": _nullable("integer"), "last_error": _TEXT, "last_error_at": _TIME,
            }},
        },
    },
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, ref: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


_UNAUTHORIZED = {
    **_error("No token, or an unknown or revoked one."),
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


_FREE_TEXT = {"type": "string", "maxLength": MAX_TEXT, "pattern": NO_NUL}
_LIST_PARAMETERS = [
    _query("status", "Only this status.", {"type": "string", "enum": list(STATUSES)}),
    _query("type", "Only this request type, e.g. incident, service_request.", _FREE_TEXT),
    _query("priority", "Only this priority.", {"type": "string", "enum": list(PRIORITIES)}),
    _query("queue", "Only this queue.", _FREE_TEXT),
    _query("organization", "Part of the organization's name or registration number.",
           _FREE_TEXT),
    _query("breached", "true: only requests past a first-response or resolution due time.",
           {"type": "boolean"}),
    _query("q", "Part of the number, organization, requester or subject.", _FREE_TEXT),
    _query("limit", "At most this many, newest first.",
           {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}),
    _query("cursor", "next_cursor of the page before.",
           {"type": "string", "pattern": NUMBER_PATTERN}),
]
_NUMBER_PARAMETER = {
    "name": "number", "in": "path", "required": True,
    "description": "SD-000042, or just 42.",
    "schema": {"type": "string", "pattern": NUMBER_PATTERN}, "example": "SD-000001",
}


def _paths() -> dict[str, Any]:
    return {
        "/requests": {"get": {
            "summary": "Requests, newest first, filtered; one page at a time.",
            "operationId": "listRequests",
            "parameters": _LIST_PARAMETERS,
            "responses": {"200": _json("One page.", "RequestPage"),
                          "400": _error("A cursor that is not one."),
                          "401": _UNAUTHORIZED, "422": _error("A filter that is not one.")},
        }},
        "/requests/{number}": {"get": {
            "summary": "One request: its letters as text, reasons, history and replies.",
            "operationId": "getRequest",
            "parameters": [_NUMBER_PARAMETER],
            "responses": {"200": _json("The request.", "RequestDetail"),
                          "401": _UNAUTHORIZED, "404": _error("No such request.")},
        }},
        "/requests/{number}/status": {"post": {
            "summary": "Change a request's status (operator tokens only); kept in its history.",
            "operationId": "setRequestStatus",
            "parameters": [_NUMBER_PARAMETER],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/StatusChange"}}}},
            "responses": {"200": _json("The change (or that there was none).", "StatusChanged"),
                          "400": _error("A body that is not a JSON object."),
                          "401": _UNAUTHORIZED, "403": _error("A viewer token."),
                          "404": _error("No such request."),
                          "422": _error("An unknown status or a bad note.")},
        }},
        "/health": {"get": {
            "summary": "What `mailroute status` knows.",
            "operationId": "getHealth",
            "responses": {"200": _json("The desk's health; healthy false with problems "
                                       "when it is not well.", "Health"),
                          "401": _UNAUTHORIZED},
        }},
    }


def _schemas() -> dict[str, Any]:
    summary_required = list(_SUMMARY_FIELDS)
    return {
        "Error": {"type": "object", "required": ["error"],
                  "properties": {"error": {"type": "string"}}},
        "RequestSummary": {"type": "object", "required": summary_required,
                           "properties": _SUMMARY_FIELDS},
        "RequestPage": {
            "type": "object", "required": ["requests", "next_cursor"],
            "properties": {
                "requests": {"type": "array",
                             "items": {"$ref": "#/components/schemas/RequestSummary"}},
                "next_cursor": _nullable("string", description="Pass as cursor for the "
                                         "next page; null on the last page."),
            },
        },
        "RequestDetail": {"type": "object",
                          "required": summary_required + list(_DETAIL_FIELDS),
                          "properties": _SUMMARY_FIELDS | _DETAIL_FIELDS},
        "StatusChange": {
            "type": "object", "required": ["status"], "additionalProperties": False,
            "properties": {
                "status": {"type": "string", "enum": list(STATUSES)},
                "note": _nullable("string", maxLength=MAX_NOTE, pattern=NO_NUL,
                                  description="Why, for the history."),
            },
        },
        "StatusChanged": {
            "type": "object", "required": ["number", "old_status", "status", "changed"],
            "properties": {"number": {"type": "string"},
                           "old_status": {"type": "string", "enum": list(STATUSES)},
                           "status": {"type": "string", "enum": list(STATUSES)},
                           "changed": {"type": "boolean"}},
        },
        "Health": _HEALTH,
    }


def document() -> dict[str, Any]:
    """The whole OpenAPI document, paths relative to the API's mount point."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "mailroute API", "version": __version__,
                 "description": "The request registry for programs. Send "
                 "`Authorization: Bearer TOKEN` (`mailroute tokens create NAME`)."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
        },
    }
