"""Hostile input: fuzzed bodies and headers, absurd sizes and shapes, replays and slow
senders. Always a clear 4xx (or 200 for a body we can keep), never a 500, never an event from
an unsigned body while a secret is set."""

from __future__ import annotations

import json
import time
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from api.app import create_app
from service.settings import Settings
from store.ledger import Ledger
from tests import payloads as p
from tests.conftest import SECRET
from tests.helpers import KEYS, delivery_reports, stored_events

URL = "/webhooks/sinch"
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
TEMPLATES = [p.delivery(), p.opt("OPT_IN"), p.opt("OPT_OUT"), p.inbound()]


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside a JSON document."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    return found


def replace_at(document: Any, path: tuple, value: Any) -> Any:
    copy = json.loads(json.dumps(document))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


def signed_post(client: TestClient, raw: bytes) -> Any:
    return client.post(URL, content=raw, headers=p.signed_headers(raw, SECRET))


def assert_clear(response: Any) -> None:
    assert response.status_code in (200, 400, 413, 422), response.text
    body = response.json()
    if response.status_code != 200:
        assert body["error"] and body["detail"]


@FUZZ
@given(raw=st.binary(max_size=2000))
def test_unsigned_random_bytes_are_refused_and_store_nothing(
    client: TestClient, database_url: str, raw: bytes
) -> None:
    response = client.post(URL, content=raw)
    assert response.status_code == 401
    assert "missing signature header" in response.json()["detail"]
    assert stored_events(database_url) == []


@FUZZ
@given(raw=st.binary(max_size=2000) | json_values.map(lambda v: json.dumps(v).encode()))
def test_signed_random_bodies_get_a_clear_answer(client: TestClient, raw: bytes) -> None:
    assert_clear(signed_post(client, raw))


@FUZZ
@given(data=st.data())
def test_wrong_types_in_every_field(client: TestClient, data: st.DataObject) -> None:
    template = data.draw(st.sampled_from(TEMPLATES))
    path = data.draw(st.sampled_from(paths(template)))
    body = replace_at(template, path, data.draw(json_values))
    assert_clear(signed_post(client, json.dumps(body).encode()))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,  # deep nesting
        b'{"project_id": "P", "n": 1' + b"0" * 5000 + b"}",  # a huge number
        b'{"project_id": "P", "n": 1e400}',
        orjson.dumps({"project_id": "P", "big": list(range(100_000))}),
        orjson.dumps(
            {
                **p.delivery(),
                "message_delivery_report": {
                    **p.delivery()["message_delivery_report"],
                    "message_id": "x" * 5000,
                },
            }
        ),
        orjson.dumps(p.delivery(metadata="\u0000\ud7ff\ue000" * 100)),
        b'{"message_delivery_report": {"message_id": "M", "status": "READ"}, '
        b'"project_id": "\xed\xa0\x80"}',
    ],
    ids=["deep", "huge-int", "huge-float", "long-array", "long-id", "odd-unicode", "surrogate"],
)
def test_absurd_bodies(client: TestClient, raw: bytes) -> None:
    started = time.monotonic()
    response = signed_post(client, raw)
    assert_clear(response)
    assert time.monotonic() - started < 10


def test_replayed_nonce_is_refused(client: TestClient, database_url: str) -> None:
    raw = p.encode(p.delivery())
    headers = p.signed_headers(raw, SECRET)
    assert client.post(URL, content=raw, headers=headers).json()["status"] == "accepted"
    replay = client.post(URL, content=raw, headers=headers)
    assert replay.status_code == 401
    assert "already used" in replay.json()["detail"]
    # The same callback re-signed (a legitimate retry) is a duplicate, not an error.
    assert (
        client.post(URL, content=raw, headers=p.signed_headers(raw, SECRET)).json()["status"]
        == "duplicate"
    )
    assert len(delivery_reports(stored_events(database_url))) == 1


def test_a_retry_after_503_with_the_same_nonce_is_taken(database_url: str, tmp_path) -> None:
    raw = p.encode(p.delivery())
    headers = p.signed_headers(raw, SECRET)
    down = Settings(
        database_url=f"sqlite:///{tmp_path}/missing/dir/x.sqlite3", webhook_secrets=(SECRET,)
    )
    with TestClient(create_app(down)) as client:
        assert client.post(URL, content=raw, headers=headers).status_code == 503
    up = Settings(keys=KEYS, database_url=database_url, webhook_secrets=(SECRET,))
    with TestClient(create_app(up)) as client:
        assert client.post(URL, content=raw, headers=headers).json()["status"] == "accepted"


def test_sqlite_store_that_cannot_open_answers_503(tmp_path) -> None:
    settings = Settings(keys=KEYS, database_url=f"sqlite:///{tmp_path}/no/such/dir/x.sqlite3")
    with TestClient(create_app(settings)) as client:
        response = client.post(URL, content=p.encode(p.delivery()))
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert client.get("/healthz").status_code == 503


def test_openapi_document_describes_the_webhook(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    webhook = document["paths"]["/webhooks/sinch"]["post"]
    assert {"200", "400", "401", "413", "422", "503"} <= set(webhook["responses"])
    assert "DeliveryCallback" in document["components"]["schemas"]


def test_no_500_when_the_domain_has_a_bug(
    client: TestClient, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ledger, "command_for", broken)
    response = signed_post(client, p.encode(p.delivery()))
    assert response.status_code == 503
    assert "send it again later" in response.json()["detail"]


@pytest.mark.slow
@settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_wrong_types_in_every_field_long(client: TestClient, data: st.DataObject) -> None:
    body = data.draw(st.sampled_from(TEMPLATES))
    for _ in range(data.draw(st.integers(1, 3))):
        if not isinstance(body, dict) or not paths(body):
            break
        body = replace_at(body, data.draw(st.sampled_from(paths(body))), data.draw(json_values))
    assert_clear(signed_post(client, json.dumps(body).encode()))
