"""The OpenAPI document served at /openapi.json: the webhook's body schemas come from the same
pydantic models that validate callbacks, and the parameters' schemas from the constants Params
checks, so the document cannot drift from the code."""

from __future__ import annotations

import re
from typing import Any

from pydantic import TypeAdapter

from api import query_routes as q
from api.admin_routes import ERASURES, REQUEST_SCHEMA
from api.signature import HEADERS as SIGNATURE_HEADERS
from domain import followup
from domain.callbacks import MAX_IDENTITY, Interpreted

# Every store refuses NUL in text (PostgreSQL outright), so the server refuses it: a 400.
NO_NUL = "^[^\\x00]*$"
TEXT = {"type": "string", "maxLength": q.MAX_TEXT, "pattern": NO_NUL}
TIME = {
    "type": "string",
    "format": "date-time",
    "maxLength": q.MAX_TIME_TEXT,
    "pattern": q.TIME_PATTERN,
}
WORD = {"type": "string", "pattern": q.WORD_PATTERN}
QUERY: dict[str, dict[str, Any]] = {
    **dict.fromkeys(("project_id", "contact_id", "conversation_id", "metadata", "key"), TEXT),
    **dict.fromkeys(("status", "reason", "channel", "trigger"), WORD),
    **dict.fromkeys(("since", "until", "at"), TIME),
    "identity": {
        "type": "string",
        "maxLength": MAX_IDENTITY,
        "allOf": [{"pattern": NO_NUL}, {"pattern": q.NOT_BLANK_PATTERN}],
    },
    "next_action": {"type": "string", "enum": list(followup.ACTIONS)},
    "older_than": {
        "type": "string",
        "maxLength": q.MAX_NUMBER_TEXT,
        "pattern": "^[0-9]{1,9}[smhdSMHD]?$",
        "default": "24h",
    },
    "limit": {"type": "integer", "minimum": 1, "maximum": q.MAX_LIMIT, "default": 100},
    "after": {"type": "integer", "minimum": 0, "maximum": q.MAX_INTEGER, "default": 0},
    # Opaque: only a `next_cursor` this API gave out is taken.
    "cursor": {"type": "string", "maxLength": q.MAX_CURSOR, "pattern": "^[A-Za-z0-9_-]*$"},
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
    # Params takes an empty value as not given (`?status=&limit=10`); OpenAPI's word for that
    # is allowEmptyValue, discouraged in 3.1 but still the exact meaning.
    return [
        {"name": name, "in": "query", "required": name in required}
        | ({} if name in required else {"allowEmptyValue": True})
        | {"schema": QUERY[name]}
        for name in names
    ]


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": PATH[name]}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _answer(why: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": why, "content": _json(schema)}


def _error(code: int, why: str | None = None, retry_after: Any = RETRY_AFTER) -> dict[str, Any]:
    answer = _answer(why or WHY[code], {"$ref": "#/components/schemas/Error"})
    return answer | {"headers": retry_after} if code == 503 else answer


def _page(cursor: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", cursor],
        "properties": {
            "items": {"type": "array", "items": {"type": "object"}},
            cursor: {"type": ["string" if cursor == "next_cursor" else "integer", "null"]},
        },
    }


def _get(
    path: str,
    summary: str,
    query: tuple[str, ...] = (),
    scope: str | None = None,
    page: str | None = None,
    body: dict[str, Any] | None = None,
    required: tuple[str, ...] = (),
    also: tuple[int, ...] = (),
    reads_store: bool = True,
) -> dict[str, Any]:
    """A GET needing a key (with `scope`, if given): 401 and 403 are among its answers, 400
    when it takes parameters, 404 when it names something in its path."""
    in_path = re.findall(r"{(\w+)", path)
    codes = {401, 403} | ({400} if in_path or query else set()) | ({404} if in_path else set())
    codes |= set(also) | ({503} if reads_store else set())
    if page is not None:
        body = _page(page)
    responses: dict[str, Any] = {"200": _answer("OK", body or {"type": "object"})}
    responses |= {str(code): _error(code) for code in sorted(codes)}
    needs = f" Needs an API key with the `{scope}` scope." if scope else " Needs any API key."
    operation = {
        "summary": summary,
        "description": summary + "." + needs,
        "parameters": [*map(_path, in_path), *_query(*query, required=required)],
        "responses": responses,
    }
    return {path.replace(":path", ""): {"get": operation}}


