"""`POST /admin/erasures` (scope `admin`): erase a channel identity's or a contact's personal
data (privacy.erasure). The API key's name is recorded as who asked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.responses import JSON, error
from domain.callbacks import MAX_IDENTITY
from privacy.erasure import MAX_NAME, MAX_REASON, ErasureRefused, erase
from service.runtime import Runtime

ERASURES = "/admin/erasures"
MAX_BODY = 64 * 1024

# Not empty once trimmed, no NUL: what privacy.erasure accepts (the OpenAPI document says it).
FILLED = "^[^\\x00]*[^\\s\\x00][^\\x00]*$"


def _field(max_length: int) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": FILLED}


COMMON = {
    "reason": {
        **_field(MAX_REASON),
        "description": "why (kept in the log in the clear: a ticket number, not personal data)",
    },
    "forget_consent": {
        "type": "boolean",
        "description": "also drop the opt-out suppression of these identities (default false: "
        "kept, so they are not messaged again)",
    },
}
IDENTITY_FIELDS = {"channel": _field(64), "identity": _field(MAX_IDENTITY)}
CONTACT_FIELDS = {"project_id": _field(MAX_NAME), "contact_id": _field(MAX_NAME)}
REQUEST_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {
            "type": "object",
            "required": ["channel", "identity", "reason"],
            "properties": {**IDENTITY_FIELDS, **COMMON},
            "additionalProperties": False,
        },
        {
            "type": "object",
            "required": ["project_id", "contact_id", "reason"],
            "properties": {**CONTACT_FIELDS, **COMMON},
            "additionalProperties": False,
        },
    ]
}


class BadRequest(Exception):
    pass


def _request(body: Any) -> dict[str, Any]:
    """The erasure asked for, checked as the schema says; BadRequest says what is wrong."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    by_identity = "identity" in body or "channel" in body
    by_contact = "contact_id" in body or "project_id" in body
    if by_identity == by_contact:
        raise BadRequest(
            "name either a channel identity (channel, identity) or a contact "
            "(project_id, contact_id)"
        )
    fields = {**(IDENTITY_FIELDS if by_identity else CONTACT_FIELDS), **COMMON}
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}; known: {', '.join(fields)}")
    missing = [name for name in fields if name != "forget_consent" and name not in body]
    if missing:
        raise BadRequest(f"missing field(s): {', '.join(missing)}")
    for name, value in body.items():
        if name == "forget_consent":
            if not isinstance(value, bool):
                raise BadRequest("forget_consent must be true or false")
        elif not isinstance(value, str):
            raise BadRequest(f"{name} must be a string")
        elif len(value) > fields[name]["maxLength"]:
            raise BadRequest(f"{name} must be at most {fields[name]['maxLength']} characters")
        elif "\x00" in value or not value.strip():
            raise BadRequest(f"{name} must hold text (not blank, no NUL)")
    return body


def erasures_endpoint(runtime: Runtime) -> Callable[[Request], Awaitable[Response]]:
    async def erasures(request: Request) -> Response:
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                return error(413, "body_too_large", f"the body must be at most {MAX_BODY} bytes")
        try:
            asked = _request(orjson.loads(raw))
        except orjson.JSONDecodeError as exc:
            return error(400, "not_json", f"the body is not JSON: {exc}")
        except BadRequest as exc:
            return error(400, "bad_request", str(exc))
        by = f"key:{request.scope.get('ledger.key_name', '?')}"
        try:
            report = await run_in_threadpool(
                lambda: erase(
                    runtime.ledger(),
                    channel=asked.get("channel"),
                    identity=asked.get("identity"),
                    project_id=asked.get("project_id"),
                    contact_id=asked.get("contact_id"),
                    by=by,
                    reason=asked["reason"],
                    forget_consent=bool(asked.get("forget_consent", False)),
                    db=runtime.database() if "contact_id" in asked else None,
                )
            )
        except ErasureRefused as exc:
            return error(409, "cannot_erase", str(exc))
        return JSON(report.as_dict(), status_code=201)

    return erasures
