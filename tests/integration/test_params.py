"""Query and path parameters the server cannot use are a 400 naming them, never a 500, on
SQLite and PostgreSQL: non-ASCII digits, numbers past 64 bits, times whose UTC value is outside
the years 1-9999, and NUL bytes, lone surrogates or over-long values in a path."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from api.query_routes import encode_cursor
from tests.integration.test_projections import SCENARIO
from tests.integration.test_queries import feed

# The tests here share one empty store per backend (`empty_client`), but for the one that posts.
pytestmark = pytest.mark.xdist_group("params")

UUID = "0b7e8f1c-6d5a-4c3b-9a2e-1f0d9c8b7a61"
EARLY = "0001-01-01T00:00:00%2B01:00"  # UTC is the year 0
LATE = "9999-12-31T23:59:59-01:00"  # UTC is the year 10000
NUL_CURSOR = encode_cursor(["\x00", "a", "b"])


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("/messages?limit=%C2%B2", "limit"),  # '²': str.isdigit says yes, int() says no
        ("/messages?limit=%D9%A3", "limit"),  # Arabic-Indic three
        ("/read-confirmations?limit=%C2%B2", "limit"),
        ("/quarantine?limit=%C2%B2", "limit"),
        ("/contacts/C1/consent/history?limit=%C2%B2", "limit"),
        ("/messages?limit=0", "limit"),
        ("/messages?limit=1001", "limit"),
        ("/quarantine?after=%C2%B2", "after"),
        ("/quarantine?after=-1", "after"),
        ("/quarantine?after=9223372036854775808", "after"),  # 2**63: past SQLite's integers
        ("/quarantine?after=99999999999999999999", "after"),
        (f"/messages?since={EARLY}", "since"),
        (f"/messages?until={LATE}", "until"),
        (f"/read-confirmations?since={EARLY}", "since"),
        (f"/read-confirmations?until={LATE}", "until"),
        (f"/contacts/C1/consent/history?since={EARLY}", "since"),
        (f"/contacts/C1/consent/history?until={LATE}", "until"),
        (f"/consent?channel=SMS&identity=46700000001&at={EARLY}", "at"),
        (f"/consent?channel=SMS&identity=46700000001&at={LATE}", "at"),
        ("/messages?since=0001-01-01T12:00:00%2B01:00", "since"),  # the rule the document states
        ("/messages?since=00010101T000000%2B0100", "since"),  # another ISO 8601 form, same time
        (f"/messages?cursor={NUL_CURSOR}", "cursor"),
        ("/messages/a%00b", "message_id"),
        ("/messages/" + "x" * 1025, "message_id"),
        ("/contacts/%00/consent", "contact_id"),
        ("/contacts/%00/consent/history", "contact_id"),
        ("/contacts/" + "x" * 1025 + "/consent", "contact_id"),
        ("/callbacks/%00", "reference"),
        (f"/callbacks/{UUID}/%00", "reference"),
        (f"/callbacks/{UUID}/" + "x" * 2048, "reference"),
    ],
)
def test_unusable_parameter_is_400_naming_it(empty_client: TestClient, url: str, name: str) -> None:
    response = empty_client.get(url)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "bad_request"
    assert f"'{name}'" in body["detail"]


@pytest.mark.parametrize(
    "time", ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00-01:00", "9999-12-31T23:59:59-00:00"]
)
def test_times_on_the_calendars_edges_in_utc_are_taken(empty_client: TestClient, time: str) -> None:
    assert empty_client.get("/messages", params={"since": time}).status_code == 200


def test_times_before_the_year_1000_compare_as_times(client: TestClient) -> None:
    fed = feed(client, SCENARIO)
    assert fed.get("/messages", params={"until": "0999-01-01T00:00:00Z"}).json()["items"] == []
    assert fed.get("/messages", params={"since": "0999-01-01T00:00:00Z"}).json()["items"]


@pytest.mark.parametrize("url", ["/callbacks/%0A", f"/callbacks/{UUID}/x%0A"])
def test_a_reference_ending_in_a_newline_is_looked_up_whole(
    empty_client: TestClient, url: str
) -> None:
    response = empty_client.get(url)
    assert response.status_code == 404, response.text
    assert "\\n'" in response.json()["detail"]


def test_largest_after_is_taken(empty_client: TestClient) -> None:
    response = empty_client.get(f"/quarantine?after={2**63 - 1}")
    assert response.status_code == 200, response.text
    assert response.json() == {"items": [], "next_after": None}


@pytest.mark.parametrize("url", ["/contacts/a%2Fb/consent", "/contacts/a%2Fb/consent/history"])
def test_an_id_holding_a_slash_reaches_no_route(empty_client: TestClient, url: str) -> None:
    response = empty_client.get(url)
    assert response.status_code == 404  # as the OpenAPI document says
    assert response.json()["error"] == "http_error"
