"""`GET /callbacks/{reference}` reads the one event a reference names, however long its stream."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from domain.callbacks import Receipt
from domain.contact import Contact, contact_key
from domain.message import Message
from projections.read_model import callbacks
from store.group_commit import LRU, GroupCommit, run
from store.ledger import Ledger
from tests import payloads as p

EVENTS = 3000


def fill(ledger: Ledger, bodies: list[dict[str, Any]]) -> None:
    cache = LRU(10)
    for start in range(0, len(bodies), 500):
        commands = []
        for body in bodies[start : start + 500]:
            receipt = Receipt(orjson.dumps(body).decode(), datetime.now(UTC), True)
            command = ledger.command_for(body, receipt)
            assert command is not None
            commands.append(command)
        run(GroupCommit(ledger, cache=cache), commands)


class Counting:
    """Counts the events the recorder hands out and the mapper decodes."""

    def __init__(self, ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
        self.selected = self.decoded = 0
        select, decode = ledger.recorder.select_events, ledger.mapper.to_domain_event

        def counted_select(*args: Any, **kwargs: Any) -> Any:
            rows = select(*args, **kwargs)
            self.selected += len(rows)
            return rows

        def counted_decode(stored: Any) -> Any:
            self.decoded += 1
            return decode(stored)

        monkeypatch.setattr(ledger.recorder, "select_events", counted_select)
        monkeypatch.setattr(ledger.mapper, "to_domain_event", counted_decode)


def test_a_reference_on_a_long_stream_reads_one_event(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    fill(ledger, [p.inbound(f"IN{i}", text=f"hello {i}") for i in range(EVENTS)])
    fill(ledger, [p.opt("OPT_OUT", request_id="R1")])
    stream = Contact.create_id("PROJECT1", contact_key("CONTACT1", "SMS", "+46732001122"))
    counting = Counting(ledger, monkeypatch)
    for i in (0, EVENTS // 2, EVENTS - 1):
        found = callbacks.callback(ledger, f"{stream}/INBOUND|IN{i}")
        assert found is not None and found["version"] == i + 2
        assert orjson.loads(found["raw"])["message"]["id"] == f"IN{i}"
    found = callbacks.callback(ledger, f"{stream}/OPT_OUT|request|R1")
    assert found is not None and found["event"] == "Contact.ConsentReported"
    assert (counting.selected, counting.decoded) == (4, 4)
    # Absent keys read nothing but the stream's first event.
    assert callbacks.callback(ledger, f"{stream}/INBOUND|nope") is None
    assert counting.decoded == 4
    # The lookup is by the dedupe table's primary key, not by a scan of the stream's rows.
    sql = "SELECT originator_version FROM ledger_dedupe WHERE originator_id = ? AND dedupe_key = ?"
    if backend == "sqlite":
        with ledger.recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute("EXPLAIN QUERY PLAN " + sql, ["x", b"y"])
            plan = " ".join(str(tuple(row)) for row in cursor.fetchall())
        assert "PRIMARY KEY" in plan, plan
    else:
        with ledger.recorder.datastore.get_connection() as conn:
            conn.execute("ANALYZE")
            rows = conn.execute(
                "EXPLAIN " + sql.replace("?", "%s"), (stream, b"INBOUND|IN7")
            ).fetchall()
            plan = " ".join(str(row) for row in rows)
        assert "ledger_dedupe_pkey" in plan, plan


def test_message_references_and_old_forms_keep_working(client: TestClient, ledger: Ledger) -> None:
    from tests.integration.test_webhook import post

    for status in ("QUEUED_ON_CHANNEL", "DELIVERED"):
        assert post(client, p.delivery("M1", status)).status_code == 200
    stream = Message.create_id("PROJECT1", "M1")
    response = client.get(f"/callbacks/{stream}/WHATSAPP|DELIVERED")
    assert response.status_code == 200
    assert response.json()["version"] == 2
    first = client.get(f"/callbacks/{stream}/WHATSAPP|QUEUED_ON_CHANNEL").json()
    assert (first["event"], first["version"]) == ("Message.FirstReported", 1)
    assert client.get(f"/callbacks/{stream}/WHATSAPP|READ").status_code == 404
    assert client.get(f"/callbacks/{stream}/INBOUND|IN1").status_code == 404
