"""The Starlette application: routes, error mapping, start-up and the in-process follower."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.admin_routes import ERASURES, erasures_endpoint
from api.auth import (
    ADMIN,
    ANY_KEY,
    AUDIT,
    HEALTH,
    METRICS,
    READ,
    Denied,
    Guard,
    PublicSide,
    consent_scope,
)
from api.console.context import Context as ConsoleContext
from api.console.routes import CONSOLE_SCOPES
from api.console.routes import routes as console_routes
from api.console.session import Sessions
from api.observe import Observed, metrics_endpoint
from api.openapi import document
from api.query_routes import Queries
from api.responses import JSON, error
from api.webhook import PATH as WEBHOOK_PATH
from api.webhook import SinchWebhook, WebhookFirst, unavailable
from privacy.retention import Daily
from projections.faults import describe
from service import metrics
from service.runtime import Runtime
from service.settings import Settings, collect_less_often
from store.backend import store_unavailable
from store.ledger import Ledger, StoreMoved
from store.vault import SecretsError

log = logging.getLogger("callback_ledger")

UNSIGNED_WARNING = (
    "SINCH_WEBHOOK_SECRET is not set: callbacks are accepted WITHOUT a signature check. "
    "Anyone who can reach this endpoint can write to the ledger. Set the webhook secret in "
    "Sinch and here before exposing this service."
)


@dataclass
class Progress:
    """When each projection's position last moved, as this process saw it."""

    seen: dict[str, tuple[int, float]] = field(default_factory=dict)

    def stalled(self, name: str, position: int, lag: int, max_lag_s: float) -> str | None:
        now = time.monotonic()
        known = self.seen.get(name)
        if known is None or known[0] != position or lag == 0:
            self.seen[name] = (position, now)
            return None
        still = now - known[1]
        if still <= max_lag_s:
            return None
        return f"{lag} events behind and not moving for {still:.0f} s"


# The scope each route needs (auth.py). A test checks every route of the app against this
# table and against the issue's; a route missing here cannot be registered (KeyError below).
ROUTE_SCOPES: dict[str, Any] = {
    "/healthz": HEALTH,
    "/openapi.json": ANY_KEY,
    "/messages": READ,
    "/messages/stalled": READ,
    "/messages/{message_id}": READ,
    "/read-confirmations": READ,
    "/contacts/{contact_id}/consent": READ,
    "/consent/check": READ,
    "/consent": consent_scope,  # read; audit with ?at=
    "/contacts/{contact_id}/consent/history": AUDIT,
    "/consent/review": AUDIT,
    # The raw body with phone numbers, message text and the signature headers: audit only.
    "/callbacks/{reference:path}": AUDIT,
    # What is stored, by trigger and arrival: references and times, no bodies.
    "/callbacks": AUDIT,
    "/quarantine": AUDIT,
    "/access-log": AUDIT,
    # The seal chain's head (store.seal), to be recorded elsewhere.
    "/seal": AUDIT,
    "/metrics": METRICS,
    # The web console (api/console): its pages and forms, each with the scope its data needs.
    **CONSOLE_SCOPES,
    # Erasure of personal data (POST).
    ERASURES: ADMIN,
}


def app_from_env() -> Observed:
    """The factory each server process calls when `serve --workers` starts several."""
    collect_less_often()
    return create_app(Settings.from_env())


