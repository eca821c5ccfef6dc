"""PostgreSQL plans that stay right as the tables grow: the writer's dedupe lookup, run for
months on one connection, is planned at the table's size of each moment, not once when the table
was nearly empty (a cached generic plan read all of ledger_dedupe: found by the soak, a chatty
contact's messages 0.4 ms -> 4.5 ms in the lookup at 50,000 keys)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from callback_ledger.config import Settings
from callback_ledger.domain.contact import RECENT
from callback_ledger.domain.receipt import Receipt
from callback_ledger.ledger import Ledger
from callback_ledger.loop_writer import LoopGroupCommit
from callback_ledger.projections.db import Database

from . import payloads as p


def command(ledger: Ledger, i: int) -> Any:
    body = p.inbound(message_id=f"IN{i:06d}", text=f"hello {i}")
    return ledger.command_for(body, Receipt(p.encode(body).decode(), datetime.now(UTC), True))


def test_the_writers_dedupe_lookup_is_planned_at_the_tables_size(
    backend: str, settings: Settings, ledger: Ledger
) -> None:
    if backend != "postgres":
        pytest.skip("PostgreSQL's plan cache")

    async def scenario() -> tuple[list[dict[str, Any]], list[str]]:
        writer = LoopGroupCommit(ledger, settings)
        try:
            # Past RECENT keys every message asks the table: more than psycopg's five
            # executions before it prepares the statement, while the table is small.
            for i in range(RECENT + 20):
                await writer.commit(command(ledger, i))
            conn = await writer._connection()
            await conn.execute(
                "INSERT INTO ledger_dedupe SELECT gen_random_uuid(), "
                "convert_to('k' || i, 'UTF8'), 1 FROM generate_series(1, 20000) AS i"
            )
            for i in range(RECENT + 20, RECENT + 30):
                await writer.commit(command(ledger, i))
            cursor = await conn.execute(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                "WHERE statement LIKE '%%ledger_dedupe%%'"
            )
            prepared = await cursor.fetchall()
            cursor = await conn.execute("SHOW plan_cache_mode")
            mode = [r["plan_cache_mode"] for r in await cursor.fetchall()]
            return prepared, mode
        finally:
            await writer.aclose()

    prepared, mode = asyncio.run(scenario())
    assert prepared, "the lookup ran often enough to be prepared"
    assert all(r["generic_plans"] == 0 and r["custom_plans"] >= 10 for r in prepared), prepared
    assert mode == ["force_custom_plan"]


def test_the_read_tables_connections_plan_each_statement(backend: str, database_url: str) -> None:
    if backend != "postgres":
        pytest.skip("PostgreSQL's plan cache")
    db = Database(database_url)
    try:
        with db.read() as cur:
            row = cur.execute("SHOW plan_cache_mode").fetchone()
    finally:
        db.close()
    assert row is not None and row["plan_cache_mode"] == "force_custom_plan"
    with psycopg.connect(database_url) as plain:
        default = plain.execute("SHOW plan_cache_mode").fetchone()
    assert default is not None and default[0] == "auto"  # the server's own setting is left alone
