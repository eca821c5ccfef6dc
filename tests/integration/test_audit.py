"""Consent audit on both backends, with callbacks arriving out of order: the answers follow
event_time, not arrival."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import orjson
import pytest
from starlette.testclient import TestClient

from tests import payloads as p
from tests.conftest import shared_client
from tests.integration.test_queries import feed, post, wait_for_projections

# One worker posts the story the module's tests share (`fed`).
pytestmark = pytest.mark.xdist_group("audit")

NUMBER = "+46700000001"
DAY = "2024-06-15T"

A_BEFORE = [
    p.delivery("A", "QUEUED_ON_CHANNEL", "SMS", NUMBER, f"{DAY}10:00:00Z"),
    p.delivery("A", "DELIVERED", "SMS", NUMBER, f"{DAY}10:01:00Z"),
]
STOP = p.inbound("IN-STOP", " Stop ", identity="46700000001", event_time=f"{DAY}11:00:00Z")
B_AFTER = [
    p.delivery("B", "QUEUED_ON_CHANNEL", "SMS", "46700000001", f"{DAY}12:00:00Z"),
    p.delivery("B", "DELIVERED", "SMS", "46700000001", f"{DAY}12:00:05Z"),
]
C_OTHER_CHANNEL = [p.delivery("C", "DELIVERED", "WHATSAPP", NUMBER, f"{DAY}12:30:00Z")]
OPT_IN = p.opt("OPT_IN", request_id="R-IN", identity=NUMBER, event_time=f"{DAY}13:00:00Z")
D_REOPTED = [p.delivery("D", "QUEUED_ON_CHANNEL", "SMS", NUMBER, f"{DAY}14:00:00Z")]
FAILED_OPT_OUT = p.opt(
    "OPT_OUT",
    status="OPT_OUT_FAILED",
    request_id="R-F",
    identity=NUMBER,
    event_time=f"{DAY}13:30:00Z",
)

# Arrival order is not event order: the opt-in arrives first, the STOP after the message it
# should have blocked, the earliest message last.
ARRIVAL = [OPT_IN, *D_REOPTED, *B_AFTER, STOP, *C_OTHER_CHANNEL, FAILED_OPT_OUT, *A_BEFORE]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """ARRIVAL posted once per backend, for this module's tests that only read it."""
    with shared_client(request.param, tmp_path_factory, request) as (client, _):
        yield feed(client, ARRIVAL)


@pytest.fixture
def fed_alone(client: TestClient) -> TestClient:
    """ARRIVAL posted to a store of this test's own, for a test that adds to it."""
    return feed(client, ARRIVAL)


@pytest.mark.parametrize(
    ("at", "state", "fact"),
    [
        (f"{DAY}10:30:00Z", "UNKNOWN", None),
        (f"{DAY}11:00:00Z", "OPTED_OUT", "KEYWORD_OPT_OUT"),
        (f"{DAY}12:59:59Z", "OPTED_OUT", "KEYWORD_OPT_OUT"),
        (f"{DAY}13:00:00Z", "OPTED_IN", "OPT_IN_SUCCEEDED"),
        (f"{DAY}13:45:00Z", "OPTED_IN", "OPT_IN_SUCCEEDED"),  # a failed opt-out changes nothing
    ],
)
def test_state_at_an_instant(fed: TestClient, at: str, state: str, fact: str | None) -> None:
    body = fed.get("/consent", params={"channel": "sms", "identity": NUMBER, "at": at}).json()
    assert body["state"] == state
    assert (body["decided_by"] or {}).get("fact") == fact


def test_state_now_and_unknown_identity(fed: TestClient) -> None:
    assert (
        fed.get("/consent", params={"channel": "SMS", "identity": NUMBER}).json()["state"]
        == "OPTED_IN"
    )
    unknown = fed.get("/consent", params={"channel": "SMS", "identity": "+1555"})
    assert unknown.status_code == 200 and unknown.json()["state"] == "UNKNOWN"


def test_equal_event_time_opt_out_wins(client: TestClient) -> None:
    post(client, p.opt("OPT_IN", request_id="X1", identity="111", event_time=f"{DAY}09:00:00Z"))
    post(client, p.opt("OPT_OUT", request_id="X2", identity="111", event_time=f"{DAY}09:00:00Z"))
    wait_for_projections(client)
    body = client.get("/consent", params={"channel": "SMS", "identity": "111"}).json()
    assert body["state"] == "OPTED_OUT"
    check = client.get("/consent/check", params={"channel": "SMS", "identity": "+111"}).json()
    assert check["may_send"] is False and check["state"] == "OPTED_OUT"


