"""Event state is stored compressed (store.compression) and a new message's first
report is one event: every raw body comes back byte for byte, and a store written before both
(plain JSON, Registered then DeliveryReported) still reads, dedupes and replays."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

from starlette.testclient import TestClient

from service.replay import replay
from service.settings import Settings, backend_for
from store import envelope, spellings
from store.backend import Database
from store.compression import MAGIC
from store.ledger import Ledger
from tests import payloads as p
from tests.conftest import SECRET
from tests.helpers import projection_rows, stored_events
from tests.integration.test_queries import feed, wait_for_projections
from tests.integration.test_real_callbacks import post, real_bodies


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
    assert stored and all(n.state.startswith((MAGIC, *envelope.MAGICS)) for n in stored)
    # A merge is recorded on both contacts: its body counted once, by the preserved one's.
    events = [
        e
        for e in stored_events(database_url)
        if hasattr(e, "callback") and getattr(e, "role", None) != "deleted"
    ]
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


def test_events_are_stored_under_short_topics_and_replay_reads_them(
    client: TestClient, ledger: Ledger, database_url: str, settings: Settings
) -> None:
    bodies = [
        p.delivery("MSG1", "QUEUED_ON_CHANNEL", event_time="2024-06-15T14:25:08.000Z"),
        p.delivery("MSG1", "DELIVERED"),
        p.submit("MSG2"),
        p.opt("OPT_OUT"),
        p.inbound("IN1", text="hello"),
    ]
    feed(client, bodies)
    db = Database(backend_for(database_url))
    table = ledger.events_table
    try:
        with db.read() as cur:
            topics = {r["topic"] for r in cur.execute(f"SELECT topic FROM {table}").fetchall()}
        assert topics == {"MR", "MF", "MD", "MS", "CR", "CC", "CI"}
        assert topics == set(spellings.SHORT.values())
        before = projection_rows(database_url)
    finally:
        db.close()
    replay(settings)
    assert projection_rows(database_url) == before
    # References read, duplicates are duplicates, the opt-out still decides.
    [row] = [r for r in before["message_status"] if r["message_id"] == "MSG1"]
    message = client.get("/messages/MSG1", params={"project_id": "PROJECT1"}).json()
    for item in message["timeline"]:
        answer = client.get(f"/callbacks/{quote(item['reference'], safe='/')}")
        assert answer.status_code == 200, item
    raw = p.encode(p.opt("OPT_OUT"))
    again = client.post("/webhooks/sinch", content=raw, headers=p.signed_headers(raw, SECRET))
    assert again.json()["status"] == "duplicate"
    check = client.get("/consent/check", params={"channel": "SMS", "identity": "46732001122"})
    assert check.json()["may_send"] is False
    assert row["status"] == "DELIVERED"


def test_sqlite_keeps_contact_identities_in_its_key_alone(
    client: TestClient, database_url: str
) -> None:
    feed(client, [p.opt("OPT_OUT"), p.inbound("IN1", text="hello")])
    db = Database(backend_for(database_url))
    try:
        with db.read() as cur:
            rows = cur.execute(
                "SELECT project_id, contact_id, channel FROM contact_identities"
            ).fetchall()
            if db.backend.name == "sqlite":
                [table] = cur.execute(
                    "SELECT sql FROM sqlite_master WHERE name = 'contact_identities_g1'"
                ).fetchall()
                indexes = cur.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'index' "
                    "AND tbl_name = 'contact_identities_g1'"
                ).fetchall()
    finally:
        db.close()
    assert rows == [{"project_id": "PROJECT1", "contact_id": "CONTACT1", "channel": "SMS"}]
    if db.backend.name == "sqlite":
        assert table["sql"].endswith("WITHOUT ROWID")
        # Its key (by number) is the table: only the lookup by contact is a second tree.
        assert [i["name"] for i in indexes] == ["ix_ci_g1_contact"]
