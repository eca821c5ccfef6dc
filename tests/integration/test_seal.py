"""The seal chain (store.seal) on SQLite and PostgreSQL: every batch sealed in its
own transaction; `callback-ledger verify` names the first event altered, deleted or moved
with SQL, or a seal altered; GET /seal gives the head."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import orjson
import pytest
from starlette.testclient import TestClient

from service.settings import backend_for
from store import seal, spellings
from store.backend import Cursor, Database
from store.group_commit import LRU, GroupCommit, run
from store.ledger import Ledger
from tests import payloads as p
from tests.conftest import SECRET
from tests.helpers import accept_all, cli


def post(client: TestClient, body: dict[str, Any] | bytes) -> None:
    raw = p.encode(body)
    client.post("/webhooks/sinch", content=raw, headers=p.signed_headers(raw, SECRET))


def callbacks(client: TestClient) -> None:
    """A mix: delivery reports, consent, inbound, a catch-all trigger, a quarantined body."""
    post(client, p.delivery("M1", "QUEUED_ON_CHANNEL"))
    post(client, p.delivery("M1", "DELIVERED"))
    post(client, p.delivery("M2", "READ"))
    post(client, p.opt("OPT_OUT", request_id="R1"))
    post(client, p.inbound("IN1"))
    post(client, {"project_id": "P", "app_id": "A", "something_new": {"x": 1}})
    post(client, b"not json at all")


def verify(database_url: str, *args: str) -> tuple[int, dict[str, Any]]:
    done = cli(database_url, "verify", "--format", "json", *args)
    out = done.stdout if done.returncode == 0 else done.stderr
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, orjson.loads(out.strip().splitlines()[-1])


@pytest.fixture
def tamper(database_url: str) -> Iterator[Cursor]:
    """Plain SQL on the store, as someone behind the service's back would write it; the
    statements of one test commit together at its end."""
    db = Database(backend_for(database_url))
    try:
        with db.transaction() as cur:
            yield cur
    finally:
        db.close()


def rows(database_url: str, ledger: Ledger) -> list[dict[str, Any]]:
    db = Database(backend_for(database_url))
    column = db.backend.log_id_column
    try:
        with db.read() as cur:
            return cur.execute(
                f"SELECT {column} AS id, originator_id, originator_version, topic, state "
                f"FROM {ledger.events_table} ORDER BY {column}"
            ).fetchall()
    finally:
        db.close()


def sql(database_url: str, statement: str, *params: Any) -> None:
    db = Database(backend_for(database_url))
    try:
        with db.transaction() as cur:
            cur.execute(statement.replace("{id}", db.backend.log_id_column), params)
    finally:
        db.close()


def seals(database_url: str) -> list[seal.Seal]:
    db = Database(backend_for(database_url))
    try:
        with db.read() as cur:
            found = cur.tuples(
                f"SELECT {', '.join(seal.COLUMNS)} FROM {seal.TABLE} ORDER BY position"
            )
        return [seal.Seal.from_row(row) for row in found]
    finally:
        db.close()


def test_every_batch_is_sealed_and_the_head_is_served(
    client: TestClient, ledger: Ledger, database_url: str
) -> None:
    callbacks(client)
    events = rows(database_url, ledger)
    kinds = {e["topic"].rsplit(":", 1)[-1] for e in events}
    assert {"UnrecognisedCallback.Received", "QuarantinedCallback.Quarantined"} <= kinds, kinds
    code, report = verify(database_url)
    assert code == 0, report
    assert report["events"] == len(events) and report["from"] == events[0]["id"]
    served = client.get("/seal")
    assert served.status_code == 200
    assert served.json() == report["head"]
    assert served.json()["position"] == events[-1]["id"]
    # Each seal covers its batch's ids, chained to the one before it.
    chained = seals(database_url)
    assert chained[0].previous == seal.GENESIS
    assert all(b.previous == a.seal for a, b in itertools.pairwise(chained))
    assert sum(s.events for s in chained) == len(events)
    recorded = f"{served.json()['position']}:{served.json()['hash']}"
    assert verify(database_url, "--expect", recorded)[0] == 0


def test_a_chain_rewritten_after_a_recorded_head_is_caught(
    client: TestClient, ledger: Ledger, database_url: str
) -> None:
    """Whoever can write SQL can also recompute every seal after an alteration: only a head
    recorded elsewhere shows it."""
    callbacks(client)
    recorded = client.get("/seal").json()
    sql(database_url, f"DELETE FROM {seal.TABLE} WHERE position > 0")
    sql(database_url, f"DELETE FROM {ledger.events_table}")
    accept_all(ledger, [p.delivery("M9", "DELIVERED")])  # a new, consistent chain
    assert verify(database_url)[0] == 0
    code, report = verify(database_url, "--expect", f"{recorded['position']}:{recorded['hash']}")
    assert code == 1
    assert (report["problem"], report["seal"]) == ("seal_mismatch", recorded["position"])


def test_a_byte_altered_is_named(client: TestClient, ledger: Ledger, database_url: str) -> None:
    callbacks(client)
    victim = rows(database_url, ledger)[3]
    state = bytearray(bytes(victim["state"]))
    state[len(state) // 2] ^= 0x01
    sql(database_url, f"UPDATE {ledger.events_table} SET state = ? WHERE {{id}} = ?",
        bytes(state), victim["id"])  # fmt: skip
    code, report = verify(database_url)
    assert code == 1
    assert (report["problem"], report["notification_id"]) == ("altered", victim["id"])


def test_a_deleted_event_is_named(client: TestClient, ledger: Ledger, database_url: str) -> None:
    callbacks(client)
    events = rows(database_url, ledger)
    # Its last event first (SQLite would give its id to the next event), then one inside.
    for victim in (events[-1], events[2]):
        sql(database_url, f"DELETE FROM {ledger.events_table} WHERE {{id}} = ?", victim["id"])
        code, report = verify(database_url)
        assert code == 1
        assert (report["problem"], report["notification_id"]) == ("missing", victim["id"])


def test_two_events_swapped_are_named(ledger: Ledger, database_url: str) -> None:
    # An inbound message to a new contact: two events (Registered, then the message) in one
    # batch; the rows exchange places (a version stays unique with a placeholder in between).
    accept_all(ledger, [p.delivery("M1", "DELIVERED"), p.inbound("IN1")])
    first, second = rows(database_url, ledger)[1:3]
    assert first["originator_id"] == second["originator_id"]
    move = (
        f"UPDATE {ledger.events_table} SET originator_version = ?, topic = ?, state = ? "
        "WHERE {id} = ?"
    )
    sql(database_url, move, -1, first["topic"], bytes(first["state"]), first["id"])
    sql(database_url, move, first["originator_version"], first["topic"],
        bytes(first["state"]), second["id"])  # fmt: skip
    sql(database_url, move, second["originator_version"], second["topic"],
        bytes(second["state"]), first["id"])  # fmt: skip
    code, report = verify(database_url)
    assert code == 1
    assert (report["problem"], report["notification_id"]) == ("out_of_order", first["id"])


def test_an_altered_seal_is_named(client: TestClient, ledger: Ledger, database_url: str) -> None:
    callbacks(client)
    middle = seals(database_url)[2]
    sql(database_url, f"UPDATE {seal.TABLE} SET seal = ? WHERE position = ?",
        bytes(32), middle.position)  # fmt: skip
    code, report = verify(database_url)
    assert code == 1
    assert (report["problem"], report["seal"]) == ("seal_mismatch", middle.position)


def test_since_verifies_from_a_seal_onward(
    client: TestClient, ledger: Ledger, database_url: str
) -> None:
    callbacks(client)
    chained = seals(database_url)
    start = chained[3]
    code, report = verify(database_url, "--since", str(start.first_id))
    assert code == 0, report
    assert report["from"] == start.first_id
    assert report["seals"] == len(chained) - 3
    assert report["events"] == sum(s.events for s in chained[3:])
    # An event altered before it: only the full verify sees it.
    sql(database_url, f"UPDATE {ledger.events_table} SET topic = ? WHERE {{id}} = ?",
        "x", chained[0].position)  # fmt: skip
    assert verify(database_url, "--since", str(start.first_id))[0] == 0
    assert verify(database_url)[1]["notification_id"] == chained[0].position


def test_a_failed_batch_leaves_neither_events_nor_seal(ledger: Ledger, database_url: str) -> None:
    """The seal is written in the events' transaction: a batch whose seal cannot be written
    (here its table is away for a moment) commits no event either."""
    accept_all(ledger, [p.delivery("M1", "DELIVERED")])
    events, chained = rows(database_url, ledger), seals(database_url)
    sql(database_url, f"ALTER TABLE {seal.TABLE} RENAME TO away")
    with pytest.raises(Exception, match=r"away|ledger_seals"):
        accept_all(ledger, [p.delivery("M2", "DELIVERED")])
    sql(database_url, f"ALTER TABLE away RENAME TO {seal.TABLE}")
    assert rows(database_url, ledger) == events
    assert seals(database_url) == chained
    # The group commit seals its batches too, and the chain goes on from where it was.
    command = ledger.command_for(p.delivery("M3", "DELIVERED"), _receipt())
    assert command is not None
    run(GroupCommit(ledger, cache=LRU(10)), [command])
    code, report = verify(database_url)
    assert code == 0, report
    assert report["events"] == 2


def _receipt() -> Any:
    from datetime import UTC, datetime

    from domain.callbacks import Receipt

    return Receipt("{}", datetime.now(UTC), True)


def forge(database_url: str, ledger: Ledger, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Events added behind the ledger's back: `body`'s events, as its recorder wrote them,
    taken out of the log with their seal and put back with plain SQL, unsealed. The rows as
    they are now (ids included)."""
    before = rows(database_url, ledger)[-1]["id"]
    accept_all(ledger, [body])
    written = [e for e in rows(database_url, ledger) if e["id"] > before]
    sql(database_url, f"DELETE FROM {seal.TABLE} WHERE position > ?", before)
    sql(database_url, f"DELETE FROM {ledger.events_table} WHERE {{id}} > ?", before)
    for event in written:
        sql(database_url,
            f"INSERT INTO {ledger.events_table} (originator_id, originator_version, topic, state) "
            "VALUES (?, ?, ?, ?)",
            event["originator_id"], event["originator_version"], event["topic"],
            bytes(event["state"]))  # fmt: skip
    return [e for e in rows(database_url, ledger) if e["id"] > before]


