"""Event state is stored compressed (store.compression) and a new message's first
report is one event: every raw body comes back byte for byte, and a store written before both
(plain JSON, Registered then DeliveryReported) still reads, dedupes and replays."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from domain.message import Message
from domain.receipt import Receipt
from projections import rules
from store.compression import MAGIC, StateCompressor, inflate
from store.config import Settings
from store.ledger import Ledger
from tests import payloads as p
from tests.conftest import fresh_database
from tests.helpers import cli, projection_rows, stored_events
from tests.test_queries import wait_for_projections
from tests.test_real_callbacks import post, real_bodies


@pytest.fixture
def other_url(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[str]:
    yield from fresh_database(backend, tmp_path_factory, request)


class EarlierLedger(Ledger):
    """Writes event state as plain JSON, as every version before compression did."""

    name = "Ledger"  # the same tables (the library names them after the class)
    compress_state = False


def raw_of(event: Any) -> bytes:
    raw = event.callback["raw"]
    return raw.encode() if raw is not None else base64.b64decode(event.raw_base64)


def test_every_real_body_comes_back_byte_for_byte(
    client: TestClient, ledger: Ledger, database_url: str
) -> None:
    bodies = [path.read_bytes() for path in real_bodies()]
    assert len(bodies) == 137
    kept = []
    for raw in bodies:
        response = post(client, raw)
        assert response.status_code in (200, 422)
        # Some fixtures repeat another's fact (same message and status): not stored again.
        if response.json().get("status") != "duplicate":
            kept.append(raw)
    assert len(kept) > 100
    stored = ledger.recorder.select_notifications(start=1, limit=10_000)
    assert stored and all(n.state.startswith(MAGIC) for n in stored)
    events = [e for e in stored_events(database_url) if hasattr(e, "callback")]
    assert sorted(raw_of(e) for e in events) == sorted(kept)
    # And through the API, by each delivery report's reference in its message's timeline.
    wait_for_projections(client)
    references = [
        item["reference"]
        for row in client.get("/messages", params={"limit": 1000}).json()["items"]
        for item in client.get(
            f"/messages/{row['message_id']}", params={"project_id": row["project_id"]}
        ).json()["timeline"]
    ]
    assert references
    by_text = {raw.decode(): raw for raw in bodies}
    for reference in references:
        answer = client.get(f"/callbacks/{reference}").json()
        assert by_text[answer["raw"]] == answer["raw"].encode()


def mix() -> list[dict[str, Any]]:
    return [
        p.delivery("M1", "QUEUED_ON_CHANNEL"),
        p.delivery("M1", "DELIVERED", reason={"code": "X", "description": 'é \u0000 "q"'}),
        p.delivery("M2", "FAILED", reason={"code": "RECIPIENT_NOT_REACHABLE"}),
        p.inbound("IN1", text="STOP"),
        p.inbound("IN2", text="please stop sending"),
        p.opt("OPT_IN", request_id="R1"),
        p.delivery("M1", "READ"),
        p.delivery("M3", "DELIVERED", channel="SMS"),
        p.opt("OPT_OUT", request_id="R2"),
    ]


def accept_all(ledger: Ledger, bodies: list[dict[str, Any]]) -> list[str]:
    return [
        ledger.accept(body, Receipt(orjson.dumps(body).decode(), datetime.now(UTC), True)).status
        for body in bodies
    ]


def test_a_store_written_before_compression_reads_and_replays(
    database_url: str, other_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = mix()
    first, rest = bodies[:5], bodies[5:]
    earlier = EarlierLedger.from_settings(Settings(database_url=database_url))
    # As earlier versions did: a message's stream starts with Registered, then each report.
    monkeypatch.setattr(Message, "_only_registered", lambda self: False)
    try:
        assert accept_all(earlier, first) == ["accepted"] * len(first)
        old = earlier.recorder.select_notifications(start=1, limit=1000)
        assert old and not any(n.state.startswith(MAGIC) for n in old)
    finally:
        earlier.close()
        monkeypatch.undo()

    ledger = Ledger.from_settings(Settings(database_url=database_url))
    try:
        # Facts of the old events are still known; new ones are written compressed.
        assert accept_all(ledger, first) == ["duplicate"] * len(first)
        assert accept_all(ledger, rest) == ["accepted"] * len(rest)
        new = ledger.recorder.select_notifications(start=len(old) + 1, limit=1000)
        assert new and all(n.state.startswith(MAGIC) for n in new)
        # A message stream of the earlier form (Registered, then each report) and one of
        # this form (FirstReported, then each report): both resolve their references.
        m1, m3 = Message.create_id("PROJECT1", "M1"), Message.create_id("PROJECT1", "M3")
        assert [n.topic.rsplit(".", 1)[1] for n in old if n.originator_id == m1] == [
            "Registered",
            "DeliveryReported",
            "DeliveryReported",
        ]
        found = ledger.keyed_event(m1, "WHATSAPP|QUEUED_ON_CHANNEL")
        assert (type(found).__name__, found.originator_version) == ("DeliveryReported", 2)
        found = ledger.keyed_event(m1, "WHATSAPP|READ")
        assert (type(found).__name__, found.originator_version) == ("DeliveryReported", 4)
        found = ledger.keyed_event(m3, "SMS|DELIVERED")
        assert (type(found).__name__, found.originator_version) == ("FirstReported", 1)
    finally:
        ledger.close()
    assert [raw_of(e) for e in stored_events(database_url) if hasattr(e, "callback")] == [
        orjson.dumps(b) for b in bodies
    ]

    # The same bodies in a store written all compressed: replay gives the same tables.
    ledger = Ledger.from_settings(Settings(database_url=other_url))
    try:
        accept_all(ledger, bodies)
    finally:
        ledger.close()
    for url in (database_url, other_url):
        result = cli(url, "replay", "--fresh", timeout=120)
        assert result.returncode == 0, result.stderr
    assert projection_rows(database_url) == projection_rows(other_url)
    assert projection_rows(database_url)["message_status"]


def test_state_compressor_round_trips_and_passes_plain_json_through() -> None:
    compressor = StateCompressor()
    for state in (b"{}", b'{"raw":"' + b"x" * 100_000 + b'"}', "é\u0000✓".encode()):
        packed = compressor.compress(state)
        assert packed.startswith(MAGIC)
        assert compressor.decompress(packed) == state == inflate(packed)
    assert compressor.decompress(b'{"plain":1}') == b'{"plain":1}'
    with pytest.raises(ValueError, match="unknown dictionary"):
        compressor.decompress(MAGIC + b"\x23\x01\x00\x00\x00\x00\x00\x00")


def test_a_stored_timeline_leaves_out_what_its_row_says_and_reads_back_whole() -> None:
    stream = str(Message.create_id("P", "M"))
    common = {"app_id": "A", "conversation_id": "CONV", "contact_id": "C", "metadata": "order-1"}
    reason = {"reason_code": None, "reason_sub_code": None, "reason_description": None}
    reports = [
        {"status": "QUEUED_ON_CHANNEL", "channel": "WHATSAPP", "identity": "467", "at": "t1"},
        {"status": "FAILED", "channel": None, "identity": None, "at": "t2"},
        {"status": "DELIVERED", "channel": "SMS", "identity": "467", "at": "t3"},
    ]
    facts = [{**r, **reason, **common} for r in reports]
    facts[0]["contact_id"] = None  # null where the row has a value: kept as null
    facts[1].update(reason_code="NO_CHANNELS_LEFT", metadata="other")
    for fact in facts:
        fact["source_ref"] = f"{stream}/{fact['channel'] or ''}|{fact['status']}"
    facts[2]["source_ref"] = "another-stream/SMS|DELIVERED"  # not derivable: kept
    row = {**rules.message_row("P", "M", facts)}
    assert row["contact_id"] == "C"
    row["reports"] = rules.compact_reports(row, facts)
    assert rules.expanded_reports(row) == facts
    stored = orjson.loads(row["reports"])
    assert stored[0] == {**reports[0], "contact_id": None}
    assert stored[1] == {**reports[1], "reason_code": "NO_CHANNELS_LEFT", "metadata": "other"}
    assert stored[2] == {**reports[2], "source_ref": "another-stream/SMS|DELIVERED"}
    assert len(row["reports"]) < len(orjson.dumps(facts)) / 2
    # A timeline stored whole, as earlier versions did, reads as it is.
    assert rules.expanded_reports({**row, "reports": orjson.dumps(facts).decode()}) == facts
