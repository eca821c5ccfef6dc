"""PostgreSQL plans that stay right as the tables grow: the writer's dedupe lookup, run for
months on one connection, is planned for each run at the table's size of that moment, never
prepared once with a generic plan chosen when the table was nearly empty (a hash join over a
sequential scan of ledger_dedupe: found by the soak, one chatty contact's lookup 0.44 ms ->
4.5 ms at its 50,000th message)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from domain.callbacks import Receipt
from domain.contact import RECENT
from service.settings import Settings
from store.ledger import Ledger
from store.postgres import PostgresGroupCommit
from tests import payloads as p


def command(ledger: Ledger, i: int) -> Any:
    body = p.inbound(message_id=f"IN{i:06d}", text=f"hello {i}")
    return ledger.command_for(body, Receipt(p.encode(body).decode(), datetime.now(UTC), True))


def test_the_writers_dedupe_lookup_is_planned_at_the_tables_size(
    backend: str, settings: Settings, ledger: Ledger
) -> None:
    if backend != "postgres":
        pytest.skip("PostgreSQL's plan cache")

    async def scenario() -> tuple[list[dict[str, Any]], list[str], int]:
        writer = PostgresGroupCommit(ledger, settings.store_backend())
        try:
            # Past RECENT keys every message asks the table: many more runs than psycopg's
            # five before it prepares a statement, while the table is small.
            for i in range(RECENT + 20):
                await writer.commit(command(ledger, i))
            conn = await writer._connection()
            await conn.execute(
                "INSERT INTO ledger_dedupe SELECT gen_random_uuid(), "
                "convert_to('k' || i, 'UTF8'), 1 FROM generate_series(1, 20000) AS i"
            )
            for i in range(RECENT + 20, RECENT + 30):
                outcome = await writer.commit(command(ledger, i))
                assert outcome.status == "accepted"
            again = await writer.commit(command(ledger, 3))  # forgotten by the contact
            cursor = await conn.execute(
                "SELECT statement, generic_plans FROM pg_prepared_statements "
                "WHERE statement LIKE '%%ledger_dedupe%%'"
            )
            prepared = await cursor.fetchall()
            sql, params = ledger.recorder.recorded_query(  # type: ignore[attr-defined]
                [(command(ledger, 5).aggregate_id, b"INBOUND|IN000005")]
            )
            cursor = await conn.execute(b"EXPLAIN " + sql.as_bytes(conn), params, prepare=False)
            plan = [r["QUERY PLAN"] for r in await cursor.fetchall()]
            return prepared, plan, again.events
        finally:
            await writer.aclose()

    prepared, plan, events = asyncio.run(scenario())
    assert events == 0, "an old message sent again is still a duplicate"
    assert prepared == [], "the lookup is planned for each run, not prepared"
    text = " ".join(plan)
    assert "ledger_dedupe_pkey" in text and "Seq Scan on ledger_dedupe" not in text, plan
