"""POST /webhooks/sinch: raw bytes -> size limit -> signature -> service.recorder.Recorder.

Only translates: HTTP in, one call to the recorder, HTTP out. A 200 is sent only after the
callback's events are committed; anything refused after the signature check is kept in the
quarantine first, so nothing a signed sender said is lost."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import blake2b
from heapq import heappop, heappush
from itertools import chain

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api import signature
from api.responses import JSON, error
from domain.callbacks import UNKNOWN_TRIGGER, Receipt
from projections.faults import summary
from service.recorder import QuarantineFailed, Recorder, Refusal
from service.runtime import Runtime
from service.settings import Settings
from store.backend import store_unavailable

log = logging.getLogger("callback_ledger")

PATH = "/webhooks/sinch"
# ASGI gives header names lower-cased, as bytes.
READ_HEADERS = frozenset(h.encode("latin-1") for h in (*signature.HEADERS, "content-length"))


class BodyTooLarge(Exception):
    pass


def read_headers(request: Request) -> dict[str, str]:
    """The signature headers and Content-Length, in one pass over the ASGI headers."""
    return {
        name.decode("latin-1"): value.decode("latin-1")
        # reversed: a repeated header counts by its first occurrence, as Starlette reads it
        for name, value in reversed(request.scope["headers"])
        if name in READ_HEADERS
    }


async def read_body(request: Request, declared: str, limit: int, timeout_s: float) -> bytes:
    """The raw body, refused past `limit` bytes (`declared`: its Content-Length, if any) or when
    it takes longer than `timeout_s` to arrive (a slow sender must not hold a worker for ever).
    One timer over the ASGI messages: cheaper on the hot path than Starlette's stream."""
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    task = asyncio.current_task()
    assert task is not None
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(timeout_s, expire)
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
    except asyncio.CancelledError:
        if expired and task.uncancel() == 0:
            raise TimeoutError from None
        raise
    finally:
        timer.cancel()


class _Second:
    """The nonces of the signatures of one timestamp second: 64-bit keys, a set while the
    second is being written, then packed into a sorted array of 8 bytes a key."""

    __slots__ = ("fresh", "packed", "written")

    def __init__(self) -> None:
        self.fresh: set[int] = set()
        self.packed: array[int] = array("Q")
        self.written = 0.0

    def __len__(self) -> int:
        return len(self.fresh) + len(self.packed)

    def __contains__(self, key: int) -> bool:
        if key in self.fresh:
            return True
        at = bisect_left(self.packed, key)
        return at < len(self.packed) and self.packed[at] == key

    def pack(self) -> None:
        self.packed = array("Q", sorted(chain(self.packed, self.fresh)))
        self.fresh = set()