def stream_text(event: dict[str, Any]) -> str:
    """An event's stream id as UUID text, however the backend stores it."""
    return str(UUID(str(event["originator_id"])))


def test_an_event_added_by_hand_is_named(ledger: Ledger, database_url: str) -> None:
    """Sealed in the transaction that writes it, every batch of the ledger's has its seal once
    committed: an event after the last seal was written by someone else."""
    accept_all(ledger, [p.delivery("M1", "DELIVERED"), p.opt("OPT_OUT", request_id="R1")])
    head = seals(database_url)[-1].position
    forged = forge(database_url, ledger, p.delivery("M-FORGED", "DELIVERED"))[0]
    code, report = verify(database_url)
    assert code == 1, report
    assert (report["problem"], report["notification_id"]) == ("unsealed", forged["id"])
    assert report["stream"] == stream_text(forged)
    assert report["topic"] == spellings.read(forged["topic"])
    assert str(head) in report["detail"]
    text = cli(database_url, "verify")
    assert text.returncode == 1
    assert f"notification {forged['id']} ({report['topic']} on stream" in text.stderr
    assert "unsealed" in text.stderr and "Traceback" not in text.stderr
    # From a point past the last seal too.
    code, report = verify(database_url, "--since", str(forged["id"]))
    assert (code, report["notification_id"]) == (1, forged["id"])


