"""The durability check: callbacks posted to a receiver, then every acknowledged delivery
report looked for in what it stored.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import psycopg

from projections.log_reader import REPORTS, decode_state
from scripts.callback_mix import STATUSES, report, signed_request
from scripts.receiver import Receiver
from service.settings import Settings, open_ledger
from store.spellings import spellings


async def _post_all(url: str, bodies: list[dict[str, Any]], concurrency: int) -> list[bool]:
    limits = httpx.Limits(max_connections=concurrency)
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one(body: dict[str, Any]) -> bool:
            raw, headers = signed_request(body)
            async with semaphore:
                try:
                    response = await client.post(
                        url + "/webhooks/sinch", content=raw, headers=headers
                    )
                except httpx.TransportError:
                    return False
            return response.status_code == 200

        return await asyncio.gather(*(one(b) for b in bodies))


def durability_corpus(name: str, n: int = 1000) -> list[dict[str, Any]]:
    when = datetime(2024, 6, 16, tzinfo=UTC)
    return [
        report("DURABILITY", f"dur-{name}-{i}", STATUSES[i % 3], "SMS", "46700000000", "C", when)
        for i in range(n)
    ]


def stored_reports(database_url: str) -> set[tuple[str, str]]:
    # The store's keys as its server had them (environment, or the file beside a SQLite
    # store); only public fields are read.
    ledger = open_ledger(Settings.from_env({**os.environ, "LEDGER_DATABASE_URL": database_url}))
    found: set[tuple[str, str]] = set()
    after = 0
    try:
        while page := ledger.recorder.select_notifications(
            start=after, limit=5000, topics=spellings(REPORTS), inclusive_of_start=False
        ):
            for n in page:
                state = decode_state(n.state)
                found.add((state["message_id"], state["status"]))
            after = page[-1].id
    finally:
        ledger.close()
    return found


def check_durability(receiver: Receiver, kind: str, database_url: str | None) -> str:
    bodies = durability_corpus(receiver.name.replace(" ", "_"))
    acked = asyncio.run(_post_all(receiver.url, bodies, 32))
    acknowledged = [b for b, ok in zip(bodies, acked, strict=True) if ok]
    if kind == "null":
        return f"{len(acknowledged)} acked, none stored (stores nothing)"
    if kind == "insert":
        assert database_url
        with psycopg.connect(database_url) as conn:
            rows = {
                r[0]
                for r in conn.execute(
                    "SELECT body FROM raw_callbacks WHERE body LIKE '%DURABILITY%'"
                )
            }
        lost = sum(orjson.dumps(b).decode() not in rows for b in acknowledged)
    else:
        assert database_url
        stored = stored_reports(database_url)
        lost = sum(
            (b["message_delivery_report"]["message_id"], b["message_delivery_report"]["status"])
            not in stored
            for b in acknowledged
        )
    return f"{len(acknowledged)} acked, {len(acknowledged) - lost} stored, lost {lost}"
