"""GET /metrics: counters move with the webhook's answers, lag is read from the store, and
`serve --workers 2` sums its processes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from eventsourcing.utils import get_topic
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from api.app import create_app
from domain.callbacks import QuarantinedCallback
from service.metrics import QuarantineCount
from service.runtime import Runtime
from service.settings import Settings
from store.ledger import Ledger
from tests import payloads as p
from tests.conftest import SECRET
from tests.helpers import KEYS

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client: TestClient | str, headers: dict[str, str] | None = None) -> Samples:
    if isinstance(client, str):
        response = httpx.get(client + "/metrics", headers=headers, timeout=30)
    else:
        response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def signed(client: TestClient, raw: bytes, secret: str = SECRET, **headers: str) -> httpx.Response:
    return client.post(
        "/webhooks/sinch", content=raw, headers={**p.signed_headers(raw, secret), **headers}
    )


@pytest.fixture
def observed(settings: Settings, ledger: Ledger, admin_key: str) -> Iterator[TestClient]:
    """The app, with the quarantine counted again at every scrape."""
    app = create_app(dataclasses.replace(settings, metrics_refresh_s=0), ledger)
    bearer = {"Authorization": f"Bearer {admin_key}"}
    with TestClient(app, raise_server_exceptions=False, headers=bearer) as client:
        yield client


def test_callbacks_are_counted_by_trigger_and_outcome(observed: TestClient) -> None:
    before = scrape(observed)
    report = p.encode(p.delivery("M1", "DELIVERED"))
    assert signed(observed, report).json()["status"] == "accepted"
    assert signed(observed, report).json()["status"] == "duplicate"
    no_id = p.delivery("M2")
    del no_id["message_delivery_report"]["message_id"]
    assert signed(observed, p.encode(no_id)).status_code == 422
    assert signed(observed, b"this is not JSON").status_code == 400
    assert signed(observed, report, secret="another-secret-entirely").status_code == 401
    too_large = b" " * (1024 * 1024 + 1)
    assert signed(observed, too_large).status_code == 413
    after = scrape(observed)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    callbacks = "callback_ledger_callbacks_total"
    delivery = "MESSAGE_DELIVERY"
    assert moved(callbacks, trigger=delivery, outcome="accepted") == 1
    assert moved(callbacks, trigger=delivery, outcome="duplicate") == 1
    assert moved(callbacks, trigger=delivery, outcome="invalid") == 1
    assert moved(callbacks, trigger="UNKNOWN", outcome="quarantined") == 1
    assert moved(callbacks, trigger="UNKNOWN", outcome="unsigned_rejected") == 1
    assert moved(callbacks, trigger="UNKNOWN", outcome="too_large") == 1
    # Four commits: the report, its duplicate and the two quarantined bodies.
    assert moved("callback_ledger_batch_size_count") == 4
    assert moved("callback_ledger_commit_seconds_count") == 4
    assert moved("callback_ledger_batch_size_sum") == 4
    assert moved("callback_ledger_events_total") >= 3  # the report's, and one per body kept
    assert value(after, "callback_ledger_quarantine_size") == 2
    assert value(after, "callback_ledger_store_up") == 1
    route = "/webhooks/sinch"
    assert moved("callback_ledger_request_seconds_count", route=route) == 6
    assert moved("callback_ledger_responses_total", route=route, status="200") == 2
    assert moved("callback_ledger_responses_total", route=route, status="422") == 1


def test_requests_are_timed_by_route_template_and_carry_a_request_id(
    observed: TestClient,
) -> None:
    before = scrape(observed)
    mine = observed.get("/messages/SOME-MESSAGE", headers={"X-Request-ID": "trace-42.a:b"})
    assert mine.status_code == 404
    assert mine.headers["x-request-id"] == "trace-42.a:b"
    insane = observed.get("/messages/OTHER", headers={"X-Request-ID": "no spaces allowed!"})
    assert insane.headers["x-request-id"] != "no spaces allowed!"
    assert len(insane.headers["x-request-id"]) == 24
    made = observed.get("/nothing/here")
    assert made.status_code == 404
    assert made.headers["x-request-id"]
    after = scrape(observed)
    counts = "callback_ledger_request_seconds_count"
    template = "/messages/{message_id}"
    assert value(after, counts, route=template) - value(before, counts, route=template) == 2
    assert value(after, counts, route="unmatched") - value(before, counts, route="unmatched") == 1
    # Never the raw path: it holds ids (and, in a query, phone numbers).
    assert not any("SOME-MESSAGE" in str(labels) for _, labels in after)


def test_the_quarantine_is_counted_incrementally(settings: Settings, ledger: Ledger) -> None:
    runtime = Runtime(settings, ledger)
    projector = runtime.projector()
    topic = get_topic(QuarantinedCallback.Quarantined)  # type: ignore[attr-defined]
    with TestClient(create_app(settings, ledger)) as client:
        for n in range(3):
            assert signed(client, f"not JSON {n}".encode()).status_code == 400
            assert signed(client, p.encode(p.delivery(f"M{n}"))).status_code == 200
        # In ranges of two ids, at most one range per call when the budget is spent at once.
        slow = QuarantineCount(refresh_s=3600, budget_s=0, chunk=2)
        cached = QuarantineCount(refresh_s=3600)
        with projector.db.read() as cur:
            head = projector.log.head(cur)
            assert cached.value(cur, projector.log, head, topic) == 3
            seen = [slow.value(cur, projector.log, head, topic) for _ in range(head)]
        assert seen[0] is None  # not counted to the head yet: left out of the scrape
        assert seen[-1] == 3
        assert signed(client, b"one more refused body").status_code == 400
        with projector.db.read() as cur:
            newer = projector.log.head(cur)
            # Within refresh_s the cached count stands; once due, only the new ids are read.
            assert cached.value(cur, projector.log, newer, topic) == 3
            cached.checked -= 3600
            assert cached.value(cur, projector.log, newer, topic) == 4
            assert cached.upto == newer
    runtime.close()


def test_store_down_is_a_503_not_an_error(tmp_path: Path) -> None:
    # A SQLite path in a directory that does not exist: the store cannot be opened, so no key
    # can be checked either. /metrics needs a key: the scrape fails with a 503 (Prometheus's
    # `up` goes to 0 and its alert fires), never a 500.
    missing = Settings(keys=KEYS, database_url=f"sqlite:///{tmp_path}/no/such/dir/ledger.sqlite3")
    bearer = {"Authorization": "Bearer clk_" + "A" * 43}
    with TestClient(create_app(missing), raise_server_exceptions=False, headers=bearer) as client:
        response = client.get("/metrics")
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"]
