"""A store written by an earlier version (c1d2eb1, before the domain's import path changed) is
read and written by this one: its streams load, its events are found by topic, replay rebuilds
the same rows. The stored topics are part of every store (domain/topics.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from service.replay import replay
from service.runtime import Runtime
from store.config import Settings
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
