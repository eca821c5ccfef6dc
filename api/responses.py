"""JSON answers. Every error body says in plain words what was wrong."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error(status_code: int, code: str, detail: str, **extra: Any) -> JSON:
    return JSON({"error": code, "detail": detail, **extra}, status_code=status_code)