def test_pre_send_check(fed_alone: TestClient) -> None:
    answer = fed_alone.get("/consent/check", params={"channel": "SMS", "identity": NUMBER}).json()
    assert (answer["may_send"], answer["state"]) == (True, "OPTED_IN")
    post(fed_alone, p.inbound("IN-STOP2", "STOPALL", identity=NUMBER, event_time=f"{DAY}15:00:00Z"))
    wait_for_projections(fed_alone)
    answer = fed_alone.get("/consent/check", params={"channel": "SMS", "identity": NUMBER}).json()
    assert (answer["may_send"], answer["state"]) == (False, "OPTED_OUT")
    assert "KEYWORD" in answer["reason"]
    none = fed_alone.get("/consent/check", params={"channel": "SMS", "identity": "+1555"}).json()
    assert (none["may_send"], none["state"]) == (True, "UNKNOWN")
    missing = fed_alone.get("/consent/check", params={"channel": "SMS"})
    assert missing.status_code == 400 and "'identity'" in missing.json()["detail"]


def test_contact_consent_and_history_with_raw_callbacks(fed: TestClient) -> None:
    current = fed.get("/contacts/CONTACT1/consent").json()["consent"]
    assert [(c["channel"], c["identity"], c["state"]) for c in current] == [
        ("SMS", "46700000001", "OPTED_IN")
    ]

    history = fed.get("/contacts/CONTACT1/consent/history").json()["items"]
    assert [(h["fact"], h["event_time"][11:19], h["source_trigger"]) for h in history] == [
        ("KEYWORD_OPT_OUT", "11:00:00", "MESSAGE_INBOUND"),
        ("OPT_IN_SUCCEEDED", "13:00:00", "OPT_IN"),
        ("OPT_OUT_FAILED", "13:30:00", "OPT_OUT"),
    ]
    assert history[0]["inbound_message_id"] == "IN-STOP"
    assert history[1]["request_id"] == "R-IN"
    raw = fed.get(history[0]["callback_url"]).json()
    assert orjson.loads(raw["raw"]) == STOP
    assert raw["signature_verified"] is True
    assert raw["event"] == "Contact.InboundMessageReceived"

    page = fed.get("/contacts/CONTACT1/consent/history", params={"limit": 2}).json()
    rest = fed.get(
        "/contacts/CONTACT1/consent/history", params={"cursor": page["next_cursor"]}
    ).json()
    assert [h["source_ref"] for h in page["items"] + rest["items"]] == [
        h["source_ref"] for h in history
    ]


def test_message_timeline_references_retrieve_the_raw_report(fed: TestClient) -> None:
    timeline = fed.get("/messages/B").json()["timeline"]
    raw = fed.get("/callbacks/" + quote(timeline[0]["reference"], safe="/")).json()
    assert orjson.loads(raw["raw"]) == B_AFTER[0]
    assert fed.get("/callbacks/not-a-reference").status_code == 404
    assert (
        fed.get("/callbacks/" + timeline[0]["reference"].split("/")[0] + "/nope").status_code == 404
    )


def test_violations_agree_with_state_at_whatever_the_page_size(
    fed_alone: TestClient, settings
) -> None:
    from projections.read_model import consent
    from service.runtime import Runtime

    for i in range(7):  # more messages to the opted-out number, around the opt-out and opt-in
        post(
            fed_alone, p.delivery(f"X{i}", "QUEUED_ON_CHANNEL", "SMS", NUMBER, f"{DAY}1{i}:30:00Z")
        )
    wait_for_projections(fed_alone)
    runtime = Runtime(settings)
    try:
        with runtime.database().read() as cur:
            whole = list(consent.violations(cur))
            paged = list(consent.violations(cur, page_size=1))
            assert paged == whole
            assert {v["message_id"] for v in whole} == {"B", "X1", "X2"}
            name = consent.name_of(runtime.ledger().vault, "SMS", NUMBER)  # a blind index
            for violation in whole:
                at = consent.state_at(cur, "SMS", name, violation["sent_at"], "PROJECT1")
                assert at["state"] == "OPTED_OUT"
                assert at["decided_by"]["source_ref"] == violation["proof"]["source_ref"]
    finally:
        runtime.close()


# ---- keywords as regulators read them, HELP, and the review list -----------------------------

FREE_TEXT = [
    p.inbound("IN-FREE1", "please stop texting me", identity=NUMBER, event_time=f"{DAY}12:10:00Z"),
    p.inbound("IN-FREE2", "Leave me alone!", identity="+46700000002", event_time=f"{DAY}12:20:00Z"),
    p.inbound("IN-CHAT", "what time do you close?", identity=NUMBER, event_time=f"{DAY}12:30:00Z"),
    p.inbound("IN-NOT", "don't stop", identity=NUMBER, event_time=f"{DAY}12:40:00Z"),
    p.inbound("IN-KEY", "Opt-Out!", identity="+46700000003", event_time=f"{DAY}12:50:00Z"),
]


