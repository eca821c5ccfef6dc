"""/healthz says what stops the service from doing its job, not only whether the store
answers a ping: writes failing (a full disk), a projection that does not move."""

from __future__ import annotations

import dataclasses
import time

import psycopg
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from service.settings import Settings
from store.ledger import Ledger
from tests import payloads as p
from tests.conftest import SECRET
from tests.integration.test_queries import wait_for_projections


def send(client: TestClient, body: dict):
    raw = p.encode(body)
    return client.post("/webhooks/sinch", content=raw, headers=p.signed_headers(raw, SECRET))


@pytest.mark.parametrize("backend", ["postgres"])
def test_a_full_disk_is_reported(client: TestClient, ledger: Ledger, database_url: str) -> None:
    assert send(client, p.delivery("M1")).status_code == 200
    wait_for_projections(client)
    table = ledger.recorder.events_table_name
    # PostgreSQL's own "disk full" error, raised on every insert into the log.
    with psycopg.connect(
        database_url.replace("postgresql://", "postgresql://"), autocommit=True
    ) as conn:
        conn.execute(
            "CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'could not extend file: No space left on device' "
            "USING ERRCODE = 'disk_full'; END $$"
        )
        conn.execute(
            f"CREATE TRIGGER disk_full BEFORE INSERT ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION disk_full()"
        )
        assert send(client, p.delivery("M2")).status_code == 503
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["status"] == "failing"
        assert "callbacks cannot be recorded" in health.json()["detail"]
        assert "No space left on device" in health.json()["detail"]
        conn.execute(f"DROP TRIGGER disk_full ON {table}")
    assert send(client, p.delivery("M2")).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_a_projection_that_does_not_move_is_reported(
    settings: Settings, ledger: Ledger, admin_key: str
) -> None:
    # No follower in this process and no worker running: the projections fall behind.
    still = dataclasses.replace(settings, projections="off", health_max_lag_s=1)
    key = {"Authorization": f"Bearer {admin_key}"}
    with TestClient(
        create_app(still, ledger), raise_server_exceptions=False, headers=key
    ) as client:
        assert client.get("/healthz").status_code == 200
        assert send(client, p.delivery("M1")).status_code == 200
        assert client.get("/healthz").status_code == 200  # behind, but not for long yet
        time.sleep(1.5)
        health = client.get("/healthz")
        assert health.status_code == 503
        assert "not moving" in health.json()["detail"]
