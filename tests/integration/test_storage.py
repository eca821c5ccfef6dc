"""Event state is stored compressed (store.compression) and a new message's first
report is one event: every raw body comes back byte for byte, and a store written before both
(plain JSON, Registered then DeliveryReported) still reads, dedupes and replays."""

from __future__ import annotations

import base64
from typing import Any

from starlette.testclient import TestClient

from store import envelope
from store.compression import MAGIC
from store.ledger import Ledger
from tests.helpers import stored_events
from tests.integration.test_queries import wait_for_projections
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
