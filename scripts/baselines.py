"""The two baseline receivers the benchmark measures callback-ledger against:

- `null_app`: parses the JSON and answers 200, storing nothing (the HTTP ceiling);
- `insert_app`: one plain INSERT of the raw JSON per request through a psycopg pool, committed
  before answering (the simplest durable receiver).

Run with: uvicorn --factory scripts.baselines:insert_app (BASELINE_DATABASE_URL).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import orjson
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.settings import collect_less_often

OK = b'{"status":"accepted"}'


def null_app() -> Starlette:
    # The same collector setting as callback-ledger's server, in both baselines, or the
    # comparison would credit that setting to callback-ledger's design.
    collect_less_often()

    async def receive(request: Request) -> Response:
        orjson.loads(await request.body())
        return Response(OK, media_type="application/json")

    return Starlette(routes=[Route("/webhooks/sinch", receive, methods=["POST"])])


def insert_app() -> Starlette:
    collect_less_often()
    pool = AsyncConnectionPool(
        os.environ["BASELINE_DATABASE_URL"],
        min_size=8,
        max_size=16,
        open=False,
        kwargs={"autocommit": True},
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await pool.open()
        async with pool.connection() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS raw_callbacks (id BIGSERIAL PRIMARY KEY, body TEXT)"
            )
        yield
        await pool.close()

    async def receive(request: Request) -> Response:
        raw = await request.body()
        orjson.loads(raw)
        async with pool.connection() as conn:
            await conn.execute("INSERT INTO raw_callbacks (body) VALUES (%s)", (raw.decode(),))
        return Response(OK, media_type="application/json")

    return Starlette(
        routes=[Route("/webhooks/sinch", receive, methods=["POST"])], lifespan=lifespan
    )
