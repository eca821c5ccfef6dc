"""A store written by an earlier version (c1d2eb1, before the domain's import path changed) is
read and written by this one: its streams load, its events are found by topic, replay rebuilds
the same rows. The stored topics are part of every store (domain/topics.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from projections import rules
from projections.read_model import callbacks
from service.replay import replay
from service.runtime import Runtime
from store import envelope, seal
from store.compression import state_compressor
from store.config import Settings, backend_for
from store.db import Database
from store.seal_reads import verify
from store.vault import Secrets
from tests import payloads as p
from tests.conftest import SECRET
from tests.helpers import make_key, projection_rows
from tests.integration.test_queries import post, wait_for_projections

FIXTURE = Path(__file__).parents[1] / "fixtures" / "store-c1d2eb1.sqlite3"


@pytest.fixture
def old_settings(tmp_path: Path) -> Settings:
    shutil.copy(FIXTURE, tmp_path / "ledger.sqlite3")
    return Settings(database_url=f"sqlite:///{tmp_path}/ledger.sqlite3", webhook_secrets=(SECRET,))


@pytest.fixture
def old_client(old_settings: Settings) -> Iterator[TestClient]:
    key = make_key(old_settings.database_url, "test-admin")
    runtime = Runtime(old_settings)
    with TestClient(
        create_app(old_settings, runtime.ledger()),
        raise_server_exceptions=False,
        headers={"Authorization": f"Bearer {key}"},
    ) as client:
        yield client
    runtime.close()


def test_an_earlier_store_answers_and_takes_new_reports(old_client: TestClient) -> None:
    wait_for_projections(old_client)
    assert old_client.get("/messages/OLD1").json()["status"] == "DELIVERED"
    # A new report on a stream the earlier version started: the stream loads, the report lands.
    post(old_client, p.delivery("OLD1", "READ", "WHATSAPP", event_time="2024-06-15T14:26:00Z"))
    wait_for_projections(old_client)
    message = old_client.get("/messages/OLD1").json()
    assert message["status"] == "READ"
    assert [t["status"] for t in message["timeline"]] == [
        "SUBMITTED",
        "QUEUED_ON_CHANNEL",
        "DELIVERED",
        "READ",
    ]
    # The opt-out it recorded still decides, and a duplicate of it is still a duplicate.
    check = old_client.get("/consent/check", params={"channel": "SMS", "identity": "46732001122"})
    assert check.json()["may_send"] is False
    again = p.encode(p.opt("OPT_OUT", event_time="2024-06-15T15:00:00Z"))
    answer = old_client.post(
        "/webhooks/sinch", content=again, headers=p.signed_headers(again, SECRET)
    )
    assert answer.json()["status"] == "duplicate"
    # Its quarantine and its raw callbacks are found by topic.
    [entry] = old_client.get("/quarantine").json()["items"]
    assert entry["status_code"] == 422
    ref = quote(message["timeline"][0]["reference"], safe="/")
    raw = old_client.get(f"/callbacks/{ref}")
    assert raw.status_code == 200 and "message_submit_notification" in raw.json()["raw"]


def test_replay_of_an_earlier_store_rebuilds_its_rows(old_settings: Settings) -> None:
    before = projection_rows(old_settings.database_url)
    assert before["message_status"] and before["consent"]
    replay(old_settings)
    after = projection_rows(old_settings.database_url)
    assert {table: len(rows) for table, rows in after.items()} == {
        table: len(rows) for table, rows in before.items()
    }
    assert sorted(r["status"] for r in after["message_status"]) == ["DELIVERED", "FAILED"]
    # The callbacks list is newer than the store: the replay lists its callbacks too, each
    # read back by its reference.
    listed = projection_rows(old_settings.database_url, views={"callbacks": ("reference",)})
    assert listed["callbacks"]
    runtime = Runtime(old_settings)
    try:
        ledger = runtime.ledger()
        for row in listed["callbacks"]:
            assert callbacks.callback(ledger, row["reference"]) is not None, row
    finally:
        runtime.close()


ENCRYPTED = Path(__file__).parents[1] / "fixtures" / "store-b95cb8c-encrypted.sqlite3"
# The fixture's keys (tests/fixtures/store-b95cb8c-encrypted.py), nothing else's.
ENCRYPTED_KEYS = Secrets(bytes(range(32)), bytes(range(32, 64)))


@pytest.fixture
def encrypted_settings(tmp_path: Path) -> Settings:
    shutil.copy(ENCRYPTED, tmp_path / "ledger.sqlite3")
    return Settings(
        database_url=f"sqlite:///{tmp_path}/ledger.sqlite3",
        webhook_secrets=(SECRET,),
        keys=ENCRYPTED_KEYS,
    )


def test_an_earlier_encrypted_store_opens_and_takes_new_events(
    encrypted_settings: Settings,
) -> None:
    """Events of an encrypted store written with two frames per event (envelope MAGIC_V1) are
    read beside those written now (one frame): their personal fields open, the seal chain
    verifies across both, and an erasure reaches both."""
    url = encrypted_settings.database_url
    key = make_key(url, "test-admin")
    runtime = Runtime(encrypted_settings)
    try:
        with TestClient(
            create_app(encrypted_settings, runtime.ledger()),
            raise_server_exceptions=False,
            headers={"Authorization": f"Bearer {key}"},
        ) as client:
            wait_for_projections(client)
            post(client, p.delivery("OLD1", "READ", "WHATSAPP", event_time="2024-06-15T14:26:00Z"))
            post(client, p.delivery("NEW1", "DELIVERED", "SMS", identity="46700000002"))
            wait_for_projections(client)
            old = client.get("/messages/OLD1").json()
            assert old["status"] == "READ"
            assert [t["status"] for t in old["timeline"]] == [
                "SUBMITTED",
                "QUEUED_ON_CHANNEL",
                "DELIVERED",
                "READ",
            ]
            assert {t["identity"] for t in old["timeline"]} == {"46732001122"}
            assert old["metadata"] == "order-123"
            raw = client.get(f"/callbacks/{quote(old['timeline'][0]['reference'], safe='/')}")
            assert raw.status_code == 200 and "message_submit_notification" in raw.json()["raw"]
            check = {"channel": "SMS", "identity": "46732001122"}
            assert client.get("/consent/check", params=check).json()["may_send"] is False
            ledger = runtime.ledger()
            states = [bytes(n.state) for n in ledger.recorder.select_notifications(1, 1000)]
            magics = {s[:4] for s in states if envelope.is_sealed(s)}
            assert magics == {envelope.MAGIC_V1, envelope.MAGIC}
            # Both forms open, and the chain covers both.
            opened = [
                envelope.open_state(s, ledger.vault, state_compressor())
                for s in states
                if envelope.is_sealed(s)
            ]
            assert not any(o.get("erased") for o in opened)
            db = Database(backend_for(url))
            try:
                assert isinstance(verify(db, ledger.events_table), seal.Verified)
            finally:
                db.close()
            # An erasure of the number both forms name: its old and new events are unreadable.
            erased = client.post(
                "/admin/erasures",
                json={"channel": "SMS", "identity": "46700000002", "reason": "request"},
            )
            assert erased.status_code == 201, erased.text
            assert erased.json()["keys_destroyed"] == 2  # the earlier version's, and this one's
            for name in ("OLD2", "NEW1"):
                shown = client.get(f"/messages/{name}").json()
                assert shown["timeline"] and all(
                    t["identity"] in (None, "[erased]") for t in shown["timeline"]
                ), shown
    finally:
        runtime.close()


def test_replay_of_an_earlier_encrypted_store_rebuilds_its_rows(
    encrypted_settings: Settings,
) -> None:
    before = timelines_expanded(projection_rows(encrypted_settings.database_url, shown=False))
    assert before["message_status"] and before["consent"]
    # Opened by this version, its contact_identities keeps the layout it was made with (keyed
    # by contact, with the lookup by number) and gets no index of the new one.
    runtime = Runtime(encrypted_settings)
    runtime.projector().catch_up()
    runtime.close()
    assert identity_indexes(encrypted_settings.database_url) == ("ix_ci_g1_identity", "")
    replay(encrypted_settings)
    after = projection_rows(encrypted_settings.database_url, shown=False)
    assert timelines_expanded(after) == before
    # The replay's generation: keyed by number, with the lookup by contact.
    assert identity_indexes(encrypted_settings.database_url) == ("ix_ci_g2_contact", KEY)


KEY = "PRIMARY KEY (channel, identity, project_id, contact_id)"


def identity_indexes(url: str) -> tuple[str, str]:
    """The active contact_identities table's index names, and its key if it is KEY."""
    db = Database(backend_for(url))
    try:
        with db.read() as cur:
            [view] = cur.execute(
                "SELECT sql FROM sqlite_master WHERE name = 'contact_identities'"
            ).fetchall()
            table = view["sql"].rsplit(" ", 1)[1]
            indexes = cur.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                "AND sql IS NOT NULL ORDER BY name",
                (table,),
            ).fetchall()
            made = cur.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,))
            sql = made.fetchall()[0]["sql"]
    finally:
        db.close()
    return ", ".join(i["name"] for i in indexes), KEY if KEY in sql else ""


def timelines_expanded(rows: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The rows with each message's stored timeline read back whole: this version stores it
    shorter (a report's channel and identity left out when the same as the one before), so a
    replay writes other text for the same reports."""
    return {
        view: [
            {**row, "reports": rules.expanded_reports(row)} if "reports" in row else row
            for row in found
        ]
        for view, found in rows.items()
    }
