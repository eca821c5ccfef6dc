"""The Starlette application: routes, error mapping, start-up and the in-process follower."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callback_ledger.config import Settings, collect_less_often
from callback_ledger.ledger import Ledger, StoreMoved
from callback_ledger.projections.live import LiveFollower
from callback_ledger.projections.projector import describe
from callback_ledger.runtime import Runtime

from .consent import ConsentQueries
from .health import Progress
from .observe import Observed, metrics_endpoint
from .openapi import document
from .queries import MAX_INTEGER, Params, Queries
from .responses import JSON, error
from .webhook import PATH as WEBHOOK_PATH
from .webhook import UNAVAILABLE, SinchWebhook, WebhookFirst, unavailable

log = logging.getLogger("callback_ledger")

UNSIGNED_WARNING = (
    "SINCH_WEBHOOK_SECRET is not set: callbacks are accepted WITHOUT a signature check. "
    "Anyone who can reach this endpoint can write to the ledger. Set the webhook secret in "
    "Sinch and here before exposing this service."
)


# A page of the quarantine stops growing past this (bodies may be up to the body limit each):
# one request must not hold the process's memory hostage. At least one item is always sent.
QUARANTINE_PAGE_BYTES = 4 * 1024 * 1024


def page_by_size(
    items: Iterator[dict[str, Any]], max_bytes: int
) -> tuple[list[dict[str, Any]], bool]:
    """The items up to `max_bytes` (counting their bodies), and whether it stopped for size."""
    page: list[dict[str, Any]] = []
    size = 0
    for item in items:
        page.append(item)
        size += len(item["raw_base64"]) + 256
        if size >= max_bytes:
            return page, True
    return page, False


def app_from_env() -> Observed:
    """The factory each server process calls when `serve --workers` starts several."""
    collect_less_often()
    return create_app(Settings.from_env())


def create_app(settings: Settings, ledger: Ledger | None = None) -> Observed:
    runtime = Runtime(settings, ledger)
    follower = LiveFollower(runtime.projector) if settings.projections == "inline" else None
    queries = Queries(runtime)
    progress = Progress()
    consent = ConsentQueries(runtime, follower.wake if follower else lambda: None)

    async def healthz(request: Request) -> Response:
        try:
            head = await run_in_threadpool(lambda: runtime.ledger().ping())
            projections = await run_in_threadpool(lambda: runtime.projector().positions())
        except StoreMoved as exc:
            return error(503, "store_moved", str(exc), status="failing")
        except UNAVAILABLE as exc:
            return unavailable(settings, exc)
        stuck = {name: p["fault"] for name, p in projections.items() if "fault" in p}
        problems = [
            f"projection {name} "
            f"{'needs a replay' if fault['kind'] == 'replay' else 'is stuck'}: {describe(fault)}"
            for name, fault in stuck.items()
        ]
        for name, p in projections.items():
            if name not in stuck and (
                why := progress.stalled(name, p["position"], p["lag"], settings.health_max_lag_s)
            ):
                problems.append(f"projection {name} is {why}")
        window = max(settings.retry_after_s * 2, 30)
        if (why := webhook.health.problem(window)) is not None:
            problems.append(f"callbacks cannot be recorded: {why}")
        body: dict[str, Any] = {
            "status": "failing" if problems else "ok",
            "backend": settings.backend,
            "events": head,
            "projections": projections,
            "follower": settings.projections,
        }
        writer = runtime.opened_writer()
        if writer is not None:
            body["group_commit"] = {"batches": writer.batches, "callbacks": writer.commands}
        if follower is not None and follower.last_error:
            body["follower_error"] = follower.last_error
        if problems:
            # Reachable is not the same as working: never "ok" while it cannot do its job.
            body["detail"] = "; ".join(problems)
            return JSON(body, status_code=503)
        return JSON(body)

    async def quarantine(request: Request) -> Response:
        params = Params(request, ["after", "limit"])
        after = params.whole("after", 0, MAX_INTEGER) or 0
        limit = params.limit()
        items, full = await run_in_threadpool(
            lambda: page_by_size(runtime.ledger().quarantined(after, limit), QUARANTINE_PAGE_BYTES)
        )
        next_after = items[-1]["id"] if full or len(items) == limit else None
        return JSON({"items": items, "next_after": next_after})

    openapi = JSON(document())

    async def openapi_json(request: Request) -> Response:
        return openapi

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        response = error(
            exc.status_code,
            "bad_request" if exc.status_code == 400 else "http_error",
            str(exc.detail),
        )
        response.headers.update(exc.headers or {})
        return response

    async def store_error(request: Request, exc: Exception) -> Response:
        return unavailable(settings, exc)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not settings.webhook_secrets:
            log.warning("!" * 72)
            log.warning(UNSIGNED_WARNING)
            log.warning("!" * 72)
        try:
            await run_in_threadpool(runtime.projector)
        except UNAVAILABLE as exc:
            log.error("the store is not reachable yet (%s); answering 503 until it is", exc)
        if follower is not None:
            follower.start()
        yield
        if follower is not None:
            follower.stop()
        await runtime.aclose_writer()
        runtime.close()

    webhook = SinchWebhook(settings, runtime, follower.wake if follower else lambda: None)
    app = Starlette(
        routes=[
            Route(WEBHOOK_PATH, webhook.handle, methods=["POST"]),
            # A target URL typed with a slash is served as it is: Sinch drops a callback
            # answered 307, and a redirect built from the Host header is not ours to give.
            Route(WEBHOOK_PATH + "/", webhook.handle, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
            Route("/quarantine", quarantine, methods=["GET"]),
            Route("/messages", queries.messages, methods=["GET"]),
            Route("/messages/stalled", queries.stalled, methods=["GET"]),
            Route("/messages/{message_id}", queries.message, methods=["GET"]),
            Route("/read-confirmations", queries.read_confirmations, methods=["GET"]),
            Route("/contacts/{contact_id}/consent", consent.contact_consent, methods=["GET"]),
            Route(
                "/contacts/{contact_id}/consent/history", consent.contact_history, methods=["GET"]
            ),
            Route("/consent", consent.consent_at, methods=["GET"]),
            Route("/consent/check", consent.consent_check, methods=["GET"]),
            Route("/consent/review", consent.review, methods=["GET"]),
            Route("/callbacks/{reference:path}", consent.callback, methods=["GET"]),
            Route(
                "/metrics", metrics_endpoint(runtime, settings.metrics_refresh_s), methods=["GET"]
            ),
        ],
        exception_handlers={
            HTTPException: http_error,
            **{exc: store_error for exc in UNAVAILABLE},
        },
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    return Observed(WebhookFirst(app, webhook))
