"""Health: what /healthz says (with a key), the lag of each projection, and the 503s this
process has answered since it started, per route."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from api.console.context import Context
from api.console.render import page
from service import metrics


def answered_503() -> list[dict[str, Any]]:
    """The 503 answers counted by the request metrics, per route (this process, since start)."""
    found = []
    for family in metrics.RESPONSES.collect():
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_total") and labels.get("status") == "503" and sample.value:
                found.append({"route": labels.get("route", "?"), "count": int(sample.value)})
    return sorted(found, key=lambda item: -item["count"])


async def health_page(context: Context, request: Request) -> Response:
    answer = await context.health_detail()
    body = orjson.loads(answer.body)
    projections = body.get("projections") or {}
    return page(
        request,
        "health.html",
        status_code=200,
        code=answer.status_code,
        health=body,
        projections=sorted(projections.items()),
        unavailable=answered_503(),
    )
