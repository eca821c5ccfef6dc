"""Every real Sinch callback body we have (Sinch's SDK fixtures, docs and webhook test script,
in ../shared/fixtures/sinch-callbacks with their provenance), posted signed on both backends:
each is kept, a second posting stores nothing new, and the projections take all of them."""

from __future__ import annotations

import orjson
from starlette.testclient import TestClient

from tests import payloads as p
from tests.conftest import SECRET
from tests.integration.test_queries import wait_for_projections
from tests.unit.test_real_callbacks import FIXTURES, real_bodies

# A delivery report that names no message: no aggregate to put it on (see the fixtures' README).
NAMES_NO_MESSAGE = "MESSAGE_DELIVERY__sdk-python__3.json"


def post(client: TestClient, raw: bytes):
    return client.post("/webhooks/sinch", content=raw, headers=p.signed_headers(raw, SECRET))


def test_every_real_callback_is_kept_once(client: TestClient) -> None:
    bodies = real_bodies()
    assert bodies
    refused = {}
    for path in bodies:
        response = post(client, path.read_bytes())
        if response.status_code != 200:
            refused[path.name] = (response.status_code, response.json())
    # Only the report that names no message is refused, and it is kept in the quarantine.
    assert list(refused) == [NAMES_NO_MESSAGE]
    status, body = refused[NAMES_NO_MESSAGE]
    assert status == 422
    assert body["problems"] == ["message_delivery_report.message_id: Field required"]
    quarantined = client.get("/quarantine").json()["items"]
    assert [item["trigger"] for item in quarantined] == ["MESSAGE_DELIVERY"]

    health = wait_for_projections(client)
    assert health["status"] == "ok"
    assert "follower_error" not in health

    again = {}
    for path in bodies:
        response = post(client, path.read_bytes())
        if path.name != NAMES_NO_MESSAGE:
            again[path.name] = response.json()
    assert {(a["status"], a["events"]) for a in again.values()} == {("duplicate", 0)}


def test_consent_without_a_number_stands_for_the_contacts_channel(client: TestClient) -> None:
    """The Java SDK's OPT_OUT shape names the contact and the channel, no identity: it answers for
    every number that contact was seen with on that channel."""
    seen = p.inbound(
        "IN-V1",
        "hello",
        contact_id="contact id",
        channel="WHATSAPP",
        identity="+46 700 000 009",
        event_time="2020-11-17T10:00:00Z",
    )
    seen["project_id"] = "project id value"
    assert post(client, p.encode(seen)).status_code == 200
    # The SDK's body reports a failed opt-out; the same shape, succeeded:
    body = orjson.loads((FIXTURES / "OPT_OUT__sdk-java__1.json").read_bytes())
    body["opt_out_notification"]["status"] = "OPT_OUT_SUCCEEDED"
    assert "identity" not in body["opt_out_notification"]
    assert post(client, p.encode(body)).status_code == 200
    wait_for_projections(client)
    check = client.get(
        "/consent/check", params={"channel": "WHATSAPP", "identity": "46700000009"}
    ).json()
    assert check["may_send"] is False, check
    assert "whole channel" in check["reason"]
    rows = client.get("/contacts/contact%20id/consent").json()["consent"]
    assert [(r["channel"], r["identity"], r["state"]) for r in rows] == [
        ("WHATSAPP", "", "OPTED_OUT")
    ]
    # A number the contact was never seen with is not covered by it.
    other = client.get("/consent/check", params={"channel": "WHATSAPP", "identity": "4611"})
    assert other.json()["may_send"] is True


def test_a_contact_wide_opt_out_covers_a_number_seen_only_in_delivery_reports(
    client: TestClient,
) -> None:
    sent = p.delivery("M-C9", "DELIVERED", "SMS", "+46700000077", contact_id="C9")
    assert post(client, p.encode(sent)).status_code == 200
    wide = p.envelope(
        opt_out_notification={"contact_id": "C9", "channel": "SMS", "status": "OPT_OUT_SUCCEEDED"}
    )
    assert post(client, p.encode(wide)).status_code == 200
    wait_for_projections(client)
    answer = client.get("/consent/check", params={"channel": "SMS", "identity": "46700000077"})
    assert answer.json()["may_send"] is False, answer.json()
    at = client.get("/consent", params={"channel": "SMS", "identity": "46700000077"}).json()
    assert at["state"] == "OPTED_OUT"
