"""Query and path parameters the server cannot use are a 400 naming them, never a 500, on
SQLite and PostgreSQL: non-ASCII digits, numbers past 64 bits, times whose UTC value is outside
the years 1-9999, and NUL bytes, lone surrogates or over-long values in a path."""

from __future__ import annotations

import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request

from api.query_routes import path_param


@pytest.mark.parametrize("value", ["a\ud800b", "\x00", "x" * 1025, ""])
def test_path_param_refuses_what_no_store_can_compare(value: str) -> None:
    # Lone surrogates cannot come through an HTTP server's percent-decoding; ASGI can pass them.
    request = Request({"type": "http", "path_params": {"message_id": value}})
    with pytest.raises(HTTPException) as refused:
        path_param(request, "message_id")
    assert refused.value.status_code == 400
    assert "'message_id'" in str(refused.value.detail)


def test_path_param_passes_ordinary_values() -> None:
    request = Request({"type": "http", "path_params": {"message_id": "01HZX/é"}})
    assert path_param(request, "message_id") == "01HZX/é"
