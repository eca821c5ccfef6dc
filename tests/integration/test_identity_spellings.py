"""A number's spelling never changes a consent answer, and another channel's id is kept byte for
byte, through the webhook, the projections and the consent routes. Both backends."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from api.app import create_app
from privacy.erasure import erase
from service.runtime import Runtime
from service.settings import Settings
from tests import payloads as p
from tests.conftest import SECRET, shared_client
from tests.helpers import accept_all, cli, make_key
from tests.integration.test_queries import feed
from tests.unit.test_identity import spelling

# One worker posts the story the module's tests share (`opted_out_store`).
pytestmark = pytest.mark.xdist_group("identity-spellings")

NUMBER = "46700000009"
# Opted out on two channels: on SMS as Sinch writes it, on WhatsApp spelled oddly, so the
# recording path is exercised as well as the query.
OPTED_OUT = [
    p.opt("OPT_OUT", channel="SMS", identity="+" + NUMBER, request_id="R-SMS"),
    p.opt("OPT_OUT", channel="WHATSAPP", identity="\uff0b46 (700) 000\u2013009", request_id="R-WA"),
]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def opted_out_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, str]]:
    """OPTED_OUT posted once per backend: the app and its store's URL, for this module's tests
    that only read it."""
    with shared_client(request.param, tmp_path_factory, request) as (client, url):
        yield feed(client, OPTED_OUT), url


@pytest.fixture
def opted_out(opted_out_store: tuple[TestClient, str]) -> TestClient:
    return opted_out_store[0]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), channel=st.sampled_from(["SMS", "WHATSAPP", "sms", "WhatsApp"]))
def test_any_spelling_of_an_opted_out_number_may_not_be_sent(
    opted_out: TestClient, data: st.DataObject, channel: str
) -> None:
    written = data.draw(spelling(NUMBER), label="identity")
    response = opted_out.get("/consent/check", params={"channel": channel, "identity": written})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["may_send"], answer["state"]) == (False, "OPTED_OUT"), answer
    assert answer["identity"] == NUMBER


def test_the_full_width_plus_of_the_report(opted_out: TestClient) -> None:
    for channel in ("SMS", "WHATSAPP"):
        params = {"channel": channel, "identity": "\uff0b" + NUMBER}
        answer = opted_out.get("/consent/check", params=params).json()
        assert (answer["may_send"], answer["state"]) == (False, "OPTED_OUT"), answer
        assert opted_out.get("/consent", params=params).json()["state"] == "OPTED_OUT"


# Ids of channels that are not numbers: a Viber Bot id (base64: "+", "/", "="), one made of a
# plus and digits, a Messenger PSID.
IDS = [
    ("VIBER", "9KC0p+pi4zPGDO99ACDxoQ=="),
    ("VIBER", "+0123456789"),
    ("MESSENGER", "3964920326927846"),
]


def test_other_channels_ids_round_trip_byte_for_byte(client: TestClient) -> None:
    feed(
        client,
        [
            p.opt("OPT_OUT", contact_id="C-IDS", channel=c, identity=identity, request_id=f"R{i}")
            for i, (c, identity) in enumerate(IDS)
        ],
    )
    for channel, identity in IDS:
        params = {"channel": channel, "identity": identity}
        check = client.get("/consent/check", params=params).json()
        assert (check["identity"], check["may_send"]) == (identity, False), check
        at = client.get("/consent", params=params).json()
        assert (at["identity"], at["state"]) == (identity, "OPTED_OUT"), at
    rows = client.get("/contacts/C-IDS/consent").json()["consent"]
    assert sorted((r["channel"], r["identity"]) for r in rows) == sorted(IDS)
    # An id differing by its "+" or a space is another id: nothing is known of it.
    for channel, other in [("VIBER", "0123456789"), ("VIBER", "9KC0p pi4zPGDO99ACDxoQ==")]:
        answer = client.get("/consent/check", params={"channel": channel, "identity": other})
        assert (answer.json()["state"], answer.json()["identity"]) == ("UNKNOWN", other)


@pytest.mark.parametrize("route", ["/consent/check", "/consent"])
@pytest.mark.parametrize("identity", ["alice", "46 70 abc", "4670+0001", "1234567890123456"])
def test_a_non_number_on_a_number_channel_is_a_400_naming_identity(
    opted_out: TestClient, route: str, identity: str
) -> None:
    response = opted_out.get(route, params={"channel": "SMS", "identity": identity})
    assert response.status_code == 400, response.text
    assert "'identity'" in response.json()["detail"]


def test_the_audit_command_reads_a_number_as_the_routes_do(
    opted_out_store: tuple[TestClient, str],
) -> None:
    _, database_url = opted_out_store
    spelled = "\u207a46\u00a0700 000\u2011009"
    at = cli(
        database_url, "audit", "at", "--channel", "sms", "--identity", spelled, "--format", "json"
    )
    assert at.returncode == 0, at.stderr
    [row] = orjson.loads(at.stdout)
    assert (row["identity"], row["state"]) == (NUMBER, "OPTED_OUT")
    history = cli(
        database_url,
        "audit",
        "history",
        "--channel",
        "WHATSAPP",
        "--identity",
        spelled,
        "--format",
        "json",
    )
    assert history.returncode == 0, history.stderr
    assert [r["fact"] for r in orjson.loads(history.stdout)] == ["OPT_OUT_SUCCEEDED"]
    refused = cli(database_url, "audit", "at", "--channel", "SMS", "--identity", "alice")
    assert refused.returncode != 0
    assert "--identity" in refused.stderr


def test_an_erasure_by_an_oddly_spelled_number_reaches_the_number(settings: Settings) -> None:
    runtime = Runtime(settings)
    try:
        ledger = runtime.ledger()
        accept_all(ledger, [p.opt(identity="+" + NUMBER), p.inbound(identity=NUMBER)])
        spelled = "\uff0b46 (700) 000\u2013009"
        report = erase(ledger, channel="SMS", identity=spelled, by="tester", reason="request")
        assert report.subjects == [ledger.vault.index("SMS", NUMBER)]
        assert report.keys_destroyed >= 1
    finally:
        runtime.close()


def test_the_console_finds_a_number_however_it_is_typed(opted_out: TestClient) -> None:
    spelled = "\uff0b46 (700) 000\u2013009"
    page = opted_out.get("/console/search", params={"q": spelled}).text
    assert f'href="/console/numbers/{NUMBER}"' in page
    number = opted_out.get(f"/console/numbers/{quote(spelled)}").text
    assert "OPTED_OUT" in number and "WHATSAPP" in number and "SMS" in number


@pytest.fixture
def plain(database_url: str) -> Iterator[TestClient]:
    """A store written without keys: its read tables hold identities themselves, not names."""
    unkeyed = Settings(database_url=database_url, webhook_secrets=(SECRET,))
    key = make_key(database_url, "admin-plain")
    with TestClient(create_app(unkeyed), headers={"Authorization": f"Bearer {key}"}) as client:
        yield feed(
            client,
            [
                *OPTED_OUT,
                p.opt(contact_id="C-V", channel="VIBER", identity=IDS[1][1], request_id="V"),
            ],
        )


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), channel=st.sampled_from(["SMS", "WHATSAPP"]))
def test_a_plaintext_store_reads_any_spelling_alike(
    plain: TestClient, data: st.DataObject, channel: str
) -> None:
    written = data.draw(spelling(NUMBER), label="identity")
    answer = plain.get("/consent/check", params={"channel": channel, "identity": written}).json()
    assert (answer["may_send"], answer["state"]) == (False, "OPTED_OUT"), answer
    viber = plain.get("/consent/check", params={"channel": "VIBER", "identity": IDS[1][1]}).json()
    assert (viber["identity"], viber["may_send"]) == (IDS[1][1], False)
    other = plain.get("/consent/check", params={"channel": "VIBER", "identity": "0123456789"})
    assert other.json()["state"] == "UNKNOWN"
