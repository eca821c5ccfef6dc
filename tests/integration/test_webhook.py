"""POST /webhooks/sinch: every answer, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from urllib.parse import quote

import orjson
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from domain.message import Message
from service.settings import Settings
from tests import payloads as p
from tests.conftest import SECRET
from tests.helpers import KEYS, names, stored_events

URL = "/webhooks/sinch"


def post(client: TestClient, body: dict | bytes, secret: str = SECRET, **kw: object):
    raw = p.encode(body)
    return client.post(URL, content=raw, headers=p.signed_headers(raw, secret, **kw))


@pytest.mark.parametrize(
    ("seed", "trigger", "event", "count"),
    [
        # A new message: one event; a new contact: its Registered and the fact.
        ("seed_delivery_report.json", "MESSAGE_DELIVERY", "Message.FirstReported", 1),
        ("seed_opt_in.json", "OPT_IN", "Contact.ConsentReported", 2),
        ("seed_opt_out.json", "OPT_OUT", "Contact.ConsentReported", 2),
    ],
)
def test_seed_payloads_are_accepted_and_stored(
    client: TestClient, database_url: str, seed: str, trigger: str, event: str, count: int
) -> None:
    raw = p.seed(seed)
    response = post(client, raw)
    assert response.status_code == 200, response.text
    answer = response.json()
    reference = answer.pop("reference")
    assert answer == {"status": "accepted", "trigger": trigger, "events": count}
    # The answer names the stored callback: the audit's read of it gives its body back.
    read = client.get(f"/callbacks/{quote(reference, safe='/')}")
    assert read.status_code == 200, read.text
    assert read.json()["raw"].encode() == raw
    events = stored_events(database_url)
    assert names(events)[-1] == event
    # The raw bytes are kept exactly as received, with how they were received.
    assert events[-1].callback["raw"].encode() == raw
    assert events[-1].callback["signature_verified"] is True
    assert "x-sinch-webhook-signature-nonce" in events[-1].callback["headers"]


def test_delivery_report_fields_are_recorded(client: TestClient, database_url: str) -> None:
    body = p.delivery(
        status="FAILED",
        reason={
            "code": "RECIPIENT_NOT_REACHABLE",
            "sub_code": "UNSPECIFIED_SUB_CODE",
            "description": "gone",
            "channel_code": "X1",
        },
    )
    assert post(client, body).status_code == 200
    event = stored_events(database_url)[-1]
    assert isinstance(event, Message.FirstReported)
    assert (event.status, event.channel, event.identity) == ("FAILED", "WHATSAPP", "46732001122")
    assert event.reason == {
        "code": "RECIPIENT_NOT_REACHABLE",
        "sub_code": "UNSPECIFIED_SUB_CODE",
        "description": "gone",
        "channel_code": "X1",
    }
    assert event.event_time.isoformat() == "2024-06-15T14:25:09.123000+00:00"
    assert event.accepted_time.isoformat() == "2024-06-15T14:25:10.456000+00:00"
    assert (event.conversation_id, event.contact_id, event.metadata, event.app_id) == (
        "CONV1",
        "CONTACT1",
        "order-123",
        "APP1",
    )
    assert event.processing_mode == "CONVERSATION"
    assert event.originator_id == Message.create_id("PROJECT1", "MSG1")


def test_inbound_message_is_recorded_on_the_contact(client: TestClient, database_url: str) -> None:
    assert post(client, p.inbound(text="  Stop ")).json()["status"] == "accepted"
    event = stored_events(database_url)[-1]
    assert names([event]) == ["Contact.InboundMessageReceived"]
    assert (event.message_id, event.channel, event.identity, event.text, event.kind) == (
        "IN1",
        "SMS",
        "+46732001122",
        "  Stop ",
        "text_message",
    )


@pytest.mark.parametrize(
    ("first", "again"),
    [
        (p.delivery(), p.delivery(event_time="2024-06-15T14:26:00Z")),  # same msg+channel+status
        (p.opt(request_id="R9"), p.opt(request_id="R9", event_time="2024-06-15T16:00:00Z")),
        (p.opt(request_id=None), p.opt(request_id=None)),
        (p.inbound(), p.inbound(text="STOP again?")),  # same inbound message id
    ],
    ids=["delivery", "opt-request-id", "opt-natural-key", "inbound"],
)
def test_repeated_callback_appends_nothing(
    client: TestClient, database_url: str, first: dict, again: dict
) -> None:
    assert post(client, first).json()["status"] == "accepted"
    before = len(stored_events(database_url))
    response = post(client, again)
    assert response.status_code == 200
    assert response.json()["status"] == "duplicate"
    assert response.json()["events"] == 0
    assert len(stored_events(database_url)) == before


def test_distinct_reports_for_one_message_are_all_kept(
    client: TestClient, database_url: str
) -> None:
    for status, channel in [
        ("QUEUED_ON_CHANNEL", "WHATSAPP"),
        ("SWITCHING_CHANNEL", "WHATSAPP"),
        ("QUEUED_ON_CHANNEL", "SMS"),
        ("DELIVERED", "SMS"),
        ("FAILED", None),
    ]:
        assert post(client, p.delivery(status=status, channel=channel)).json()["status"] == (
            "accepted"
        )
    events = stored_events(database_url)
    assert names(events) == ["Message.FirstReported"] + ["Message.DeliveryReported"] * 4


def test_opt_without_contact_id_is_kept_by_channel_identity(
    client: TestClient, database_url: str
) -> None:
    assert post(client, p.opt(contact_id=None, identity="+46 73 200")).status_code == 200
    assert (
        post(client, p.opt(contact_id=None, identity="4673200", request_id="R2")).json()["status"]
        == "accepted"
    )
    events = stored_events(database_url)
    # Both land on one Contact stream: identities are normalised.
    consent = [e for e in events if names([e]) == ["Contact.ConsentReported"]]
    assert len({e.originator_id for e in consent}) == 1


@pytest.mark.parametrize(
    ("body", "trigger"),
    [
        (p.seed("sdk_signature_vector_body.json"), "CONTACT_CREATE"),
        (p.envelope(event={"contact_event": {"composing_event": {}}}), "EVENT_INBOUND"),
        (p.envelope(contact_merge_notification={"preserved_contact": {}}), "CONTACT_MERGE"),
        ({"project_id": "P", "something_new": {"x": 1}}, "UNKNOWN"),
        ({}, "UNKNOWN"),
    ],
)
def test_other_triggers_are_kept_in_the_catch_all(
    client: TestClient, database_url: str, body: dict | bytes, trigger: str
) -> None:
    raw = p.encode(body)
    response = post(client, raw)
    assert response.status_code == 200
    answer = response.json()
    reference = answer.pop("reference")
    assert answer == {"status": "accepted", "trigger": trigger, "events": 1}
    event = stored_events(database_url)[-1]
    assert reference == f"{event.originator_id}/received"
    assert names([event]) == ["UnrecognisedCallback.Received"]
    assert event.trigger == trigger
    assert event.callback["raw"].encode() == raw
    again = post(client, raw).json()
    assert (again["status"], again["reference"]) == ("duplicate", reference)


@pytest.mark.parametrize(
    ("raw", "error", "words"),
    [
        (b"not json at all", "not_json", "not JSON"),
        (b"", "not_json", "not JSON"),
        (b"\xff\xfe{}", "not_json", "not JSON"),
        (b"[1, 2]", "not_an_object", "JSON array"),
        (b'"text"', "not_an_object", "JSON str"),
        (b"[" * 5000 + b"]" * 5000, "not_json", "not JSON"),
    ],
    ids=["text", "empty", "bad-utf8", "array", "string", "deep"],
)
def test_unreadable_body_is_400_and_quarantined(
    client: TestClient, raw: bytes, error: str, words: str
) -> None:
    response = post(client, raw)
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert words in response.json()["detail"]
    assert "quarantine" in response.json()["detail"]
    items = client.get("/quarantine").json()["items"]
    assert [base64.b64decode(i["raw_base64"]) for i in items] == [raw]
    assert items[0]["status_code"] == 400


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (p.delivery(status=5), "message_delivery_report.status"),
        (
            {**p.delivery(), "message_delivery_report": {"status": "READ"}},
            "message_delivery_report.message_id",
        ),
        (p.envelope(message_delivery_report="DELIVERED"), "message_delivery_report"),
        (
            p.envelope(opt_out_notification={"channel": "SMS", "status": "OPT_OUT_SUCCEEDED"}),
            "opt_out_notification: Value error, names no one",
        ),
        (p.delivery(event_time="yesterday"), "event_time"),
        (p.opt(status="OPT_OUT_MAYBE"), "opt_out_notification.status"),
        (p.opt(kind="OPT_IN", status="OPT_OUT_SUCCEEDED"), "opt_in_notification.status"),
        (
            {**p.inbound(), "message": {"id": "X", "contact_message": {}}},
            "message.channel_identity",
        ),
        ({**p.delivery(), "opt_out_notification": {}}, "more than one trigger"),
    ],
    ids=[
        "status-type",
        "no-message-id",
        "report-not-object",
        "opt-names-no-one",
        "bad-time",
        "opt-status",
        "opt-kind-mismatch",
        "inbound-no-identity",
        "two-triggers",
    ],
)
def test_invalid_known_trigger_is_422_naming_the_field_and_quarantined(
    client: TestClient, database_url: str, body: dict, field: str
) -> None:
    response = post(client, body)
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"]
    assert any(field in problem for problem in response.json()["problems"])
    items = client.get("/quarantine").json()["items"]
    assert len(items) == 1
    assert orjson.loads(base64.b64decode(items[0]["raw_base64"])) == body
    assert items[0]["status_code"] == 422
    assert names(stored_events(database_url)) == ["QuarantinedCallback.Quarantined"]


def test_quarantine_is_paginated(client: TestClient) -> None:
    for i in range(5):
        assert post(client, f"not json {i}".encode()).status_code == 400
    first = client.get("/quarantine", params={"limit": 3}).json()
    assert len(first["items"]) == 3
    rest = client.get("/quarantine", params={"after": first["next_after"]}).json()
    assert len(rest["items"]) == 2 and rest["next_after"] is None
    for bad in ({"limit": "0"}, {"limit": "abc"}, {"after": "-1"}, {"limit": "10000000"}):
        response = client.get("/quarantine", params=bad)
        assert response.status_code == 400
        assert "must be a whole number" in response.json()["detail"]


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda h: h.pop("x-sinch-webhook-signature"), "missing signature header"),
        (lambda h: h.pop("x-sinch-webhook-signature-nonce"), "missing signature header"),
        (lambda h: h.pop("x-sinch-webhook-signature-timestamp"), "missing signature header"),
        (lambda h: h.update({"x-sinch-webhook-signature": "AAAA"}), "does not match"),
        (
            lambda h: h.update({"x-sinch-webhook-signature": h["x-sinch-webhook-signature"][:-2]}),
            "does not match",
        ),
        (
            lambda h: h.update(
                {"x-sinch-webhook-signature": h["x-sinch-webhook-signature"] + "=="}
            ),
            "does not match",
        ),
        (lambda h: h.update({"x-sinch-webhook-signature-nonce": "other"}), "does not match"),
        (
            lambda h: h.update({"x-sinch-webhook-signature-algorithm": "HmacSHA1"}),
            "unsupported signature algorithm",
        ),
        (lambda h: h.update({"x-sinch-webhook-signature-timestamp": "soon"}), "unix seconds"),
    ],
    ids=["no-sig", "no-nonce", "no-ts", "wrong", "truncated", "padded", "nonce", "algo", "ts"],
)
def test_bad_signature_is_401_and_nothing_is_stored(
    client: TestClient, database_url: str, mutate, words: str
) -> None:
    raw = p.encode(p.delivery())
    headers = p.signed_headers(raw, SECRET)
    mutate(headers)
    response = client.post(URL, content=raw, headers=headers)
    assert response.status_code == 401
    assert words in response.json()["detail"]
    assert stored_events(database_url) == []


# Past the 300 s tolerance by more than a slow machine takes to send the request.
@pytest.mark.parametrize("offset", [-330, 330, -(10**9)])
def test_stale_or_future_timestamp_is_401(client: TestClient, offset: int) -> None:
    import time

    response = post(client, p.delivery(), timestamp=int(time.time()) + offset)
    assert response.status_code == 401
    assert "from our clock" in response.json()["detail"]


def test_wrong_secret_is_401(client: TestClient) -> None:
    assert post(client, p.delivery(), secret="not-the-secret").status_code == 401


def test_rotated_secrets_are_both_accepted(database_url: str) -> None:
    settings = Settings(
        keys=KEYS, database_url=database_url, webhook_secrets=("old-secret", "new-secret")
    )
    with TestClient(create_app(settings)) as client:
        assert post(client, p.delivery(status="QUEUED_ON_CHANNEL"), "old-secret").status_code == 200
        assert post(client, p.delivery(status="DELIVERED"), "new-secret").status_code == 200
        assert post(client, p.delivery(status="READ"), "third-secret").status_code == 401


def test_unsigned_mode_accepts_and_records_that_nothing_was_verified(database_url: str) -> None:
    with TestClient(create_app(Settings(keys=KEYS, database_url=database_url))) as client:
        response = client.post(URL, content=p.encode(p.delivery()))
        assert response.status_code == 200
    assert stored_events(database_url)[-1].callback["signature_verified"] is False


def test_body_over_the_limit_is_413(database_url: str) -> None:
    settings = Settings(keys=KEYS, database_url=database_url, max_body_bytes=2000)
    with TestClient(create_app(settings)) as client:
        small = p.encode(p.delivery())
        assert client.post(URL, content=small).status_code == 200
        big = p.encode(p.delivery(metadata="x" * 3000))
        response = client.post(URL, content=big)
        assert response.status_code == 413
        assert "over 2000 bytes" in response.json()["detail"]
        # Without a Content-Length (chunked), the limit holds while streaming.
        response = client.post(URL, content=iter([big[:1500], big[1500:]]))
        assert response.status_code == 413
    assert names(stored_events(database_url)) == ["Message.FirstReported"]


def test_other_methods_and_paths_get_clear_json_errors(client: TestClient) -> None:
    response = client.get(URL)
    assert response.status_code == 405
    assert response.json()["detail"] == "Method Not Allowed"
    assert "POST" in response.headers["allow"]
    assert client.get("/nope").status_code == 404
    assert client.get("/nope").json()["detail"] == "Not Found"


def test_healthz_reports_the_backend(client: TestClient, backend: str) -> None:
    post(client, p.delivery())
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["backend"] == ("sqlite" if backend == "sqlite" else "postgresql")
    assert body["events"] == 1


def test_a_trailing_slash_is_served_not_redirected(client: TestClient, database_url: str) -> None:
    raw = p.encode(p.delivery("M-SLASH"))
    response = client.post(
        URL + "/",
        content=raw,
        headers={**p.signed_headers(raw, SECRET), "host": "evil.example"},
        follow_redirects=False,
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "accepted"
    assert "location" not in response.headers
    # Nothing else redirects either.
    other = client.get("/messages/", follow_redirects=False)
    assert other.status_code == 404
    assert "location" not in other.headers
