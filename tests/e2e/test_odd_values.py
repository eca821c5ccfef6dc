"""Odd but legal values in callbacks (NUL, lone surrogates, the edges of the calendar, huge
signature timestamps), and what happens when a projection meets an event it cannot apply:
never a silent stop, never a consent answer from a stale projection. Both backends."""

from __future__ import annotations

import time

from starlette.testclient import TestClient

from domain.contact import Contact
from store.ledger import Ledger
from tests import payloads as p
from tests.helpers import cli
from tests.integration.test_odd_values import check, send
from tests.integration.test_queries import wait_for_projections


def poison(ledger: Ledger) -> None:
    """An event in the log that the consent projection cannot apply (no channel: its rows
    need one). Only a bug or a hand-edited log can make one; the store must say so."""
    contact = Contact(project_id="P", contact_key="POISON")
    contact.trigger_event(
        Contact.ConsentReported,
        project_id="P",
        contact_key="POISON",
        kind="OPT_OUT",
        status="OPT_OUT_SUCCEEDED",
        channel=None,
        identity="1",
        request_id="POISON",
        error_details=None,
        event_time=None,
        accepted_time=None,
        contact_id=None,
        processing_mode=None,
        app_id=None,
        dedupe_key="poison",
        callback={
            "raw": "{}",
            "received_at": "2024-06-15T00:00:00+00:00",
            "signature_verified": False,
            "headers": {},
        },
    )
    ledger.save(contact)


def wait_for(predicate, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_stuck_projection_says_so_and_consent_is_not_answered(
    client: TestClient, ledger: Ledger, database_url: str
) -> None:
    assert send(client, p.opt("OPT_IN", request_id="R-IN", identity="4611")).status_code == 200
    wait_for_projections(client)
    assert check(client, "4611").json()["may_send"] is True
    poison(ledger)
    head = ledger.ping()
    assert (
        send(
            client,
            p.opt(
                "OPT_OUT", request_id="R-OUT", identity="4611", event_time="2024-06-16T00:00:00Z"
            ),
        ).status_code
        == 200
    )

    wait_for(lambda: client.get("/healthz").status_code == 503)
    health = client.get("/healthz").json()
    assert health["status"] == "failing"
    fault = health["projections"]["consent"]["fault"]
    assert fault["notification_id"] == head
    assert fault["event"] == "Contact.ConsentReported"
    assert "projection consent is stuck" in health["detail"]
    # The other projection goes on.
    assert send(client, p.delivery("M-AFTER")).status_code == 200
    wait_for(lambda: client.get("/messages/M-AFTER").status_code == 200)

    answer = check(client, "4611")
    assert answer.status_code == 503
    assert answer.json()["may_send"] is False
    assert answer.json()["error"] == "consent_stale"
    at = client.get("/consent", params={"channel": "SMS", "identity": "4611"})
    assert (at.status_code, at.json()["error"]) == (503, "consent_stale")

    replay = cli(database_url, "replay", "--projection", "consent")
    assert replay.returncode == 1
    assert f"event {head} (Contact.ConsentReported" in replay.stderr
    assert "Traceback" not in replay.stderr