class StoreUnavailable:
    """A route that fails because the store is unavailable (store.backend.store_unavailable)
    answers 503 with Retry-After, as the webhook does. Any other failure is ours or the
    data's, not the request's: it answers 503 too, saying so (never a 500), and the log names
    the error's class (not its text or the path, which may quote personal data)."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            if started:
                raise
            if store_unavailable(self.runtime.backend, exc):
                response = unavailable(self.runtime.settings, exc)
            else:
                log.error("a request failed: %s", type(exc).__name__)
                response = error(
                    503, "internal_error", "the request could not be answered; the log says why"
                )
            await response(scope, receive, send)


def create_app(settings: Settings, ledger: Ledger | None = None) -> Observed:
    runtime = Runtime(
        settings, ledger, observe=metrics.group_commit, on_follower_error=metrics.follower_error
    )
    guard = Guard(runtime)
    follower = runtime.follower()
    progress = Progress()
    queries = Queries(runtime, guard.store, follower.wake if follower else lambda: None)
    retention = Daily(runtime.ledger, settings)

    async def healthz(request: Request) -> Response:
        # Without a key (and always on the public port of a private listener) only the status
        # is said, with the same code: enough for a load balancer, nothing about the data.
        bare = "ledger.public" in request.scope or not request.headers.get("authorization")
        if not bare:
            try:
                await guard.authenticate(request)
            except Denied as denied:
                return denied.response
        response = await health_detail()
        if bare:
            body = orjson.loads(response.body)
            status = body.get("status") or ("ok" if response.status_code == 200 else "failing")
            short = JSON({"status": status}, response.status_code)
            if "retry-after" in response.headers:
                short.headers["Retry-After"] = response.headers["retry-after"]
            return short
        return response

    async def health_detail() -> Response:
        try:
            head = await run_in_threadpool(lambda: runtime.ledger().ping())
            projections = await run_in_threadpool(lambda: runtime.projector().positions())
        except StoreMoved as exc:
            return error(503, "store_moved", str(exc), status="failing")
        except SecretsError as exc:  # serve refuses to start so; a store that came up later
            return error(503, "wrong_keys", str(exc), status="failing")
        except Exception as exc:
            if not store_unavailable(runtime.backend, exc):
                raise
            return unavailable(settings, exc)
        stuck = {name: p["fault"] for name, p in projections.items() if "fault" in p}
        problems = [
            f"projection {name} is stuck: {describe(fault)}" for name, fault in stuck.items()
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
        # Shown, not failing: a retention run that failed is tried again the next day.
        if retention.health.last_run or retention.health.last_error:
            body["retention"] = retention.health.as_dict()
        if problems:
            # Reachable is not the same as working: never "ok" while it cannot do its job.
            body["detail"] = "; ".join(problems)
            return JSON(body, status_code=503)
        return JSON(body)

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

    async def keys_error(request: Request, exc: Exception) -> Response:
        return error(503, "wrong_keys", str(exc))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not settings.webhook_secrets:
            log.warning("!" * 72)
            log.warning(UNSIGNED_WARNING)
            log.warning("!" * 72)
        try:
            await run_in_threadpool(runtime.projector)
        except Exception as exc:
            if not store_unavailable(runtime.backend, exc):
                raise
            log.error("the store is not reachable yet (%s); answering 503 until it is", exc)
        if follower is not None:
            follower.start()
        daily = asyncio.create_task(retention.forever())
        yield
        daily.cancel()
        if follower is not None:
            follower.stop()
        await runtime.aclose_writer()
        runtime.close()

    webhook = SinchWebhook(settings, runtime, follower.wake if follower else None)
    handlers: dict[str, Any] = {
        "/healthz": healthz,
        "/openapi.json": openapi_json,
        "/quarantine": queries.quarantine,
        "/messages": queries.messages,
        "/messages/stalled": queries.stalled,  # before the id: a route, not a message
        "/messages/{message_id}": queries.message,
        "/read-confirmations": queries.read_confirmations,
        "/contacts/{contact_id}/consent": queries.contact_consent,
        "/contacts/{contact_id}/consent/history": queries.contact_history,
        "/consent": queries.consent_at,
        "/consent/check": queries.consent_check,
        "/consent/review": queries.review,
        "/callbacks/{reference:path}": queries.callback,
        "/callbacks": queries.callbacks,
        "/access-log": queries.access_log,
        "/seal": queries.seal,
        "/metrics": metrics_endpoint(runtime, settings.metrics_refresh_s),
        ERASURES: erasures_endpoint(runtime),
    }

    def guarded(path: str) -> Route:
        needs = ROUTE_SCOPES[path]
        handler = handlers[path]
        if needs != HEALTH:  # /healthz checks a key itself, only when one is sent
            handler = guard.protect(handler, needs, path.replace(":path", ""))
        route = Route(path, handler, methods=["POST"] if path == ERASURES else ["GET"])
        route.needs = needs  # type: ignore[attr-defined]
        return route

    console = console_routes(ConsoleContext(runtime, queries, Sessions(guard), health_detail))
    for route in console:
        assert route.needs is ROUTE_SCOPES[route.path]  # type: ignore[attr-defined]

    app = Starlette(
        routes=[
            # The webhook needs no key (Sinch sends none): its signature is checked instead.
            Route(WEBHOOK_PATH, webhook.handle, methods=["POST"]),
            # A target URL typed with a slash is served as it is: Sinch drops a callback
            # answered 307, and a redirect built from the Host header is not ours to give.
            Route(WEBHOOK_PATH + "/", webhook.handle, methods=["POST"]),
            *(guarded(path) for path in handlers),
            *console,
        ],
        exception_handlers={
            HTTPException: http_error,
            SecretsError: keys_error,
        },
        middleware=[Middleware(StoreUnavailable, runtime=runtime)],
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    served: ASGIApp = WebhookFirst(app, webhook)
    if settings.private_address is not None:
        public = {
            ("POST", WEBHOOK_PATH),
            ("POST", WEBHOOK_PATH + "/"),
            ("GET", "/healthz"),
            ("HEAD", "/healthz"),  # some load balancers probe with HEAD
        }
        served = PublicSide(served, settings.private_address[1], public)
    return Observed(served)
