"""Query endpoints over the projections, fed live by the in-process follower of the app."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from tests import payloads as p
from tests.conftest import SECRET, shared_client
from tests.integration.test_projections import SCENARIO

# One worker posts the story the module's tests share (`fed`).
pytestmark = pytest.mark.xdist_group("queries")


def post(client: TestClient, body: dict) -> None:
    raw = p.encode(body)
    response = client.post("/webhooks/sinch", content=raw, headers=p.signed_headers(raw, SECRET))
    assert response.status_code == 200, response.text


def wait_for_projections(client: TestClient, timeout_s: float = 20) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        health = client.get("/healthz").json()
        if all(p["lag"] == 0 for p in health["projections"].values()):
            return health
        assert time.monotonic() < deadline, health
        time.sleep(0.05)


def feed(client: TestClient, bodies: list[dict]) -> TestClient:
    """Posts the bodies and waits until the projections have them."""
    for body in bodies:
        post(client, body)
    wait_for_projections(client)
    return client


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """SCENARIO posted once per backend, for this module's tests that only read it."""
    with shared_client(request.param, tmp_path_factory, request) as (client, _):
        yield feed(client, SCENARIO)


@pytest.fixture
def fed_alone(client: TestClient) -> TestClient:
    """SCENARIO posted to a store of this test's own, for a test that adds to it."""
    return feed(client, SCENARIO)


def test_message_with_timeline(fed: TestClient) -> None:
    body = fed.get("/messages/M1").json()
    assert (body["status"], body["channel"], body["read_at"]) == (
        "READ",
        "SMS",
        "2024-06-15T10:00:05.000000Z",
    )
    assert [(t["status"], t["channel"]) for t in body["timeline"]] == [
        ("QUEUED_ON_CHANNEL", "WHATSAPP"),
        ("SWITCHING_CHANNEL", "WHATSAPP"),
        ("QUEUED_ON_CHANNEL", "SMS"),
        ("DELIVERED", "SMS"),
        ("READ", "SMS"),
    ]
    assert body["timeline"][1]["reason_code"] == "RECIPIENT_NOT_REACHABLE"
    assert all(t["reference"] for t in body["timeline"])
    assert "reports" not in body


def test_unknown_message_is_404(fed: TestClient) -> None:
    response = fed.get("/messages/NOPE")
    assert response.status_code == 404
    assert "no delivery report has been received for message 'NOPE'" in response.json()["detail"]


def test_same_message_id_in_two_projects(fed_alone: TestClient) -> None:
    post(fed_alone, {**p.delivery("M1", "DELIVERED"), "project_id": "OTHER"})
    wait_for_projections(fed_alone)
    assert fed_alone.get("/messages/M1").status_code == 409
    assert (
        fed_alone.get("/messages/M1", params={"project_id": "OTHER"}).json()["status"]
        == "DELIVERED"
    )


@pytest.mark.parametrize(
    ("params", "ids"),
    [
        ({}, ["M1", "M2"]),
        ({"status": "FAILED"}, ["M2"]),
        ({"status": "read"}, ["M1"]),
        ({"reason": "RECIPIENT_INVALID_CHANNEL_IDENTITY"}, ["M2"]),
        ({"metadata": "order-123"}, ["M1", "M2"]),
        ({"metadata": "' OR 1=1 --"}, []),
        ({"contact_id": "CONTACT1", "conversation_id": "CONV1"}, ["M1", "M2"]),
        ({"since": "2024-06-15T10:30:00Z"}, ["M2"]),
        ({"until": "2024-06-15T10:30:00+00:00"}, ["M1"]),
        ({"project_id": "PROJECT1", "since": "2024-06-16T00:00:00Z"}, []),
    ],
)
def test_message_list_filters(fed: TestClient, params: dict, ids: list[str]) -> None:
    response = fed.get("/messages", params=params)
    assert response.status_code == 200, response.text
    assert [m["message_id"] for m in response.json()["items"]] == ids


def test_message_list_pages_with_a_cursor(fed_alone: TestClient) -> None:
    for i in range(5):
        post(fed_alone, p.delivery(f"X{i}", "DELIVERED", event_time=f"2024-06-16T00:00:0{i}Z"))
    wait_for_projections(fed_alone)
    seen, cursor = [], None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        body = fed_alone.get("/messages", params=params).json()
        seen += [m["message_id"] for m in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ["M1", "M2", "X0", "X1", "X2", "X3", "X4"]


def test_read_confirmations(fed: TestClient) -> None:
    body = fed.get("/read-confirmations").json()
    assert [(r["message_id"], r["channel"], r["read_at"]) for r in body["items"]] == [
        ("M1", "SMS", "2024-06-15T10:00:05.000000Z")
    ]
    assert (
        fed.get("/read-confirmations", params={"since": "2024-06-15T10:00:06Z"}).json()["items"]
        == []
    )
    assert fed.get("/read-confirmations", params={"contact_id": "CONTACT1"}).json()["items"]


@pytest.mark.parametrize(
    ("path", "params", "words"),
    [
        ("/messages", {"limit": "0"}, "'limit'"),
        ("/messages", {"limit": "99999999999999999999"}, "'limit'"),
        ("/messages", {"since": "yesterday"}, "'since'"),
        ("/messages", {"until": "2024-13-45"}, "'until'"),
        ("/messages", {"cursor": "garbage"}, "'cursor'"),
        ("/messages", {"cursor": "W10"}, "'cursor'"),  # valid base64 JSON, wrong shape
        ("/messages", {"status": "READ'; DROP TABLE x;--"}, "'status'"),
        ("/messages", {"stauts": "READ"}, "unknown query parameter(s): stauts"),
        ("/messages", {"metadata": "x" * 2000}, "'metadata'"),
        ("/read-confirmations", {"since": "nope"}, "'since'"),
        ("/read-confirmations", {"status": "READ"}, "unknown query parameter"),
        ("/messages/M1", {"foo": "1"}, "unknown query parameter"),
    ],
)
def test_bad_query_parameters_are_400_naming_them(
    fed: TestClient, path: str, params: dict, words: str
) -> None:
    response = fed.get(path, params=params)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
    assert words in response.json()["detail"]


def test_repeated_parameter_is_400(fed: TestClient) -> None:
    response = fed.get("/messages?status=READ&status=FAILED")
    assert response.status_code == 400
    assert "more than once" in response.json()["detail"]
