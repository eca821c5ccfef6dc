"""GET /seal (audit scope): the head of the seal chain (store.seal), for an operator to record
elsewhere (a ticket, a timestamping service) and later check `callback-ledger verify` against."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.responses import JSON
from evidence import seal_reads
from service.runtime import Runtime


def seal_endpoint(runtime: Runtime) -> Callable[[Request], Awaitable[Response]]:
    def head() -> dict[str, Any]:
        runtime.ledger()  # creates the seal table if need be
        found = seal_reads.head(runtime.store_database())
        if found is None:
            return {"position": 0, "hash": None, "sealed_at": None}
        return found.head()

    async def seal(request: Request) -> Response:
        return JSON(await run_in_threadpool(head))

    return seal
