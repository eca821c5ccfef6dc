"""A message's stream id (store.stream_ids): time-ordered after every other stream for a ULID
in a store made by this version, time-ordered or hashed as before in a store that earlier
versions made. On both backends."""

from __future__ import annotations

from urllib.parse import quote

import orjson
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.console.message import arrivals
from domain import ids
from service.runtime import Runtime
from store.config import Settings
from store.db import Database
from store.ledger import Ledger
from tests import payloads as p
from tests.helpers import make_key
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
    assert ledger.stream_layout == ids.TAIL
    stream = ids.message_id("PROJECT1", ULID, ids.TAIL)
    assert stream.bytes[4:10] == MILLIS.to_bytes(6, "big")
    assert stream != ids.message_id("PROJECT1", ULID)
    post(client, p.delivery(ULID, "QUEUED_ON_CHANNEL", event_time="2024-06-15T10:00:05Z"))
    post(client, p.delivery(ULID, "DELIVERED", event_time="2024-06-15T10:00:06Z"))
    post(client, p.delivery("NOT-A-ULID", "DELIVERED"))
    assert streams(ledger) == {
        str(stream): [1, 2],
        str(ids.message_id("PROJECT1", "NOT-A-ULID")): [1],  # other ids: hashed as before
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
    # The stored timeline names its stream by a mark, not by a reference per report.
    db = Database(settings.store_backend())
    with db.read() as cur:
        row = cur.execute(
            "SELECT reports FROM message_status WHERE message_id = ?", (ULID,)
        ).fetchone()
    db.close()
    assert orjson.loads(row["reports"]) == "2QD"  # the layout's mark, then the statuses


def test_a_store_made_with_ordered_ids_keeps_them(settings: Settings) -> None:
    # A store made by the versions before the TAIL layout: streams in time order, unprefixed.
    runtime = Runtime(settings)
    runtime.ledger()
    runtime.close()
    db = Database(settings.store_backend())
    with db.transaction() as cur:
        cur.execute("UPDATE ledger_stream_ids SET messages = 'ordered'")
    db.close()
    runtime = Runtime(settings)
    ledger = runtime.ledger()
    assert ledger.stream_layout == ids.ORDERED
    key = make_key(settings.database_url, "test-admin")
    with TestClient(
        create_app(settings, ledger), headers={"Authorization": f"Bearer {key}"}
    ) as client:
        post(client, p.delivery(ULID, "QUEUED_ON_CHANNEL", event_time="2024-06-15T10:00:05Z"))
        post(client, p.delivery(ULID, "DELIVERED", event_time="2024-06-15T10:00:06Z"))
        wait_for_projections(client)
        stream = ids.message_id("PROJECT1", ULID, ids.ORDERED)
        assert stream.bytes[:6] == MILLIS.to_bytes(6, "big")
        assert streams(ledger) == {str(stream): [1, 2]}
        message = client.get(f"/messages/{ULID}").json()
        assert [t["reference"] for t in message["timeline"]] == [
            f"{stream}/WHATSAPP|QUEUED_ON_CHANNEL",
            f"{stream}/WHATSAPP|DELIVERED",
        ]
    runtime.close()


def test_a_store_naming_its_streams_in_an_unknown_way_is_not_opened(settings: Settings) -> None:
    """A later version's layout: this one would file reports under streams of its own."""
    runtime = Runtime(settings)
    runtime.ledger()
    runtime.close()
    db = Database(settings.store_backend())
    with db.transaction() as cur:
        cur.execute("UPDATE ledger_stream_ids SET messages = 'sideways'")
    db.close()
    runtime = Runtime(settings)
    with pytest.raises(RuntimeError, match="sideways"):
        runtime.ledger()
    runtime.close()


def test_a_store_written_with_hashed_ids_keeps_them(settings: Settings) -> None:
    # An earlier version's store: streams named by hashing, and no ledger_stream_ids.
    runtime = Runtime(settings)
    runtime.ledger().stream_layout = ids.HASHED
    key = make_key(settings.database_url, "test-admin")
    with TestClient(
        create_app(settings, runtime.ledger()), headers={"Authorization": f"Bearer {key}"}
    ) as client:
        post(client, p.delivery(ULID, "QUEUED_ON_CHANNEL", event_time="2024-06-15T10:00:05Z"))
        wait_for_projections(client)
    runtime.close()
    db = Database(settings.store_backend())
    with db.transaction() as cur:
        cur.execute("DROP TABLE ledger_stream_ids")
    db.close()

    runtime = Runtime(settings)
    ledger = runtime.ledger()
    assert ledger.stream_layout == ids.HASHED  # the log held events when the table was made
    with TestClient(
        create_app(settings, ledger), headers={"Authorization": f"Bearer {key}"}
    ) as client:
        post(client, p.delivery(ULID, "DELIVERED", event_time="2024-06-15T10:00:06Z"))
        wait_for_projections(client)
        hashed = ids.message_id("PROJECT1", ULID)
        assert streams(ledger) == {str(hashed): [1, 2]}  # the later report found its stream
        message = client.get(f"/messages/{ULID}").json()
        assert message["status"] == "DELIVERED"
        assert [t["reference"] for t in message["timeline"]] == [
            f"{hashed}/WHATSAPP|QUEUED_ON_CHANNEL",
            f"{hashed}/WHATSAPP|DELIVERED",
        ]
    runtime.close()


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
    zeros = ids.message_id("PROJECT1", odd[-1], ids.TAIL)
    assert zeros.bytes[4:10] == bytes(6) and found[str(zeros)] == [1]
    lower = ids.message_id("PROJECT1", ULID.lower(), ids.TAIL)
    assert lower.bytes[4:10] == MILLIS.to_bytes(6, "big") and found[str(lower)] == [1]
    wait_for_projections(client)
    assert client.get(f"/messages/{quote(odd[0])}").json()["status"] == "DELIVERED"
