"""An event added to the log behind the ledger's back (plain SQL, no seal) is not the
ledger's: the projections stop at it without applying it, /healthz says why, the log names it
(no personal data in the line), and a batch the ledger commits while the projections read is
never taken for one. Both backends."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from projections.faults import ProjectionStuck
from service.runtime import Runtime
from service.settings import Settings
from store import spellings
from store.ledger import Ledger
from tests import payloads as p
from tests.helpers import accept_all, cli
from tests.integration.test_seal import forge, rows, sql, stream_text

NUMBER = "46732009911"


def wait_for(predicate: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_the_projections_stop_at_an_event_added_by_hand(
    settings: Settings,
    ledger: Ledger,
    database_url: str,
    admin_key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    opt_out = p.opt(
        "OPT_OUT", request_id="R-OUT", identity=NUMBER, event_time="2024-06-15T00:00:00Z"
    )
    accept_all(ledger, [opt_out, p.delivery("M1", "DELIVERED")])
    # A later opt-in, as the recorder would have written it: applied, it would lift the opt-out.
    opt_in = p.opt("OPT_IN", request_id="R-IN", identity=NUMBER, event_time="2024-06-16T00:00:00Z")
    prior = rows(database_url, ledger)[-1]["id"]
    forged = forge(database_url, ledger, opt_in)[-1]
    assert spellings.read(forged["topic"]).endswith("Contact.ConsentReported")

    with (
        caplog.at_level(logging.WARNING, logger="callback_ledger"),
        TestClient(
            create_app(settings, ledger),
            raise_server_exceptions=False,
            headers={"Authorization": f"Bearer {admin_key}"},
        ) as client,
    ):

        def stuck() -> bool:
            projections = client.get("/healthz").json()["projections"]
            return all("fault" in projection for projection in projections.values())

        wait_for(stuck)
        health = client.get("/healthz").json()
        assert health["status"] == "failing"
        for name, projection in health["projections"].items():
            fault = projection["fault"]
            assert fault["notification_id"] == forged["id"], name
            assert fault["stream"] == stream_text(forged)
            assert fault["event"] == "Contact.ConsentReported"
            assert fault["error"].startswith("UnsealedEvent: no seal covers event")
            # Everything before it is applied; it is not.
            assert projection["position"] == prior
        assert f"projection consent is stuck: cannot apply event {forged['id']}" in health["detail"]
        assert client.get("/messages/M1").status_code == 200
        answer = client.get("/consent/check", params={"channel": "SMS", "identity": NUMBER})
        assert answer.status_code == 503
        assert (answer.json()["may_send"], answer.json()["error"]) == (False, "consent_stale")
        # Bare /healthz (a load balancer's) says only that it fails.
        assert client.get("/healthz", headers={"Authorization": ""}).json() == {"status": "failing"}

        lines = [r.getMessage() for r in caplog.records if "IS STUCK" in r.getMessage()]
        assert lines and all(f"event {forged['id']}" in line for line in lines)
        assert all("no seal covers" in line for line in lines)
        assert not any(NUMBER[-8:] in r.getMessage() for r in caplog.records)

        # Taken out again, the projections go on and the fault clears.
        sql(database_url, f"DELETE FROM {ledger.events_table} WHERE {{id}} = ?", forged["id"])
        wait_for(lambda: client.get("/healthz").status_code == 200)
        answer = client.get("/consent/check", params={"channel": "SMS", "identity": NUMBER})
        assert answer.status_code == 200 and answer.json()["may_send"] is False


def test_batches_committed_while_the_projections_read_are_not_taken_for_unsealed(
    settings: Settings, ledger: Ledger
) -> None:
    """The seals of a page are read after the page: the newest batch, committed between the
    two reads or just before, has its seal there."""
    runtime = Runtime(settings, ledger)
    projector = runtime.projector()
    done = threading.Event()

    def write() -> None:
        try:
            for i in range(150):
                accept_all(ledger, [p.delivery(f"M{i}", "DELIVERED")])
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    pages = 0
    try:
        while not done.is_set():
            try:
                pages += projector.catch_up()
            except ProjectionStuck as stuck:  # pragma: no cover - the failure being tested
                pytest.fail(f"a batch of the ledger's was taken for unsealed: {stuck}")
        projector.catch_up()
        positions = projector.positions()
    finally:
        writer.join()
        runtime.close()
    assert pages > 1
    assert all(p["lag"] == 0 and "fault" not in p for p in positions.values())


def test_a_replay_stops_at_an_event_added_by_hand(ledger: Ledger, database_url: str) -> None:
    accept_all(ledger, [p.delivery("M1", "DELIVERED"), p.opt("OPT_OUT", request_id="R1")])
    forged = forge(database_url, ledger, p.delivery("M-FORGED", "DELIVERED"))[0]
    accept_all(ledger, [p.delivery("M2", "DELIVERED")])  # sealed, after it
    replay = cli(database_url, "replay")
    assert replay.returncode == 1, replay.stderr
    assert "replay stopped" in replay.stderr
    assert f"cannot apply event {forged['id']}" in replay.stderr
    assert "no seal covers" in replay.stderr
    assert "Traceback" not in replay.stderr