# The answer of /messages, /callbacks and the other lists: a page and its opaque cursor.
CURSOR = "next_cursor"
SEAL = {
    "type": "object",
    "properties": {
        "position": {"type": "integer"},
        "hash": {"type": ["string", "null"]},
        "sealed_at": {"type": ["string", "null"]},
    },
}
GETS = {
    **_get("/openapi.json", "This document (OpenAPI 3.1)", reads_store=False),
    **_get("/quarantine", "Refused callbacks", ("after", "limit"), "audit", "next_after"),
    **_get("/messages", "Messages", q.MESSAGE_PARAMS, "read", CURSOR),
    **_get(
        "/messages/stalled",
        "Messages that went quiet: latest report submitted, queued or switching channel, "
        "and older than older_than (default 24h)",
        q.STALLED_PARAMS,
        "read",
        CURSOR,
    ),
    **_get(
        "/messages/{message_id}",
        "One message and its timeline",
        ("project_id",),
        "read",
        also=(409,),
    ),
    **_get("/read-confirmations", "READ confirmations", q.READ_PARAMS, "read", CURSOR),
    **_get("/contacts/{contact_id}/consent", "Current consent of a contact", scope="read"),
    **_get(
        "/contacts/{contact_id}/consent/history",
        "Consent history of a contact",
        ("since", "until", "limit", "cursor"),
        "audit",
        CURSOR,
    ),
    **_get(
        "/consent",
        "Consent now (`read` scope) or at an instant `at` (`audit` scope)",
        ("channel", "identity", "at", "project_id"),
        required=("channel", "identity"),
    ),
    **_get(
        "/consent/check",
        "Pre-send check",
        ("channel", "identity", "project_id"),
        "read",
        required=("channel", "identity"),
    ),
    **_get(
        "/consent/review",
        "Inbound free text that reads like a request to stop, for a human",
        ("since", "until", "limit", "cursor"),
        "audit",
        CURSOR,
    ),
    **_get(
        "/access-log",
        "Who read audit data: each audit-scope request and CLI audit command",
        ("since", "key", "after", "limit"),
        "audit",
        "next_after",
    ),
    **_get(
        "/seal",
        "The head of the seal chain over the event log (README: Evidence), to record "
        "elsewhere and check `callback-ledger verify` against",
        scope="audit",
        body=SEAL,
    ),
    **_get(
        "/callbacks",
        "Stored callbacks, interpreted or not (CONTACT_MERGE and other triggers kept "
        "uninterpreted too), by arrival time: references and times, not bodies",
        q.CALLBACK_PARAMS,
        "audit",
        CURSOR,
    ),
    **_get("/callbacks/{reference:path}", "The raw callback behind a fact", scope="audit"),
}


def _webhook(callback_schemas: list[dict[str, Any]]) -> dict[str, Any]:
    accepted = {
        "type": "object",
        "properties": {
            "status": {"enum": ["accepted", "duplicate"]},
            "trigger": {"type": "string"},
            "events": {"type": "integer"},
            # GET /callbacks/{reference} reads it back
            "reference": {"type": "string"},
        },
    }
    refusals = [
        (400, "not a JSON object (kept in the quarantine)"),
        (401, "missing or bad signature"),
        (408, "body too slow"),
        (413, "body too large"),
        (422, "invalid fields of a known trigger (kept in the quarantine)"),
        (503, "store unavailable; retry after Retry-After"),
    ]
    return {
        "post": {
            "summary": "Receive a Sinch callback (any trigger; unknown ones are kept too)",
            "security": [],
            "parameters": [
                {"name": h, "in": "header", "required": False, "schema": {"type": "string"}}
                for h in SIGNATURE_HEADERS
            ],
            "requestBody": {
                "required": True,
                "content": _json({"anyOf": [*callback_schemas, {"type": "object"}]}),
            },
            "responses": {
                "200": _answer("committed (or already recorded)", accepted),
                **{str(code): _error(code, why) for code, why in refusals},
            },
        }
    }


HEALTHZ = {
    "get": {
        "summary": "Health: only {status} without a key (for load balancers); "
        "store and projection detail with any valid key",
        "security": [{}, {"bearer": []}],
        "parameters": [],
        "responses": {
            "200": _answer("OK", {"type": "object", "required": ["status"]}),
            "401": _error(401, "a key was sent that is unknown, revoked or expired"),
            "503": _error(503, "failing: the detail (with a key) says why"),
        },
    }
}
METRICS = {
    "get": {
        "summary": "Prometheus metrics, in its text format (README: Operating it)",
        "parameters": [],
        "description": "Prometheus metrics. Needs an API key with the `metrics` scope.",
        "responses": {
            "200": {
                "description": "OK",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            **{str(code): _error(code) for code in (401, 403, 503)},
        },
    }
}
ERASED = {
    "type": "object",
    "required": ["erasure_id", "subjects", "keys_destroyed"],
    "properties": {
        "erasure_id": {"type": "string"},
        "scope": {"enum": ["identity", "contact"]},
        "subjects": {"type": "array", "items": {"type": "string"}},
        "keys_destroyed": {"type": "integer"},
        "erased_at": {"type": "string"},
        "by": {"type": "string"},
        "reason": {"type": "string"},
        "consent_suppression": {"enum": ["kept", "dropped"]},
        "purge_pending": {"type": ["string", "null"]},
    },
}
ERASURE = {
    "post": {
        "summary": "Erase a channel identity's or a contact's personal data",
        "description": "Destroys the data keys of the identity (or of the contact and "
        "every identity seen on it) and records an Erased fact: who (this key's name), "
        "when, why. Statuses, times and blind indexes stay; the opt-out suppression "
        "stays unless forget_consent. Needs an API key with the `admin` scope.",
        "parameters": [],
        "requestBody": {"required": True, "content": _json(REQUEST_SCHEMA)},
        "responses": {
            "201": _answer("erased: what was destroyed, and the fact's stream", ERASED),
            "400": _error(400, "the body is not a valid erasure request (the detail says why)"),
            "401": _error(401, "missing, unknown, revoked or expired key"),
            "403": _error(403, "the key lacks the admin scope"),
            "409": _error(409, "a plaintext store: it cannot erase by destroying keys"),
            "413": _error(413, "body too large"),
            "503": _error(
                503,
                "store unavailable; retry after Retry-After",
                {"Retry-After": {"schema": {"type": "integer"}}},
            ),
        },
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
    webhook = _webhook(schema["anyOf"])
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "callback-ledger",
            "version": "0.1.0",
            "description": "Event-sourced store for Sinch Conversation API callbacks.",
        },
        "paths": {
            "/webhooks/sinch": webhook,
            # A target URL typed with a slash is served the same (see the route in app.py).
            "/webhooks/sinch/": webhook,
            "/healthz": HEALTHZ,
            **GETS,
            "/metrics": METRICS,
            ERASURES: ERASURE,
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
