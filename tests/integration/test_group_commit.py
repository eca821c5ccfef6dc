"""Group commit: many callbacks in one transaction, merged per stream, split on conflict or on
one bad member, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime

from domain.callbacks import Receipt
from service.runtime import Runtime
from service.settings import Settings, open_ledger
from store.group_commit import LRU, GroupCommit, run
from store.ledger import Command, Ledger, Outcome
from store.postgres import PostgresGroupCommit
from store.sqlite import SQLiteGroupCommit
from tests import payloads as p
from tests.helpers import accept_all, delivery_reports, names, stored_events


def command(ledger: Ledger, body: dict) -> Command:
    found = ledger.command_for(body, Receipt(p.encode(body).decode(), datetime.now(UTC), True))
    assert found is not None
    return found


def test_one_batch_merges_commands_for_one_stream(ledger: Ledger, database_url: str) -> None:
    bodies = [
        p.delivery("M1", "QUEUED_ON_CHANNEL"),
        p.delivery("M1", "DELIVERED"),
        p.delivery("M1", "QUEUED_ON_CHANNEL"),
        p.delivery("M2", "READ"),
        p.inbound("IN1"),
        p.opt("OPT_OUT", request_id="R1"),
    ]
    head = ledger.ping()
    results = run(GroupCommit(ledger, cache=LRU(100)), [command(ledger, b) for b in bodies])
    assert [(r.status, r.events) for r in results if isinstance(r, Outcome)] == [
        ("accepted", 1),
        ("accepted", 1),
        ("duplicate", 0),
        ("accepted", 1),
        ("accepted", 2),
        ("accepted", 1),
    ]
    assert ledger.ping() - head == 6
    assert Counter(names(stored_events(database_url))) == {
        "Message.FirstReported": 2,
        "Message.DeliveryReported": 1,
        "Contact.Registered": 1,
        "Contact.InboundMessageReceived": 1,
        "Contact.ConsentReported": 1,
    }


def test_stale_cache_conflict_is_split_and_nothing_is_lost(
    ledger: Ledger, settings: Settings, database_url: str
) -> None:
    cache = LRU(100)
    run(GroupCommit(ledger, cache=cache), [command(ledger, p.delivery("M1", "QUEUED_ON_CHANNEL"))])
    # Another process appends to the same stream behind this one's cache.
    other = open_ledger(settings)
    accept_all(other, [p.delivery("M1", "DELIVERED")])
    other.close()
    results = run(
        GroupCommit(ledger, cache=cache),
        [
            command(ledger, p.delivery("M1", "READ")),
            command(ledger, p.delivery("M1", "DELIVERED")),
            command(ledger, p.delivery("M9", "READ")),
        ],
    )
    assert [r.status for r in results if isinstance(r, Outcome)] == [
        "accepted",
        "duplicate",
        "accepted",
    ]
    reports = delivery_reports(stored_events(database_url))
    assert sorted((str(e.message_id), e.status) for e in reports) == [
        ("M1", "DELIVERED"),
        ("M1", "QUEUED_ON_CHANNEL"),
        ("M1", "READ"),
        ("M9", "READ"),
    ]


def test_a_bad_member_does_not_sink_the_batch(ledger: Ledger, database_url: str) -> None:
    def explode(_: object) -> bool:
        raise RuntimeError("a bug in one decision")

    good = command(ledger, p.delivery("M1", "DELIVERED"))
    bad = replace(command(ledger, p.delivery("M2", "DELIVERED")), decide=explode)
    results = run(
        GroupCommit(ledger, cache=LRU(100)), [good, bad, command(ledger, p.inbound("IN1"))]
    )
    assert isinstance(results[0], Outcome) and results[0].status == "accepted"
    assert isinstance(results[1], RuntimeError)
    assert isinstance(results[2], Outcome) and results[2].status == "accepted"
    assert delivery_reports(stored_events(database_url))


def test_writer_batches_concurrent_submissions(ledger: Ledger, database_url: str) -> None:
    writer = SQLiteGroupCommit(ledger)
    bodies = [
        p.delivery(f"M{i % 40}", s)
        for i in range(40)
        for s in ("QUEUED_ON_CHANNEL", "DELIVERED", "READ")
    ]
    bodies += bodies[:30]  # duplicates racing the originals
    with ThreadPoolExecutor(32) as pool:
        outcomes = list(pool.map(lambda b: writer.submit(command(ledger, b)).result(), bodies))
    writer.stop()
    assert Counter(o.status for o in outcomes) == {"accepted": 120, "duplicate": 30}
    assert len(delivery_reports(stored_events(database_url))) == 120
    assert writer.batches < writer.commands  # some batches held more than one callback


def test_the_servers_writer_batches_merges_and_resolves_conflicts(
    ledger: Ledger, settings: Settings, database_url: str, backend: str
) -> None:
    """What `serve` uses: on the event loop for PostgreSQL, a thread for SQLite."""
    runtime = Runtime(settings, ledger)
    writer = runtime.writer()
    assert isinstance(writer, SQLiteGroupCommit if backend == "sqlite" else PostgresGroupCommit)

    def explode(_: object) -> bool:
        raise RuntimeError("a bug in one decision")

    async def scenario() -> list[Outcome | BaseException]:
        await writer.commit(command(ledger, p.delivery("M1", "QUEUED_ON_CHANNEL")))
        # Another process appends to the same stream behind this writer's cache.
        other = open_ledger(settings)
        await asyncio.to_thread(accept_all, other, [p.delivery("M1", "DELIVERED")])
        other.close()
        bodies = [
            p.delivery(f"M{i}", s) for i in range(2, 42) for s in ("QUEUED_ON_CHANNEL", "READ")
        ]
        commands = [command(ledger, b) for b in [*bodies, *bodies[:20]]]
        commands += [
            command(ledger, p.delivery("M1", "DELIVERED")),
            command(ledger, p.delivery("M1", "READ")),
        ]
        # One batch (all are waiting before the writer's next turn), deciding M1 on a stale
        # cache: its commit conflicts and the batch is decided again.
        results = await asyncio.gather(*(writer.commit(c) for c in commands))
        if isinstance(writer, PostgresGroupCommit):
            assert writer.batches == 2
        assert writer.batches < writer.commands
        # A bug in one decision: the others of its batch still commit.
        results += await asyncio.gather(
            writer.commit(replace(command(ledger, p.delivery("M99", "READ")), decide=explode)),
            writer.commit(command(ledger, p.delivery("M100", "READ"))),
            return_exceptions=True,
        )
        await runtime.aclose_writer()
        return results

    results = asyncio.run(scenario())
    assert isinstance(results[-2], RuntimeError)
    assert Counter(r.status for r in results if isinstance(r, Outcome)) == {
        "accepted": 82,
        "duplicate": 21,
    }
    assert [r.status for r in results[-4:-2] if isinstance(r, Outcome)] == [
        "duplicate",
        "accepted",
    ]
    reports = len(delivery_reports(stored_events(database_url)))
    # M1 queued, M1 delivered by the other process, the 80, M1 read, M100 read
    assert reports == 1 + 1 + 80 + 1 + 1
