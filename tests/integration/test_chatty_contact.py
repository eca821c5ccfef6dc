"""A contact that writes for years: its state, its snapshots and the work of recording one more
of its messages stay bounded, and a redelivery of any of its facts, however old, is still a
duplicate (the store's key table, see store.dedupe). On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError
from psycopg.sql import SQL

from domain.callbacks import Receipt, parse_callback
from domain.contact import RECENT, Contact
from service.settings import Settings, backend_for, open_ledger
from store.backend import Database
from store.compression import inflate
from store.group_commit import LRU, GroupCommit, run
from store.ledger import Command, Ledger, Outcome
from store.sqlite import SealedSQLiteApplicationRecorder
from tests import payloads as p
from tests.helpers import accept_all

CONTACT = Contact.create_id("PROJECT1", "CONTACT1")


def inbound(i: int) -> dict[str, Any]:
    return p.inbound(message_id=f"IN{i:06d}", text=f"hello {i}")


def command(ledger: Ledger, body: dict[str, Any]) -> Command:
    found = ledger.command_for(body, Receipt(p.encode(body).decode(), datetime.now(UTC), True))
    assert found is not None
    return found


def record(ledger: Ledger, bodies: list[dict[str, Any]], cache: LRU) -> list[Outcome]:
    results = run(GroupCommit(ledger, cache=cache), [command(ledger, b) for b in bodies])
    assert all(isinstance(r, Outcome) for r in results), results
    return results  # type: ignore[return-value]


def latest_snapshot_bytes(ledger: Ledger) -> int:
    assert ledger.snapshots is not None
    stored = ledger.snapshots.recorder.select_events(CONTACT, desc=True, limit=1)
    # Before compression: compressed sizes wobble with the content, not with the stream.
    return len(inflate(stored[0].state))


def keys_in_table(database_url: str) -> int:
    db = Database(backend_for(database_url))
    try:
        with db.read() as cur:
            return cur.execute("SELECT COUNT(*) AS n FROM ledger_dedupe").fetchone()["n"]
    finally:
        db.close()


def lookup_plan(ledger: Ledger) -> str:
    """The query plan of the key lookup for two facts of CONTACT."""
    pairs = [(CONTACT, b"INBOUND|IN000000"), (CONTACT, b"INBOUND|IN000001")]
    recorder: Any = ledger.recorder
    if isinstance(recorder, SealedSQLiteApplicationRecorder):
        values = ", ".join(["(?, ?)"] * len(pairs))
        sql = recorder.recorded_sql(values)
        params = [x for i, k in pairs for x in (i.hex, k)]
        with recorder.datastore.transaction(commit=False) as c:
            c.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            return " ".join(str(tuple(row)) for row in c.fetchall())
    sql, params = recorder.recorded_query(pairs)
    with recorder.datastore.get_connection() as conn:
        rows = conn.execute(SQL("EXPLAIN ") + sql, params).fetchall()
        return " ".join(str(row) for row in rows)


def load_plan(ledger: Ledger) -> str:
    """How the events of CONTACT after its latest snapshot are found."""
    sql, params = ledger.events_query({CONTACT})
    recorder: Any = ledger.recorder
    if isinstance(recorder, SealedSQLiteApplicationRecorder):
        with recorder.datastore.transaction(commit=False) as c:
            c.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            steps = [str(tuple(row)[3]) for row in c.fetchall()]
        return " ".join(s for s in steps if "stored_events" in s)
    with recorder.datastore.get_connection() as conn:
        rows = [str(r["QUERY PLAN"]) for r in conn.execute(f"EXPLAIN {sql}", params).fetchall()]
    # The Index Cond under the scan of the events.
    events = [i for i, r in enumerate(rows) if "ledger_events" in r]
    return " ".join(rows[events[0] : events[0] + 3]) if events else ""


@pytest.fixture
def ledger(settings: Settings) -> Iterator[Ledger]:
    app = open_ledger(settings)
    yield app
    app.close()


def test_a_chatty_contact_stays_bounded_and_old_redeliveries_stay_duplicates(
    ledger: Ledger, database_url: str
) -> None:
    cache = LRU(100)
    total, checkpoints = 3000, {1000: {}, 3000: {}}  # type: ignore[var-annotated]
    for start in range(0, total, 100):
        outcomes = record(ledger, [inbound(i) for i in range(start, start + 100)], cache)
        assert {o.status for o in outcomes} == {"accepted"}
        done = start + 100
        if done in checkpoints:
            contact = cache[CONTACT]
            # What a load reads when the stream is not cached: the latest snapshot and the
            # events after it, never the whole stream.
            rows = ledger.stored_rows({CONTACT})
            checkpoints[done] = {
                "recent": len(contact.recent),
                "forgotten": contact.forgotten,
                "snapshot": latest_snapshot_bytes(ledger),
                "rows": len(rows),
                "rebuilt": ledger.rebuild(rows)[CONTACT].recent == contact.recent,
            }
    first, last = checkpoints[1000], checkpoints[3000]
    assert first["recent"] == last["recent"] == RECENT
    assert (first["forgotten"], last["forgotten"]) == (1000 - RECENT, 3000 - RECENT)
    # The snapshot does not grow with the stream (the keys all have the same length; only
    # some versions in it gain a digit).
    assert first["snapshot"] <= last["snapshot"] <= first["snapshot"] + 100 < 10_000
    # Snapshots every 200 events: at most the snapshot and 199 events, whatever the length.
    assert first["rows"] <= 200 and last["rows"] <= 200
    assert first["rebuilt"] and last["rebuilt"]
    assert not hasattr(cache[CONTACT], "seen")
    assert keys_in_table(database_url) == total
    # The lookup reads the key table by its primary key, never all of it; a load reads the
    # events after the snapshot by a range of the events' primary key, not the whole stream.
    assert "PRIMARY KEY" in lookup_plan(ledger) or "pkey" in lookup_plan(ledger)
    plan = load_plan(ledger)
    assert "originator_version>?" in plan or "originator_version >" in plan, plan

    head = ledger.ping()
    old, recent = inbound(0), inbound(total - 1)
    # Warm cache, cold cache, alone: each a duplicate, nothing appended.
    assert [o.status for o in record(ledger, [old, recent], cache)] == ["duplicate"] * 2
    assert [o.status for o in record(ledger, [old, recent], LRU(10))] == ["duplicate"] * 2
    assert [o.status for o in accept_all(ledger, [old, recent])] == ["duplicate"] * 2
    # An old one twice and a new one twice in one batch: the new one kept once.
    outcomes = record(ledger, [old, inbound(total), old, inbound(total)], LRU(10))
    assert [o.status for o in outcomes] == ["duplicate", "accepted", "duplicate", "duplicate"]
    assert ledger.ping() == head + 1
    # Consent notifications too, a year later.
    consent = p.opt("OPT_OUT", request_id="R-OLD")
    assert [o.status for o in accept_all(ledger, [consent])] == ["accepted"]
    record(ledger, [inbound(i) for i in range(total + 1, total + 1 + 2 * RECENT)], cache)
    assert [o.status for o in accept_all(ledger, [consent])] == ["duplicate"]
    assert [o.status for o in record(ledger, [consent], LRU(10))] == ["duplicate"]


def test_the_key_table_refuses_a_second_copy_of_a_fact(ledger: Ledger) -> None:
    """Even when a decision missed the key (two processes deciding at once), the store's
    primary key on (stream, key) refuses the second copy; the writer then decides again."""
    accept_all(ledger, [inbound(i) for i in range(RECENT + 1)])
    forged = ledger.repository.get(CONTACT)
    assert not forged.remembers_all
    body = inbound(0)  # forgotten by the aggregate, so it would take it again
    assert forged.record_inbound(
        parse_callback("MESSAGE_INBOUND", body),  # type: ignore[arg-type]
        Receipt(p.encode(body).decode(), datetime.now(UTC), True),
    )
    head = ledger.ping()
    with pytest.raises(IntegrityError):
        ledger.save(forged)
    assert ledger.ping() == head


def test_concurrent_redeliveries_of_forgotten_facts_across_ledgers(
    settings: Settings, database_url: str
) -> None:
    """Two ledgers (as two processes) with caches of their own, the same new and old messages
    of a contact that has forgotten most of its keys, in batches at once: each kept once."""
    first = open_ledger(settings)
    second = open_ledger(settings)
    try:
        accept_all(first, [inbound(i) for i in range(300)])
        work = [inbound(i) for i in range(250, 450)]  # 50 old, 150 new

        def run(ledger: Ledger, order: list[dict[str, Any]]) -> list[str]:
            cache = LRU(10)
            statuses = []
            for start in range(0, len(order), 20):
                statuses += [o.status for o in record(ledger, order[start : start + 20], cache)]
            return statuses

        with ThreadPoolExecutor(2) as pool:
            a = pool.submit(run, first, work)
            b = pool.submit(run, second, work[::-1])
            statuses = a.result() + b.result()
        assert statuses.count("accepted") == 150
        assert statuses.count("duplicate") == 250
        assert keys_in_table(database_url) == 450
        events = first.recorder.select_events(CONTACT)
        assert len(events) == 451  # Registered + 450 messages, none twice
    finally:
        first.close()
        second.close()