def test_a_log_with_events_and_no_seal_names_the_first(ledger: Ledger, database_url: str) -> None:
    accept_all(ledger, [p.delivery("M1", "DELIVERED")])
    first = rows(database_url, ledger)[0]
    sql(database_url, f"DELETE FROM {seal.TABLE}")
    code, report = verify(database_url)
    assert (code, report["problem"], report["notification_id"]) == (1, "unsealed", first["id"])
    assert report["stream"] == stream_text(first)


def test_a_state_stored_as_text_is_named(backend: str, ledger: Ledger, database_url: str) -> None:
    """A state the ledger did not write (text where it writes bytes): named, never a
    traceback. SQLite keeps the type per value, so one event's is changed; PostgreSQL per
    column, so the column is, and the first event is named."""
    accept_all(ledger, [p.delivery(f"M{i}", "DELIVERED") for i in range(3)])
    events = rows(database_url, ledger)
    if backend == "sqlite":
        victim = events[1]
        sql(database_url, f"UPDATE {ledger.events_table} SET state = ? WHERE {{id}} = ?",
            "not bytes", victim["id"])  # fmt: skip
    else:
        victim = events[0]
        sql(database_url, f"ALTER TABLE {ledger.events_table} ALTER COLUMN state TYPE text "
            "USING encode(state, 'escape')")  # fmt: skip
    code, report = verify(database_url)
    assert code == 1, report
    assert (report["problem"], report["notification_id"]) == ("unreadable", victim["id"])
    assert "stored as text" in report["detail"]
    assert report["stream"] == stream_text(victim)
    text = cli(database_url, "verify")
    assert text.returncode == 1 and "Traceback" not in text.stderr
    assert f"notification {victim['id']}" in text.stderr