class NonceMemory:
    """Nonces of signed callbacks this process accepted, kept while their signature could still
    be accepted (until its timestamp + `window_s`): the same signed request sent again is a
    replay. Only accepted ones are remembered, so a retry after a 503 is still taken.

    Nonces are grouped by their signature's timestamp second, and whole seconds leave in
    timestamp order from a heap: expiry is never a scan. Each is kept as a keyed 64-bit hash,
    packed once its second goes quiet. At most `cap` are kept: past it the oldest seconds go
    early, and a replay of one of those is still answered `duplicate` by the store's dedupe."""

    PACK_AFTER_S = 1.0
    FRESH_MAX = 4096  # a second written for long is packed as it grows (one merge per 4,096)

    def __init__(
        self,
        window_s: int,
        cap: int = 1_000_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window_s = window_s
        self.cap = cap
        self.clock = clock  # the wall clock the signature's timestamp is checked against
        self.expired = 0  # dropped because their window passed
        self.evicted = 0  # dropped early, over the cap
        self._salt = os.urandom(16)
        self._seconds: dict[int, _Second] = {}
        self._order: list[int] = []  # heap of the seconds held
        self._size = 0
        self._unpacked: set[int] = set()
        self._next_pack = 0.0

    def __len__(self) -> int:
        return self._size

    def _key(self, nonce: str) -> int:
        digest = blake2b(
            nonce.encode("utf-8", "surrogatepass"), digest_size=8, key=self._salt
        ).digest()
        return int.from_bytes(digest, "little")

    def seen(self, nonce: str, timestamp: int) -> bool:
        """Whether a callback signed with this nonce and timestamp was accepted already."""
        if self.clock() - timestamp > self.window_s:
            return False
        second = self._seconds.get(timestamp)
        return second is not None and self._key(nonce) in second

    def remember(self, nonce: str, timestamp: int) -> None:
        now = self.clock()
        if now - timestamp <= self.window_s:  # else it can never be accepted again
            second = self._seconds.get(timestamp)
            if second is None:
                second = self._seconds[timestamp] = _Second()
                heappush(self._order, timestamp)
            key = self._key(nonce)
            if key not in second:
                second.fresh.add(key)
                self._size += 1
                second.written = now
                self._unpacked.add(timestamp)
                if len(second.fresh) >= self.FRESH_MAX:
                    second.pack()
        self._expire(now)
        if now >= self._next_pack:
            self._pack(now)

    def _expire(self, now: float) -> None:
        order, seconds = self._order, self._seconds
        while order and (now - order[0] > self.window_s or self._size > self.cap):
            timestamp = heappop(order)
            second = seconds.pop(timestamp)
            if now - timestamp > self.window_s:
                self.expired += len(second)
            else:
                self.evicted += len(second)
            self._size -= len(second)
            self._unpacked.discard(timestamp)

    def _pack(self, now: float) -> None:
        """Packs the seconds nothing was added to for PACK_AFTER_S (checked once a second)."""
        self._next_pack = now + self.PACK_AFTER_S
        idle = [t for t in self._unpacked if now - self._seconds[t].written >= self.PACK_AFTER_S]
        for timestamp in idle:
            self._seconds[timestamp].pack()
            self._unpacked.discard(timestamp)


@dataclass
class WriteHealth:
    """The outcome of the last write attempt, for /healthz: a store that answers reads but
    refuses writes (a full disk, a read-only replica) must not look healthy."""

    last_ok: float | None = None
    last_error: float | None = None
    reason: str = ""

    def ok(self) -> None:
        self.last_ok = time.monotonic()

    def failed(self, exc: BaseException) -> None:
        self.last_error = time.monotonic()
        self.reason = summary(exc)

    def problem(self, window_s: float) -> str | None:
        """Why writes look broken: the last attempt failed, within `window_s`."""
        if self.last_error is None or (self.last_ok or 0) > self.last_error:
            return None
        ago = time.monotonic() - self.last_error
        if ago > window_s:
            return None
        return f"the last write failed {ago:.0f} s ago: {self.reason}"


def unavailable(settings: Settings, exc: BaseException) -> JSON:
    log.warning("store unavailable, answering 503: %s", exc)
    response = error(
        503,
        "store_unavailable",
        "the event store cannot commit this callback right now; nothing was stored; "
        "send it again later",
    )
    response.headers["Retry-After"] = str(settings.retry_after_s)
    return response


class SinchWebhook:
    def __init__(
        self, settings: Settings, runtime: Runtime, on_commit: Callable[[], None] | None
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.on_commit = on_commit
        self.nonces = NonceMemory(settings.timestamp_tolerance_s)
        self.health = WriteHealth()
        self.recorder = Recorder(runtime.grouped())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The route as a bare ASGI app (see `WebhookFirst`)."""
        try:
            response = await self.handle(Request(scope, receive))
        except Exception as exc:  # a bug of ours must not lose the callback: sender retries
            log.exception("unexpected error while receiving a callback")
            response = unavailable(self.settings, exc)
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        settings = self.settings
        headers = read_headers(request)
        declared = headers.pop("content-length", "")
        try:
            raw = await read_body(
                request, declared, settings.max_body_bytes, settings.body_timeout_s
            )
        except TimeoutError:
            return error(
                408,
                "body_timeout",
                f"the body took more than {settings.body_timeout_s} s to arrive",
            )
        except BodyTooLarge:
            return error(413, "body_too_large", f"the body is over {settings.max_body_bytes} bytes")
        except ClientDisconnect:
            return error(400, "incomplete_body", "the client went away before sending the body")

        now = time.time()
        nonce = headers.get(signature.NONCE, "")
        timestamp = 0
        if settings.webhook_secrets:
            try:
                signature.verify(
                    settings.webhook_secrets, raw, headers, now, settings.timestamp_tolerance_s
                )
            except signature.SignatureError as exc:
                return error(401, "bad_signature", str(exc))
            # verify checked it is unix seconds
            timestamp = int(headers[signature.TIMESTAMP])
            if self.nonces.seen(nonce, timestamp):
                return error(
                    401,
                    "replayed_nonce",
                    "this signature nonce was already used by an accepted callback: a replay",
                )
        receipt = Receipt(
            raw=raw.decode("utf-8", errors="replace"),
            received_at=datetime.now(UTC),
            signature_verified=bool(settings.webhook_secrets),
            headers=headers,
        )
        try:
            outcome = await self.recorder.record(raw, receipt)
        except QuarantineFailed as exc:
            # Not kept, so it must not be refused for good: let the sender retry.
            return unavailable(settings, exc.__cause__ or exc)
        except Exception as exc:
            if not store_unavailable(self.runtime.backend, exc):
                # A bug of ours: it must not lose the callback either, the sender retries.
                log.exception("unexpected error while recording a callback")
            self.health.failed(exc)
            return unavailable(settings, exc)
        if outcome.refusal is not None:
            return refused(outcome.trigger, outcome.refusal)
        self.health.ok()
        if outcome.events and self.on_commit is not None:
            self.on_commit()
        if settings.webhook_secrets:
            self.nonces.remember(nonce, timestamp)
        return JSON(
            {
                "status": outcome.status,
                "trigger": outcome.trigger,
                "events": outcome.events,
                "reference": outcome.reference,
            }
        )


def refused(trigger: str, refusal: Refusal) -> Response:
    what = "callback" if trigger == UNKNOWN_TRIGGER else f"{trigger} callback"
    return error(
        refusal.status_code,
        refusal.code,
        f"this {what} was refused: {'; '.join(refusal.problems)}. "
        "The body is kept in the quarantine for an operator.",
        trigger=trigger,
        problems=refusal.problems,
    )


class WebhookFirst:
    """Sends POST /webhooks/sinch straight to the webhook (the hot path skips Starlette's
    middleware and routing) and everything else to Starlette, where the route is registered too."""

    def __init__(self, app: ASGIApp, webhook: SinchWebhook) -> None:
        self.app = app
        self.webhook = webhook
        self.max_headers = webhook.settings.max_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and len(scope["headers"]) > self.max_headers:
            # The head's bytes are capped by the connection guard; its lines are counted here.
            response = error(
                431, "too_many_headers", f"the request has over {self.max_headers} header lines"
            )
            response.headers["connection"] = "close"
            await response(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST":
            await self.webhook(scope, receive, send)
        else:
            await self.app(scope, receive, send)
