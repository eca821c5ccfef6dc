"""Consent notifications that carry neither event_time nor request_id (the first example of
Sinch's OPT_IN/OPT_OUT reference has that shape): each is a fact of its own, never merged with
another, on both backends."""

from __future__ import annotations

from starlette.testclient import TestClient

from tests import payloads as p
from tests.conftest import SECRET
from tests.integration.test_queries import wait_for_projections


def bare(kind: str, accepted_time: str | None, **envelope: str) -> dict:
    body = p.opt(kind, request_id=None, identity="46732001122")
    del body["event_time"]
    del body["accepted_time"]
    if accepted_time is not None:
        body["accepted_time"] = accepted_time
    return {**body, **envelope}


def send(client: TestClient, body: dict) -> dict:
    raw = p.encode(body)
    response = client.post("/webhooks/sinch", content=raw, headers=p.signed_headers(raw, SECRET))
    assert response.status_code == 200, response.text
    return response.json()


def test_opt_out_in_out_differing_only_in_accepted_time(client: TestClient) -> None:
    for kind, day in [("OPT_OUT", "01"), ("OPT_IN", "02"), ("OPT_OUT", "03")]:
        assert send(client, bare(kind, f"2024-07-{day}T09:00:00Z"))["status"] == "accepted"
    wait_for_projections(client)
    history = client.get("/contacts/CONTACT1/consent/history").json()["items"]
    assert [(h["fact"], h["event_time"]) for h in history] == [
        ("OPT_OUT_SUCCEEDED", "2024-07-01T09:00:00.000000Z"),
        ("OPT_IN_SUCCEEDED", "2024-07-02T09:00:00.000000Z"),
        ("OPT_OUT_SUCCEEDED", "2024-07-03T09:00:00.000000Z"),
    ]
    check = client.get("/consent/check", params={"channel": "SMS", "identity": "46732001122"})
    assert check.json()["may_send"] is False
    # The same notification again is still one fact.
    assert send(client, bare("OPT_OUT", "2024-07-03T09:00:00Z"))["status"] == "duplicate"


def test_without_any_time_the_body_names_the_fact(client: TestClient) -> None:
    first = bare("OPT_OUT", None)
    second = bare("OPT_OUT", None, app_id="ANOTHER-APP")  # another notification, another body
    stored = send(client, first)
    assert stored["status"] == "accepted"
    assert send(client, second)["status"] == "accepted"
    assert send(client, first) == {
        "status": "duplicate",
        "trigger": "OPT_OUT",
        "events": 0,
        "reference": stored["reference"],
    }
