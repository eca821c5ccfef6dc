"""Bearer keys on every route but the webhook, their scopes, the access log of audit reads,
and the public side of a private listener.

Each route declares the scope it needs when it is registered (`Guard.protect`). A key found (or
not found) is remembered for `CACHE_S` seconds per process, so a revoked key stops working within
that bound; expiry is checked on every request. `last used` is written at most once every
`TOUCH_S` seconds per key and process."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from access.api_keys import Key, KeyStore, key_hash, utc_now
from api.responses import error
from service.runtime import Runtime

CACHE_S = 5.0
TOUCH_S = 60.0
CACHE_MAX = 10_000

READ, AUDIT, METRICS, ADMIN = "read", "audit", "metrics", "admin"
ANY_KEY = "any key"  # a valid key of any scope
HEALTH = "bare without a key"  # /healthz: the status alone without a key, the detail with one

# Query parameters that page rather than name a subject: left out of the access log.
NOT_SUBJECT = frozenset({"cursor", "limit", "after"})

Handler = Callable[[Request], Awaitable[Response]]
Needs = str | Callable[[Request], str]


class Denied(Exception):
    """No usable key: `response` is the 401 to send."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.response = error(401, code, detail)
        self.response.headers["WWW-Authenticate"] = 'Bearer realm="callback-ledger"'


class Guard:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._store: KeyStore | None = None
        self._cache: dict[str, tuple[float, Key | None]] = {}  # by hash: until when, the key
        self._touched: dict[str, float] = {}

    def store(self) -> KeyStore:
        if self._store is None:
            store = KeyStore(self.runtime.database())
            store.setup()
            self._store = store
        return self._store

    async def _find(self, token: str) -> Key | None:
        hashed = key_hash(token)
        now = time.monotonic()
        until, key = self._cache.get(hashed, (0.0, None))
        if until <= now:
            key = await run_in_threadpool(lambda: self.store().find(hashed))
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()  # many unknown keys tried: start over rather than grow
            self._cache[hashed] = (now + CACHE_S, key)
        return key

    async def authenticate(self, request: Request) -> Key:
        """The request's valid key; raises Denied with the 401 to send."""
        header = request.headers.get("authorization")
        if not header:
            raise Denied(
                "missing_key",
                "this route needs an API key: send 'Authorization: Bearer <key>' "
                "(create one with: callback-ledger keys create --name NAME --scope read)",
            )
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Denied(
                "malformed_authorization", "the Authorization header must be 'Bearer <key>'"
            )
        key = await self._find(token)
        if key is None:
            raise Denied("unknown_key", "this API key is not known")
        if key.revoked:
            raise Denied("revoked_key", f"the API key {key.name!r} was revoked")
        now = utc_now()
        if key.expired(now):
            raise Denied("expired_key", f"the API key {key.name!r} has expired")
        last = self._touched.get(key.name)
        moment = time.monotonic()
        if last is None or moment - last >= TOUCH_S:
            self._touched[key.name] = moment
            await run_in_threadpool(lambda: self.store().touch(key.name, now))
        return key

    def protect(self, handler: Handler, needs: Needs, route: str) -> Handler:
        """`handler` behind a key with the scope `needs` (or the scope it returns for the
        request). Requests to audit-scope routes are written to the access log."""

        async def guarded(request: Request) -> Response:
            scope = needs(request) if callable(needs) else needs
            try:
                key = await self.authenticate(request)
            except Denied as denied:
                return denied.response
            request.scope["ledger.key_name"] = key.name  # for the request's log line
            if scope != ANY_KEY and scope not in key.scopes:
                return error(
                    403,
                    "missing_scope",
                    f"the API key {key.name!r} lacks the {scope!r} scope that "
                    f"{request.method} {route} needs (it has: {', '.join(sorted(key.scopes))})",
                    scope=scope,
                )
            response = await handler(request)
            if scope == AUDIT:
                await self.log_access(request, key.name, route, response)
            return response

        guarded.needs = needs  # type: ignore[attr-defined]
        guarded.__name__ = getattr(handler, "__name__", "guarded")
        return guarded

    async def log_access(self, request: Request, actor: str, route: str, response: Any) -> None:
        subject: dict[str, Any] = dict(request.path_params)
        subject.update(
            (name, value) for name, value in request.query_params.items() if name not in NOT_SUBJECT
        )
        status = response.status_code
        results = 0
        counted = getattr(request.state, "results", None)
        if status == 200 and isinstance(counted, int):  # a page or file that counted its rows
            results = counted
        elif status == 200:
            try:
                body = orjson.loads(response.body)
            except (AttributeError, orjson.JSONDecodeError):
                body = None
            results = len(body["items"]) if isinstance(body, dict) and "items" in body else 1
        await run_in_threadpool(
            lambda: self.store().record_access(actor, route, subject, results, status)
        )


def consent_scope(request: Request) -> str:
    """/consent answers now with `read`; at another instant (`?at=`) it is an audit question."""
    return AUDIT if request.query_params.get("at") else READ


class PublicSide:
    """With a private listener: requests that arrive on any other address (the public port)
    reach only the webhook and the bare /healthz; everything else is 404 there."""

    def __init__(self, app: ASGIApp, private_port: int, public: set[tuple[str, str]]) -> None:
        self.app = app
        self.private_port = private_port
        self.public = public  # (method, path) served on the public port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            server = scope.get("server")
            if server is None or server[1] != self.private_port:
                if (scope["method"], scope["path"]) not in self.public:
                    response = error(
                        404, "not_found", "not served on this address (see the private listener)"
                    )
                    await response(scope, receive, send)
                    return
                scope["ledger.public"] = True  # /healthz answers the bare status here
        await self.app(scope, receive, send)
