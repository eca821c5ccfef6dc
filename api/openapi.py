"""The OpenAPI document served at /openapi.json: the webhook's body schemas come from the same
pydantic models that validate callbacks, so the document cannot drift from the code."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from api import admin_routes
from api import query_routes as q
from domain import followup
from domain.callbacks import MAX_IDENTITY, Interpreted

ERROR = {"$ref": "#/components/schemas/Error"}
# Every store refuses NUL in text (PostgreSQL outright), so the server refuses it: a 400.
NO_NUL = "^[^\\x00]*$"


def _text(max_length: int, pattern: str = NO_NUL) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length, "pattern": pattern}


TIME = {
    "type": "string",
    "format": "date-time",
    "maxLength": q.MAX_TIME_TEXT,
    "pattern": q.TIME_PATTERN,
}
WORD = {"type": "string", "pattern": q.WORD_PATTERN}
# What Params checks for each query parameter, in the same constants.
QUERY: dict[str, dict[str, Any]] = {
    "project_id": _text(q.MAX_TEXT),
    "contact_id": _text(q.MAX_TEXT),
    "conversation_id": _text(q.MAX_TEXT),
    "metadata": _text(q.MAX_TEXT),
    "identity": {
        "type": "string",
        "maxLength": MAX_IDENTITY,
        "allOf": [{"pattern": NO_NUL}, {"pattern": q.NOT_BLANK_PATTERN}],
    },
    "status": WORD,
    "reason": WORD,
    "next_action": {"type": "string", "enum": list(followup.ACTIONS)},
    "older_than": {
        "type": "string",
        "maxLength": q.MAX_NUMBER_TEXT,
        "pattern": "^[0-9]{1,9}[smhdSMHD]?$",
        "default": "24h",
    },
    "channel": WORD,
    "since": TIME,
    "until": TIME,
    "at": TIME,
    "limit": {"type": "integer", "minimum": 1, "maximum": q.MAX_LIMIT, "default": 100},
    "after": {"type": "integer", "minimum": 0, "maximum": q.MAX_INTEGER, "default": 0},
    # Opaque: only a `next_cursor` this API gave out is taken.
    "cursor": {"type": "string", "maxLength": q.MAX_CURSOR, "pattern": "^[A-Za-z0-9_-]*$"},
    "key": _text(q.MAX_TEXT),
}
# What path_param checks. A '/' ends a path segment: an id holding one reaches no route (404).
SEGMENT = {"type": "string", "minLength": 1, "maxLength": q.MAX_TEXT, "pattern": "^[^/\\x00]*$"}
PATH: dict[str, dict[str, Any]] = {
    "message_id": SEGMENT,
    "contact_id": SEGMENT,
    "reference": {
        "type": "string",
        "minLength": 1,
        "maxLength": q.MAX_REFERENCE,
        "pattern": NO_NUL,
    },
}
WHY = {
    400: "a parameter the server cannot use; the detail names it",
    401: "no API key, or one that is unknown, revoked or expired (Authorization: Bearer <key>)",
    403: "the API key lacks the scope this route needs; the detail names it",
    404: "not found (or an id holding '/', which reaches no route)",
    409: "ambiguous: add ?project_id=",
    503: "the store is not reachable now; retry after Retry-After",
}
RETRY_AFTER = {
    "Retry-After": {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}
}


def _query(*names: str, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    parameters = []
    for name in names:
        parameter = {"name": name, "in": "query", "required": name in required}
        if name not in required:
            # Params takes an empty value as not given (`?status=&limit=10`); OpenAPI's word for
            # that is allowEmptyValue, discouraged in 3.1 but still the exact meaning.
            parameter["allowEmptyValue"] = True
        parameters.append({**parameter, "schema": QUERY[name]})
    return parameters


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": PATH[name]}


def _error(code: int, why: str) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": why,
        "content": {"application/json": {"schema": ERROR}},
    }
    if code == 503:
        answer["headers"] = RETRY_AFTER
    return answer


def _page(cursor: str, cursor_type: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", cursor],
        "properties": {
            "items": {"type": "array", "items": {"type": "object"}},
            cursor: {"type": [cursor_type, "null"]},
        },
    }


def _get(
    summary: str,
    parameters: list[dict[str, Any]],
    *codes: int,
    body: dict[str, Any] | None = None,
    scope: str | None = None,
) -> dict[str, Any]:
    """A GET needing a key (with `scope`, if given): 401 and 403 are among its answers."""
    responses: dict[str, Any] = {
        "200": {
            "description": "OK",
            "content": {"application/json": {"schema": body or {"type": "object"}}},
        }
    }
    for code in sorted({*codes, 401, 403}):
        responses[str(code)] = _error(code, WHY[code])
    needs = f" Needs an API key with the `{scope}` scope." if scope else " Needs any API key."
    return {
        "get": {
            "summary": summary,
            "description": summary + "." + needs,
            "parameters": parameters,
            "responses": responses,
        }
    }


def document() -> dict[str, Any]:
    schema = TypeAdapter(Interpreted).json_schema(ref_template="#/components/schemas/{model}")
    components = schema.pop("$defs", {})
    components["Error"] = {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
    }
    signature_headers = [
        {"name": h, "in": "header", "required": False, "schema": {"type": "string"}}
        for h in (
            "x-sinch-webhook-signature",
            "x-sinch-webhook-signature-nonce",
            "x-sinch-webhook-signature-timestamp",
            "x-sinch-webhook-signature-algorithm",
        )
    ]
    webhook_errors = {
        str(code): _error(code, why)
        for code, why in [
            (400, "not a JSON object (kept in the quarantine)"),
            (401, "missing or bad signature"),
            (408, "body too slow"),
            (413, "body too large"),
            (422, "invalid fields of a known trigger (kept in the quarantine)"),
            (503, "store unavailable; retry after Retry-After"),
        ]
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "callback-ledger",
            "version": "0.1.0",
            "description": "Event-sourced store for Sinch Conversation API callbacks.",
        },
        "paths": {
            "/webhooks/sinch": {
                "post": {
                    "summary": "Receive a Sinch callback (any trigger; unknown ones are kept too)",
                    "security": [],
                    "parameters": signature_headers,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"anyOf": [*schema["anyOf"], {"type": "object"}]}
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "committed (or already recorded)",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "status": {"enum": ["accepted", "duplicate"]},
                                            "trigger": {"type": "string"},
                                            "events": {"type": "integer"},
                                        },
                                    }
                                }
                            },
                        },
                        **webhook_errors,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Health: only {status} without a key (for load balancers); "
                    "store and projection detail with any valid key",
                    "security": [{}, {"bearer": []}],
                    "parameters": [],
                    "responses": {
                        "200": {
                            "description": "OK",
                            "content": {
                                "application/json": {
                                    "schema": {"type": "object", "required": ["status"]}
                                }
                            },
                        },
                        "401": _error(401, "a key was sent that is unknown, revoked or expired"),
                        "503": _error(503, "failing: the detail (with a key) says why"),
                    },
                }
            },
            "/openapi.json": _get("This document (OpenAPI 3.1)", []),
            "/quarantine": _get(
                "Refused callbacks",
                _query("after", "limit"),
                400,
                503,
                body=_page("next_after", "integer"),
                scope="audit",
            ),
            "/messages": _get(
                "Messages",
                _query(*q.MESSAGE_PARAMS),
                400,
                503,
                body=_page("next_cursor", "string"),
                scope="read",
            ),
            "/messages/stalled": _get(
                "Messages that went quiet: latest report submitted, queued or switching channel, "
                "and older than older_than (default 24h)",
                _query(*q.STALLED_PARAMS),
                400,
                503,
                body=_page("next_cursor", "string"),
                scope="read",
            ),
            "/messages/{message_id}": _get(
                "One message and its timeline",
                [_path("message_id"), *_query("project_id")],
                400,
                404,
                409,
                503,
                scope="read",
            ),
            "/read-confirmations": _get(
                "READ confirmations",
                _query(*q.READ_PARAMS),
                400,
                503,
                body=_page("next_cursor", "string"),
                scope="read",
            ),
            "/contacts/{contact_id}/consent": _get(
                "Current consent of a contact", [_path("contact_id")], 400, 404, 503, scope="read"
            ),
            "/contacts/{contact_id}/consent/history": _get(
                "Consent history of a contact",
                [_path("contact_id"), *_query("since", "until", "limit", "cursor")],
                400,
                404,
                503,
                body=_page("next_cursor", "string"),
                scope="audit",
            ),
            "/consent": _get(
                "Consent now (`read` scope) or at an instant `at` (`audit` scope)",
                _query("channel", "identity", "at", "project_id", required=("channel", "identity")),
                400,
                503,
            ),
            "/consent/check": _get(
                "Pre-send check",
                _query("channel", "identity", "project_id", required=("channel", "identity")),
                400,
                503,
                scope="read",
            ),
            "/consent/review": _get(
                "Inbound free text that reads like a request to stop, for a human",
                _query("since", "until", "limit", "cursor"),
                400,
                503,
                body=_page("next_cursor", "string"),
                scope="audit",
            ),
            "/access-log": _get(
                "Who read audit data: each audit-scope request and CLI audit command",
                _query("since", "key", "after", "limit"),
                400,
                503,
                body=_page("next_after", "integer"),
                scope="audit",
            ),
            "/seal": _get(
                "The head of the seal chain over the event log (README: Evidence), to record "
                "elsewhere and check `callback-ledger verify` against",
                [],
                503,
                body={
                    "type": "object",
                    "properties": {
                        "position": {"type": "integer"},
                        "hash": {"type": ["string", "null"]},
                        "sealed_at": {"type": ["string", "null"]},
                    },
                },
                scope="audit",
            ),
            "/callbacks/{reference}": _get(
                "The raw callback behind a fact", [_path("reference")], 400, 404, 503, scope="audit"
            ),
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics, in its text format (README: Operating it)",
                    "parameters": [],
                    "description": "Prometheus metrics. Needs an API key with the `metrics` scope.",
                    "responses": {
                        "200": {
                            "description": "OK",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **{str(code): _error(code, WHY[code]) for code in (401, 403, 503)},
                    },
                }
            },
        },
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key from `callback-ledger keys create`; its scopes "
                    "(read, audit, metrics, admin) decide which routes it may call",
                }
            },
        },
        # Every route needs a key but the webhook (signed instead) and the bare /healthz.
        "security": [{"bearer": []}],
    }
    doc["paths"].update(admin_routes.openapi())
    # A target URL typed with a slash is served the same (see the route in app.py).
    doc["paths"]["/webhooks/sinch/"] = doc["paths"]["/webhooks/sinch"]
    return doc
