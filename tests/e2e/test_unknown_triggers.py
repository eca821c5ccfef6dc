"""The catch-all and the quarantine: bodies stored once, written by the group commit, listed in
pages bounded by size; on SQLite and PostgreSQL."""

from __future__ import annotations

import base64

import orjson
from starlette.testclient import TestClient

from api.query_routes import QUARANTINE_PAGE_BYTES
from store.ledger import Ledger
from tests.helpers import cli
from tests.integration.test_unknown_triggers import MB, big_body, quarantine_all


def test_a_large_quarantine_is_listed_in_pages_bounded_by_size(
    client: TestClient, ledger: Ledger, database_url: str
) -> None:
    bodies = [big_body(i) for i in range(50)]
    quarantine_all(ledger, bodies)
    listed: list[bytes] = []
    after: int | None = 0
    pages = 0
    while after is not None:
        response = client.get("/quarantine", params={"after": after, "limit": 1000})
        assert response.status_code == 200
        # Bounded: the page stops once past the budget (one body at most over it).
        assert len(response.content) < QUARANTINE_PAGE_BYTES + 1.5 * MB
        page = response.json()
        assert page["items"] or page["next_after"] is None
        listed += [base64.b64decode(item["raw_base64"]) for item in page["items"]]
        after = page["next_after"]
        pages += 1
    assert listed == bodies
    assert pages >= 50 * MB * 4 / 3 / (QUARANTINE_PAGE_BYTES + 1.5 * MB)
    # The command writes each entry as it reads it.
    result = cli(database_url, "quarantine", "--limit", "1000", "--after", "0")
    assert result.returncode == 0, result.stderr
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [base64.b64decode(item["raw_base64"]) for item in lines] == bodies
