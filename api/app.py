"""The Starlette application: routes, error mapping and start-up checks."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callback_ledger.config import Settings
from callback_ledger.ledger import Ledger

from .responses import JSON, error
from .store import LedgerHolder
from .webhook import UNAVAILABLE, SinchWebhook, unavailable

log = logging.getLogger("callback_ledger")

UNSIGNED_WARNING = (
    "SINCH_WEBHOOK_SECRET is not set: callbacks are accepted WITHOUT a signature check. "
    "Anyone who can reach this endpoint can write to the ledger. Set the webhook secret in "
    "Sinch and here before exposing this service."
)


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        raise HTTPException(400, f"query parameter {name!r} must be a whole number {low}-{high}")
    return int(value)


def create_app(settings: Settings, ledger: Ledger | None = None) -> Starlette:
    store = LedgerHolder(settings, ledger)

    async def healthz(request: Request) -> Response:
        try:
            ledger = await run_in_threadpool(store.get)
            head = await run_in_threadpool(ledger.ping)
        except UNAVAILABLE as exc:
            return unavailable(settings, exc)
        return JSON({"status": "ok", "backend": settings.backend, "events": head})

    async def quarantine(request: Request) -> Response:
        after = query_int(request, "after", 0, 0, 2**62)
        limit = query_int(request, "limit", 100, 1, 1000)
        try:
            ledger = await run_in_threadpool(store.get)
            items = await run_in_threadpool(lambda: list(ledger.quarantined(after, limit)))
        except UNAVAILABLE as exc:
            return unavailable(settings, exc)
        next_after = items[-1]["id"] if len(items) == limit else None
        return JSON({"items": items, "next_after": next_after})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        response = error(exc.status_code, "http_error", str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not settings.webhook_secrets:
            log.warning("!" * 72)
            log.warning(UNSIGNED_WARNING)
            log.warning("!" * 72)
        try:
            await run_in_threadpool(store.get)
        except UNAVAILABLE as exc:
            log.error("the event store is not reachable yet (%s); answering 503 until it is", exc)
        yield
        store.close()

    return Starlette(
        routes=[
            Route("/webhooks/sinch", SinchWebhook(settings, store).handle, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/quarantine", quarantine, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