def test_help_is_history_without_effect(fed_alone: TestClient, settings) -> None:
    from projections.read_model import consent
    from service.runtime import Runtime

    post(fed_alone, p.inbound("IN-HELP", "Help?", identity=NUMBER, event_time=f"{DAY}11:30:00Z"))
    wait_for_projections(fed_alone)
    history = fed_alone.get("/contacts/CONTACT1/consent/history").json()["items"]
    assert [(h["fact"], h["effect"], h["keyword"]) for h in history[:2]] == [
        ("KEYWORD_OPT_OUT", "OPTED_OUT", "STOP"),  # " Stop ", normalised
        ("KEYWORD_HELP", None, "HELP"),
    ]
    assert history[1]["source_trigger"] == "MESSAGE_INBOUND"
    assert orjson.loads(fed_alone.get(history[1]["callback_url"]).json()["raw"])["message"][
        "contact_message"
    ] == {"text_message": {"text": "Help?"}}
    # Still opted out after the HELP: no state changes, and the STOP still decides.
    at = fed_alone.get(
        "/consent", params={"channel": "SMS", "identity": NUMBER, "at": f"{DAY}11:45:00Z"}
    )
    assert (at.json()["state"], at.json()["decided_by"]["fact"]) == ("OPTED_OUT", "KEYWORD_OPT_OUT")
    check = fed_alone.get("/consent/check", params={"channel": "SMS", "identity": NUMBER}).json()
    assert check["state"] == "OPTED_IN"  # the 13:00 opt-in, not the HELP
    runtime = Runtime(settings)
    try:
        with runtime.database().read() as cur:
            [violation] = consent.violations(cur)  # B, proven by the STOP as before
            assert violation["proof"]["fact"] == "KEYWORD_OPT_OUT"
    finally:
        runtime.close()


def test_review_lists_free_text_revocations_not_keywords(fed_alone: TestClient) -> None:
    feed(fed_alone, FREE_TEXT)
    body = fed_alone.get("/consent/review").json()
    assert body["next_cursor"] is None
    assert [(i["inbound_message_id"], i["text"], i["matched"]) for i in body["items"]] == [
        ("IN-FREE1", "please stop texting me", "stop+contact"),
        ("IN-FREE2", "Leave me alone!", "phrase"),
    ]
    first = body["items"][0]
    assert (first["channel"], first["identity"], first["contact_id"], first["project_id"]) == (
        "SMS",
        "46700000001",
        "CONTACT1",
        "PROJECT1",
    )
    assert first["event_time"] == f"{DAY}12:10:00.000000Z"
    assert first["callback_url"] == f"/callbacks/{first['source_ref']}"
    raw = fed_alone.get(first["callback_url"]).json()
    assert orjson.loads(raw["raw"]) == FREE_TEXT[0]
    # The keyword is a consent fact, with the keyword it matched.
    keyword = fed_alone.get(
        "/consent", params={"channel": "SMS", "identity": "+46700000003"}
    ).json()
    assert (keyword["state"], keyword["decided_by"]["keyword"]) == ("OPTED_OUT", "OPTOUT")
    # The free text changes no state.
    free = fed_alone.get("/consent", params={"channel": "SMS", "identity": "+46700000002"}).json()
    assert free["state"] == "UNKNOWN"

    page = fed_alone.get("/consent/review", params={"limit": 1}).json()
    rest = fed_alone.get("/consent/review", params={"cursor": page["next_cursor"]}).json()
    assert [i["source_ref"] for i in page["items"] + rest["items"]] == [
        i["source_ref"] for i in body["items"]
    ]
    late = fed_alone.get("/consent/review", params={"since": f"{DAY}12:15:00Z"}).json()["items"]
    assert [i["inbound_message_id"] for i in late] == ["IN-FREE2"]
    early = fed_alone.get("/consent/review", params={"until": f"{DAY}12:15:00Z"}).json()["items"]
    assert [i["inbound_message_id"] for i in early] == ["IN-FREE1"]
    for bad in ({"channel": "SMS"}, {"cursor": "nope"}, {"since": "yesterday"}, {"limit": "0"}):
        answer = fed_alone.get("/consent/review", params=bad)
        assert answer.status_code == 400, bad
        assert answer.json()["error"] == "bad_request"
    assert "/consent/review" in fed_alone.get("/openapi.json").json()["paths"]
