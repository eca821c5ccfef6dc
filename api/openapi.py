"""The OpenAPI document served at /openapi.json: the webhook's body schemas come from the same
pydantic models that validate callbacks, so the document cannot drift from the code."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from callback_ledger.domain.callbacks import Interpreted

from .queries import MESSAGE_PARAMS, READ_PARAMS

ERROR = {"$ref": "#/components/schemas/Error"}


def _query(*names: str, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return [
        {
            "name": n,
            "in": "query",
            "required": n in required,
            "schema": {"type": "integer" if n == "limit" else "string"},
        }
        for n in names
    ]


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _get(summary: str, parameters: list[dict[str, Any]], *codes: int) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "OK",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    }
    for code in codes:
        responses[str(code)] = {
            "description": "error",
            "content": {"application/json": {"schema": ERROR}},
        }
    return {"get": {"summary": summary, "parameters": parameters, "responses": responses}}


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
        str(code): {"description": why, "content": {"application/json": {"schema": ERROR}}}
        for code, why in [
            (400, "not a JSON object (kept in the quarantine)"),
            (401, "missing or bad signature"),
            (408, "body too slow"),
            (413, "body too large"),
            (422, "invalid fields of a known trigger (kept in the quarantine)"),
            (503, "store unavailable; retry after Retry-After"),
        ]
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "callback-ledger",
            "version": "0.1.0",
            "description": "Event-sourced store for Sinch Conversation API callbacks.",
        },
        "paths": {
            "/webhooks/sinch": {
                "post": {
                    "summary": "Receive a Sinch callback (any trigger; unknown ones are kept too)",
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
            "/healthz": _get("Store and projection health", [], 503),
            "/quarantine": _get("Refused callbacks", _query("after", "limit"), 400),
            "/messages": _get("Messages", _query(*MESSAGE_PARAMS), 400),
            "/messages/{message_id}": _get(
                "One message and its timeline",
                [_path("message_id"), *_query("project_id")],
                400,
                404,
                409,
            ),
            "/read-confirmations": _get("READ confirmations", _query(*READ_PARAMS), 400),
            "/contacts/{contact_id}/consent": _get(
                "Current consent of a contact", [_path("contact_id")], 400
            ),
            "/contacts/{contact_id}/consent/history": _get(
                "Consent history of a contact",
                [_path("contact_id"), *_query("since", "until", "limit", "cursor")],
                400,
            ),
            "/consent": _get(
                "Consent at an instant",
                _query("channel", "identity", "at", "project_id", required=("channel", "identity")),
                400,
            ),
            "/consent/check": _get(
                "Pre-send check",
                _query("channel", "identity", "project_id", required=("channel", "identity")),
                400,
            ),
            "/consent/review": _get(
                "Inbound free text that reads like a request to stop, for a human",
                _query("since", "until", "limit", "cursor"),
                400,
            ),
            "/callbacks/{reference}": _get(
                "The raw callback behind a fact", [_path("reference")], 400, 404
            ),
        },
        "components": {"schemas": components},
    }
