"""A message's stream id (domain.ids.message_id): time-ordered after every other stream for a
ULID, hashed for any other id. On both backends."""

from __future__ import annotations

from urllib.parse import quote

import orjson
from starlette.testclient import TestClient

from api.console.message import arrivals
from domain import ids
from service.settings import Settings
from store.backend import Database
from store.ledger import Ledger
from tests import payloads as p
from tests.integration.test_queries import post, wait_for_projections

ULID = "01J0DNDWBY98QZ7HJAYXTTH4MM"  # made at 2024-06-15T10:00:01.150Z
MILLIS = 1718445601150


def streams(ledger: Ledger) -> dict[str, list[int]]:
    """Each stream in the log -> its events' versions."""
    found: dict[str, list[int]] = {}
    for n in ledger.recorder.select_notifications(start=1, limit=100):
        found.setdefault(str(n.originator_id), []).append(n.originator_version)
    return found


def test_a_new_store_names_a_ulid_message_in_time_order(
    client: TestClient, ledger: Ledger, settings: Settings
) -> None:
    stream = ids.message_id("PROJECT1", ULID)
    assert stream.bytes[:10] == ids.TAIL_PREFIX + MILLIS.to_bytes(6, "big")
    post(client, p.delivery(ULID, "QUEUED_ON_CHANNEL", event_time="2024-06-15T10:00:05Z"))
    post(client, p.delivery(ULID, "DELIVERED", event_time="2024-06-15T10:00:06Z"))
    post(client, p.delivery("NOT-A-ULID", "DELIVERED"))
    assert streams(ledger) == {
        str(stream): [1, 2],
        str(ids.message_id("PROJECT1", "NOT-A-ULID")): [1],  # other ids: hashed
    }
    wait_for_projections(client)
    message = client.get(f"/messages/{ULID}").json()
    assert message["status"] == "DELIVERED"
    refs = [t["reference"] for t in message["timeline"]]
    assert refs == [f"{stream}/WHATSAPP|QUEUED_ON_CHANNEL", f"{stream}/WHATSAPP|DELIVERED"]
    raw = client.get(f"/callbacks/{quote(refs[1], safe='/')}")
    assert raw.status_code == 200 and '"DELIVERED"' in raw.json()["raw"]
    # The console's arrival times read the same stream.
    assert set(arrivals(ledger, "PROJECT1", ULID)) == set(refs)
    # The stored timeline names no reference: each is made again from the row.
    db = Database(settings.store_backend())
    with db.read() as cur:
        row = cur.execute(
            "SELECT reports FROM message_status WHERE message_id = ?", (ULID,)
        ).fetchone()
    db.close()
    assert orjson.loads(row["reports"]) == "QD"  # the statuses' letters


def test_odd_message_ids_are_recorded_under_hashed_streams(
    client: TestClient, ledger: Ledger
) -> None:
    """Ids that look nearly like ULIDs reach the webhook as they are: none is refused or
    read as a time, and a ULID in lower case names the same stream as in upper case."""
    odd = ["7\u00df" + "Z" * 24, "7\u017f" + "Z" * 24, ULID[:-1] + "U", "8" + ULID[1:], "0" * 26]
    for n, message_id in enumerate(odd):
        post(client, p.delivery(message_id, "DELIVERED", event_time=f"2024-06-15T10:00:0{n}Z"))
    post(client, p.delivery(ULID.lower(), "QUEUED_ON_CHANNEL"))
    found = streams(ledger)
    for message_id in odd[:-1]:
        assert found[str(ids.message_id("PROJECT1", message_id))] == [1]
    # All zeros is a ULID (made at the epoch): time-ordered, its time 0.
    zeros = ids.message_id("PROJECT1", odd[-1])
    assert zeros.bytes[4:10] == bytes(6) and found[str(zeros)] == [1]
    lower = ids.message_id("PROJECT1", ULID.lower())
    assert lower.bytes[4:10] == MILLIS.to_bytes(6, "big") and found[str(lower)] == [1]
    wait_for_projections(client)
    assert client.get(f"/messages/{quote(odd[0])}").json()["status"] == "DELIVERED"
