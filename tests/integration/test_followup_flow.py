"""Delivery follow-up end to end, on both backends: next actions through the API and
the CLI, the consent override, messages that went quiet, MESSAGE_SUBMIT in the timeline (new
callbacks and those an earlier version kept in the catch-all) and replay equality."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from starlette.testclient import TestClient

from domain.callbacks import Receipt
from projections import rules
from service.replay import replay
from service.runtime import Runtime
from service.settings import Settings
from store.ledger import Ledger
from tests import payloads as p
from tests.conftest import SECRET
from tests.helpers import accept_all, projection_rows
from tests.integration.test_queries import feed, post, wait_for_projections

NUMBER = "46700000123"


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat().replace("+00:00", "Z")


def failed(message_id: str, code: str, channel: str = "SMS", **extra: object) -> dict:
    return p.delivery(
        message_id,
        "FAILED",
        channel,
        identity=NUMBER,
        reason={"code": code, "description": "from the channel", **extra},
    )


def test_next_action_per_message(client: TestClient) -> None:
    feed(
        client,
        [
            failed("RETRY", "CHANNEL_FAILURE"),
            failed("TEMPLATE", "OUTSIDE_ALLOWED_SENDING_WINDOW", "WHATSAPP"),
            failed("GONE", "RECIPIENT_NOT_REACHABLE"),
            failed("NEW", "A_CODE_FROM_2027"),
            # Failed on WhatsApp, then delivered over the SMS fallback: nothing to do.
            failed("FALLBACK", "RECIPIENT_NOT_REACHABLE", "WHATSAPP"),
            p.delivery("FALLBACK", "DELIVERED", "SMS", identity=NUMBER),
            p.delivery("OK", "DELIVERED", "SMS", identity=NUMBER),
        ],
    )
    actions = {m["message_id"]: m["next_action"] for m in client.get("/messages").json()["items"]}
    assert actions == {
        "RETRY": "retry_later",
        "TEMPLATE": "use_template",
        "GONE": "do_not_retry",
        "NEW": "review",
        "FALLBACK": "none",
        "OK": "none",
    }
    one = client.get("/messages/RETRY").json()
    assert one["next_action_why"].startswith("CHANNEL_FAILURE:")
    assert one["read_reported_on_channel"] is False  # SMS sends no READ
    assert client.get("/messages/TEMPLATE").json()["read_reported_on_channel"] is True
    listed = client.get("/messages", params={"next_action": "retry_later"}).json()["items"]
    assert [m["message_id"] for m in listed] == ["RETRY"]
    refused = client.get("/messages", params={"next_action": "resend"})
    assert refused.status_code == 400
    assert "next_action" in refused.json()["detail"]


def test_an_opted_out_number_is_never_to_be_retried(client: TestClient) -> None:
    feed(
        client,
        [
            failed("RETRY", "CHANNEL_FAILURE"),
            p.opt("OPT_OUT", identity=NUMBER, request_id="R1", event_time="2024-06-15T15:00:00Z"),
        ],
    )
    shown = client.get("/messages/RETRY").json()
    assert shown["next_action"] == "do_not_retry"
    assert "opted out" in shown["next_action_why"]
    proof = client.get(f"/callbacks/{shown['next_action_consent_ref']}")
    assert proof.status_code == 200
    assert "opt_out_notification" in proof.json()["raw"]
    # The retry list leaves it out; the do-not-retry list has it.
    assert client.get("/messages", params={"next_action": "retry_later"}).json()["items"] == []
    dnr = client.get("/messages", params={"next_action": "do_not_retry"}).json()["items"]
    assert [m["message_id"] for m in dnr] == ["RETRY"]


def test_messages_that_went_quiet(client: TestClient) -> None:
    feed(
        client,
        [
            p.delivery("QUIET", "QUEUED_ON_CHANNEL", "SMS", event_time=ago(hours=30)),
            p.delivery("FRESH", "QUEUED_ON_CHANNEL", "SMS", event_time=ago(minutes=5)),
            p.delivery("SWITCHED", "SWITCHING_CHANNEL", "WHATSAPP", event_time=ago(days=3)),
            p.submit("SUBMITTED_ONLY", "SMS", event_time=ago(days=2)),
            p.delivery("DONE", "QUEUED_ON_CHANNEL", "SMS", event_time=ago(days=3)),
            p.delivery("DONE", "DELIVERED", "SMS", event_time=ago(days=2)),
        ],
    )
    quiet = client.get("/messages/stalled").json()["items"]
    assert [m["message_id"] for m in quiet] == ["SWITCHED", "SUBMITTED_ONLY", "QUIET"]
    assert quiet[1]["status"] == "SUBMITTED"
    longer = client.get("/messages/stalled", params={"older_than": "60h"}).json()["items"]
    assert [m["message_id"] for m in longer] == ["SWITCHED"]
    everything = client.get("/messages/stalled", params={"older_than": "0"}).json()["items"]
    assert {m["message_id"] for m in everything} == {"SWITCHED", "SUBMITTED_ONLY", "QUIET", "FRESH"}
    assert client.get("/messages/stalled", params={"older_than": "999999999d"}).json() == {
        "items": [],
        "next_cursor": None,
    }
    assert client.get("/messages/stalled", params={"older_than": "a week"}).status_code == 400
    page = client.get("/messages/stalled", params={"limit": 2}).json()
    rest = client.get("/messages/stalled", params={"cursor": page["next_cursor"]}).json()
    assert [m["message_id"] for m in page["items"] + rest["items"]] == [
        "SWITCHED",
        "SUBMITTED_ONLY",
        "QUIET",
    ]


def test_submission_is_the_first_step_of_the_timeline(client: TestClient) -> None:
    feed(
        client,
        [
            p.delivery("M1", "DELIVERED", "SMS", event_time="2024-06-15T14:25:10Z"),
            p.submit("M1", "SMS", event_time="2024-06-15T14:25:08Z"),
            p.delivery("M1", "QUEUED_ON_CHANNEL", "SMS", event_time="2024-06-15T14:25:09Z"),
            p.submit("M1", "SMS", event_time="2024-06-15T14:25:08Z"),  # sent twice
        ],
    )
    message = client.get("/messages/M1").json()
    assert [t["status"] for t in message["timeline"]] == [
        "SUBMITTED",
        "QUEUED_ON_CHANNEL",
        "DELIVERED",
    ]
    assert message["submitted_at"] == "2024-06-15T14:25:08.000000Z"
    assert message["status"] == "DELIVERED"
    raw = client.get(f"/callbacks/{message['timeline'][0]['reference']}").json()["raw"]
    assert "message_submit_notification" in raw


def test_a_submission_that_does_not_fit_is_kept_not_refused(client: TestClient) -> None:
    body = p.submit("M1")
    del body["message_submit_notification"]["message_id"]
    raw = p.encode(body)
    response = client.post("/webhooks/sinch", content=raw, headers=p.signed_headers(raw, SECRET))
    assert response.status_code == 200, response.text
    assert client.get("/quarantine").json()["items"] == []
    wait_for_projections(client)
    assert client.get("/messages").json()["items"] == []


def keep_in_catch_all(ledger: Ledger, body: dict) -> None:
    """What a version that did not interpret MESSAGE_SUBMIT recorded for one."""
    receipt = Receipt(orjson.dumps(body).decode(), datetime.now(UTC), True)
    ledger.execute(ledger.unrecognised_command(body, receipt))


def test_replay_rebuilds_the_same_rows(
    ledger: Ledger, settings: Settings, database_url: str
) -> None:
    accept_all(
        ledger,
        [
            failed("RETRY", "CHANNEL_FAILURE"),
            p.submit("RETRY", "SMS", identity=NUMBER),
            failed("GONE", "RECIPIENT_NOT_REACHABLE"),
            p.delivery("OK", "READ", "WHATSAPP"),
        ],
    )
    runtime = Runtime(settings, ledger)
    runtime.projector().catch_up()
    runtime.close()
    live = projection_rows(database_url)
    replay(settings, None)
    assert projection_rows(database_url) == live
    assert {r["message_id"]: r["next_action"] for r in live["message_status"]} == {
        "RETRY": "retry_later",
        "GONE": "do_not_retry",
        "OK": None,  # "none" is stored as NULL, out of the index
    }


def test_overrides_from_configuration(
    ledger: Ledger, settings: Settings, database_url: str
) -> None:
    from dataclasses import replace

    accept_all(ledger, [failed("RETRY", "CHANNEL_FAILURE")])
    overridden = replace(settings, next_actions=(("CHANNEL_FAILURE", "review"),))
    replay(overridden, None)
    rows = projection_rows(database_url)["message_status"]
    assert rows[0]["next_action"] == "review"


def test_stalled_route_is_not_a_message_id(client: TestClient) -> None:
    post(client, p.delivery("M1", "DELIVERED", "SMS"))
    wait_for_projections(client)
    assert client.get("/messages/stalled").json() == {"items": [], "next_cursor": None}


def test_every_reference_resolves_when_a_submission_is_reinterpreted_between_reports(
    ledger: Ledger, settings: Settings, database_url: str
) -> None:
    """The stored timeline leaves out references it can derive from the message's stream: a
    submission recorded later from the catch-all must leave them all resolvable."""
    from projections.read_model import callbacks

    runtime = Runtime(settings, ledger)
    try:
        queued = p.delivery("MIX", "QUEUED_ON_CHANNEL", "SMS", event_time="2024-06-15T14:25:02Z")
        accept_all(ledger, [queued])
        runtime.projector().catch_up()
        keep_in_catch_all(ledger, p.submit("MIX", "SMS", event_time="2024-06-15T14:25:01Z"))
        assert ledger.reinterpret_kept()["accepted"] == 1
        runtime.projector().catch_up()
        delivered = p.delivery("MIX", "DELIVERED", "SMS", event_time="2024-06-15T14:25:03Z")
        accept_all(ledger, [delivered])
        runtime.projector().catch_up()
        [row] = projection_rows(database_url)["message_status"]
        timeline = rules.expanded_reports(row)
        assert [r["status"] for r in timeline] == ["SUBMITTED", "QUEUED_ON_CHANNEL", "DELIVERED"]
        found = {r["status"]: callbacks.callback(ledger, r["source_ref"]) for r in timeline}
    finally:
        runtime.close()
    for status, callback in found.items():
        assert callback is not None, status
        expected = (
            "message_submit_notification" if status == "SUBMITTED" else f'"status":"{status}"'
        )
        assert expected in callback["raw"].replace(" ", ""), (status, callback["raw"])
