"""What every console page may use: the runtime (store, ledger, writer), the key guard, and the
few callables of the API it shares (consent freshness, the health detail, waking the follower)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from api.auth import Guard
from api.console.session import Sessions, Visitor
from service.runtime import Runtime
from store.backend import Cursor

MAX_FORM_BYTES = 16 * 1024


@dataclass
class Context:
    runtime: Runtime
    guard: Guard
    sessions: Sessions
    consent_stale: Callable[[], Awaitable[str | None]]
    health_detail: Callable[[], Awaitable[Response]]
    on_commit: Callable[[], None]

    async def read(self, fn: Callable[[Cursor], Any]) -> Any:
        """`fn` over a read connection to the projections, off the event loop."""

        def work() -> Any:
            with self.runtime.database().read() as cur:
                return fn(cur)

        return await run_in_threadpool(work)


def visitor(request: Request) -> Visitor:
    found: Visitor = request.state.visitor
    return found


async def form(request: Request) -> dict[str, str]:
    """An url-encoded form, each field once (the last wins), at most MAX_FORM_BYTES."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, "the form is too large")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "the form could not be read") from None
    return {name: values[-1] for name, values in fields.items()}


# PostgreSQL refuses NUL in text, and a lone surrogate cannot be encoded for either store.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def query(request: Request, name: str, max_length: int = 256) -> str:
    """A query parameter as text (absent: ""), cut to `max_length`, without what no store can
    compare (NUL, lone surrogates): a search box forgives what the API would refuse."""
    value = request.query_params.get(name, "")
    return UNSTORABLE.sub("", value[:max_length])


def mark_audited(request: Request) -> None:
    """A read-scope page that showed audit data (history, violations): logged as an audit read."""
    request.state.audited = True
