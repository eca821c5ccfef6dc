"""Odd but legal values in callbacks (NUL, lone surrogates, the edges of the calendar, huge
signature timestamps), and what happens when a projection meets an event it cannot apply:
never a silent stop, never a consent answer from a stale projection. Both backends."""

from __future__ import annotations

import base64
import random

import pytest
from starlette.testclient import TestClient

from tests import payloads as p
from tests.conftest import SECRET
from tests.helpers import stored_events
from tests.integration.test_queries import wait_for_projections

URL = "/webhooks/sinch"


def send(client: TestClient, body: dict | bytes, **headers: str):
    raw = p.encode(body)
    return client.post(URL, content=raw, headers={**p.signed_headers(raw, SECRET), **headers})


def check(client: TestClient, identity: str, channel: str = "SMS"):
    return client.get("/consent/check", params={"channel": channel, "identity": identity})


def test_nul_anywhere_is_stored_and_projected(client: TestClient) -> None:
    report = p.delivery(
        "M-NUL\x00",
        "FAILED",
        metadata="order\x00123",
        reason={"code": "X\x00", "description": "bad\x00thing"},
    )
    assert send(client, report).status_code == 200
    opt = p.opt(
        "OPT_IN", request_id="R\x00", identity="4670000\x0011", event_time="2024-06-15T10:00:00Z"
    )
    assert send(client, opt).status_code == 200
    assert send(client, p.inbound("IN\x00", "hi\x00", identity="46700000011")).status_code == 200
    # A later opt-out must still count.
    later = p.opt(
        "OPT_OUT", request_id="R2", identity="46700000011", event_time="2024-06-16T10:00:00Z"
    )
    assert send(client, later).status_code == 200
    health = wait_for_projections(client)
    assert health["status"] == "ok", health
    assert check(client, "46700000011").json()["may_send"] is False
    message = client.get("/messages/M-NUL\ufffd").json()
    assert message["metadata"] == "order\ufffd123"
    assert message["reason_description"] == "bad\ufffdthing"


def test_lone_surrogate_is_accepted_and_the_raw_body_kept(
    client: TestClient, database_url: str
) -> None:
    raw = p.encode(p.delivery("M-SUR")).replace(b'"order-123"', b'"order\\ud800-123"')
    response = send(client, raw)
    assert response.status_code == 200, response.text
    assert stored_events(database_url)[-1].callback["raw"].encode() == raw
    wait_for_projections(client)
    assert client.get("/messages/M-SUR").json()["metadata"] == "order\ufffd-123"


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
@pytest.mark.parametrize("field", ["event_time", "accepted_time"])
def test_a_time_outside_the_calendar_is_a_422_naming_the_field(
    client: TestClient, when: str, field: str
) -> None:
    body = {**p.opt(), field: when}
    response = send(client, body)
    assert response.status_code == 422, response.text
    assert response.json()["problems"][0].startswith(f"{field}:")
    kept = client.get("/quarantine").json()["items"]
    assert base64.b64decode(kept[0]["raw_base64"]) == p.encode(body)


def test_the_calendars_own_edges_are_accepted(client: TestClient) -> None:
    assert send(client, p.opt(request_id="A", event_time="0001-01-01T00:00:00Z")).status_code == 200
    assert send(client, p.opt(request_id="B", event_time="9999-12-31T23:59:59Z")).status_code == 200
    assert wait_for_projections(client)["status"] == "ok"
    assert check(client, "46732001122").json()["since"] == "9999-12-31T23:59:59.000000Z"
    history = client.get("/contacts/CONTACT1/consent/history").json()["items"]
    # Year 1 written with all four digits, so text order is time order.
    assert [h["event_time"] for h in history] == [
        "0001-01-01T00:00:00.000000Z",
        "9999-12-31T23:59:59.000000Z",
    ]


def test_a_huge_signature_timestamp_is_a_401(client: TestClient) -> None:
    raw = p.encode(p.delivery())
    headers = p.signed_headers(raw, SECRET, timestamp=int("9" * 400))
    response = client.post(URL, content=raw, headers=headers)
    assert response.status_code == 401
    assert response.json()["detail"] == "signature timestamp is not unix seconds"


@pytest.mark.parametrize("number", [b"1" * 400, b"1e400", b"-1e400", b"18446744073709551616"])
def test_a_number_no_reader_can_hold_is_refused_and_kept(client: TestClient, number: bytes) -> None:
    # With a lone surrogate, so the lenient parser is the one that reads it.
    raw = p.encode(p.delivery("M-BIG")).replace(b'"order-123"', b'"order\\ud800", "n": ' + number)
    response = send(client, raw)
    assert response.status_code == 400, response.text
    assert client.get("/quarantine").json()["items"][0]["raw_base64"]
    assert wait_for_projections(client)["status"] == "ok"


def test_a_blank_identity_is_no_identity(client: TestClient) -> None:
    assert check(client, " ").status_code == 400
    wide = p.envelope(
        opt_out_notification={
            "contact_id": "C-BLANK",
            "identity": "   ",
            "channel": "SMS",
            "status": "OPT_OUT_SUCCEEDED",
        }
    )
    assert send(client, wide).status_code == 200
    other = p.opt("OPT_OUT", contact_id="C-OTHER", request_id="R-O", identity="4612")
    assert send(client, other).status_code == 200
    wait_for_projections(client)
    rows = client.get("/contacts/C-BLANK/consent").json()["consent"]
    assert [(r["identity"], r["state"]) for r in rows] == [("", "OPTED_OUT")]
    # A number C-BLANK was never seen with is not covered.
    assert check(client, "4699").json()["may_send"] is True


def test_long_free_text_is_projected_and_found(client: TestClient) -> None:
    # Random text does not compress: its index entry would be over PostgreSQL's size limit.
    metadata = "".join(chr(random.randrange(0x4E00, 0x9FFF)) for _ in range(3000))
    assert send(client, p.delivery("M-LONG", metadata=metadata)).status_code == 200
    assert wait_for_projections(client)["status"] == "ok"
    found = client.get("/messages", params={"metadata": metadata[:1000]}).json()["items"]
    assert found == []
    assert client.get("/messages/M-LONG").json()["metadata"] == metadata


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (p.delivery(contact_id="c" * 129), "message_delivery_report.contact_id"),
        (p.opt(request_id="r" * 129), "opt_out_notification.request_id"),
        (p.delivery("m" * 129), "message_delivery_report.message_id"),
    ],
)
def test_ids_beyond_any_real_one_are_a_422(client: TestClient, body: dict, field: str) -> None:
    response = send(client, body)
    assert response.status_code == 422
    assert response.json()["problems"][0].startswith(field)
