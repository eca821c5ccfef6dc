"""Around every request, callbacks included: a request id (`X-Request-ID`, kept when sane),
the request's line in the log, and its metrics. Routes are labelled by their path template,
never the raw path: bounded labels, and no identifier from a URL in a label or a log line."""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

import orjson
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.webhook import PATH as WEBHOOK_PATH
from domain.callbacks import TRIGGER_KEYS, UNKNOWN_TRIGGER
from service import metrics
from service.runtime import Runtime

log = logging.getLogger("callback_ledger.access")

REQUEST_ID_HEADER = b"x-request-id"
# A request id we pass on as given: letters, digits and . _ : - (UUIDs, ULIDs, trace ids),
# at most 128 of them. Anything else is replaced, so no header can forge or break a log line.
SANE_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
UNMATCHED = "unmatched"  # a path no route serves (its label; the raw path would be unbounded)

TRIGGERS = frozenset({*TRIGGER_KEYS.values(), UNKNOWN_TRIGGER})
WEBHOOK_PATHS = frozenset({WEBHOOK_PATH, WEBHOOK_PATH + "/"})

# The webhook's refusals, as outcomes (its 200s say accepted or duplicate themselves).
REFUSALS = {
    401: "unsigned_rejected",
    408: "timeout",
    413: "too_large",
    431: "too_large",
    422: "invalid",
    503: "unavailable",
}
QUARANTINED_400 = frozenset({"not_json", "not_an_object"})


def callback_outcome(status: int, body: bytes) -> tuple[str, str]:
    """(trigger, outcome) of a callback from the webhook's answer."""
    try:
        answer = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        answer = {}
    if not isinstance(answer, dict):
        answer = {}
    trigger = answer.get("trigger", UNKNOWN_TRIGGER)
    if trigger not in TRIGGERS:
        trigger = UNKNOWN_TRIGGER
    if status == 200:
        outcome = answer.get("status")
        return trigger, outcome if outcome in ("accepted", "duplicate") else "accepted"
    if status == 400:
        # Not JSON, or not an object: kept in the quarantine. Otherwise the sender went away
        # before the body was whole: nothing was kept.
        return trigger, "quarantined" if answer.get("error") in QUARANTINED_400 else "incomplete"
    return trigger, REFUSALS.get(status, "unavailable" if status >= 500 else "invalid")


def child(cache: dict[tuple[str, ...], Any], metric: Any, *labels: str) -> Any:
    """The metric's child for these label values, made once."""
    found = cache.get(labels)
    if found is None:
        found = cache[labels] = metric.labels(*labels)
    return found


class Observed:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Children of the labelled metrics, by label values: one dict lookup per request.
        self._latency: dict[tuple[str, ...], Any] = {}
        self._responses: dict[tuple[str, ...], Any] = {}
        self._callbacks: dict[tuple[str, ...], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                given = value
                break
        if given is not None and SANE_ID.fullmatch(given):
            request_id = given.decode("ascii")
        else:
            request_id = os.urandom(12).hex()
        scope["ledger.request_id"] = request_id
        id_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        callback = scope["method"] == "POST" and scope["path"] in WEBHOOK_PATHS
        status = 500
        body = b""

        async def send_observed(message: Message) -> None:
            nonlocal status, body
            if message["type"] == "http.response.start":
                status = message["status"]
                # A new list: a response object may be sent more than once (a cached answer).
                message = {**message, "headers": [*message.get("headers", ()), id_header]}
            elif callback and message["type"] == "http.response.body" and not body:
                body = message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            self._record(scope, request_id, status, body, callback, started)

    def _record(
        self,
        scope: Scope,
        request_id: str,
        status: int,
        body: bytes,
        callback: bool,
        started: float,
    ) -> None:
        seconds = time.perf_counter() - started
        route = scope.get("route")
        if route is not None:
            template = route.path
        elif scope["path"] in WEBHOOK_PATHS:
            template = WEBHOOK_PATH  # the fast path (WebhookFirst) bypasses the router
        else:
            template = UNMATCHED
        child(self._latency, metrics.REQUEST_SECONDS, template).observe(seconds)
        child(self._responses, metrics.RESPONSES, template, str(status)).inc()
        fields: dict[str, Any] = {
            "request_id": request_id,
            "method": scope["method"],
            "route": template,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
        }
        if callback:
            trigger, outcome = callback_outcome(status, body)
            child(self._callbacks, metrics.CALLBACKS, trigger, outcome).inc()
            fields["trigger"] = trigger
            fields["outcome"] = outcome
        key = scope.get("ledger.key_name")  # set by the API key check, when there is one
        if key is not None:
            fields["key"] = key
        if log.isEnabledFor(logging.INFO):
            # As log.info, without looking up the caller's file and line (unused here).
            record = log.makeRecord(log.name, logging.INFO, __file__, 0, "request", (), None)
            record.fields = fields
            log.handle(record)


def metrics_endpoint(runtime: Runtime, refresh_s: float) -> Any:
    """GET /metrics, in Prometheus' text format."""
    registry = metrics.registry(runtime, refresh_s)

    async def serve_metrics(request: Request) -> Response:
        body = await run_in_threadpool(metrics.render, registry)
        return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return serve_metrics
