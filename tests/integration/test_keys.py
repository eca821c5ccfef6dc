"""API keys and scopes: every route but the webhook needs a key with the right
scope; keys are stored only as hashes; the access log; the private listener; secure defaults."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest
from starlette.routing import Match
from starlette.testclient import TestClient

from api.app import create_app
from service.settings import Settings, backend_for
from store.backend import Database
from tests.helpers import KEYS, make_key, starlette_app

WEBHOOK = "/webhooks/sinch"

# The table, written out again here on purpose: the app's own table (ROUTE_SCOPES) must
# agree with it, and every route of the app must be in it.
SCOPE_TABLE = {
    "/messages": "read",
    "/messages/stalled": "read",
    "/messages/{message_id}": "read",
    "/read-confirmations": "read",
    "/consent/check": "read",
    "/consent": "read, audit with ?at=",
    "/contacts/{contact_id}/consent": "read",
    "/contacts/{contact_id}/consent/history": "audit",
    "/consent/review": "audit",
    "/callbacks/{reference:path}": "audit",
    "/callbacks": "audit",
    "/quarantine": "audit",
    "/access-log": "audit",
    "/seal": "audit",
    "/metrics": "metrics",
    "/openapi.json": "any key",
    "/healthz": "bare status without a key",
    # The web console (tests/integration/test_console.py requests each page with each kind of key).
    "/console": "any key",
    "/console/sign-in": "no key",
    "/console/sign-out": "any key",
    "/console/static/console.css": "no key",
    "/console/search": "read",
    "/console/messages/{message_id}": "read",
    "/console/numbers/{identity}": "read",
    "/console/contacts/{contact_id}": "read",
    "/console/overview": "read",
    "/console/quarantine": "audit",
    "/console/quarantine/{entry_id}": "audit",
    "/console/quarantine/{entry_id}/resolve": "admin",
    "/console/callbacks/{reference:path}": "audit",
    "/console/callbacks": "audit",
    "/console/health": "any key",
    "/console/compliance": "audit",
    "/console/compliance.csv": "audit",
    # POST; requested with each kind of key in tests/integration/test_erasure.py.
    "/admin/erasures": "admin",
}
POSTS = {"/admin/erasures"}
CONSOLE = {path for path in SCOPE_TABLE if path.startswith("/console")}
# One request per route and scope: (url, scope it needs).
REQUESTS = [
    ("/messages", "read"),
    ("/messages/stalled", "read"),
    ("/messages/M1", "read"),
    ("/read-confirmations", "read"),
    ("/consent/check?channel=SMS&identity=46700000001", "read"),
    ("/consent?channel=SMS&identity=46700000001", "read"),
    ("/consent?channel=SMS&identity=46700000001&at=2024-06-15T15:00:00Z", "audit"),
    ("/contacts/C1/consent", "read"),
    ("/contacts/C1/consent/history", "audit"),
    ("/consent/review", "audit"),
    ("/callbacks/00000000-0000-0000-0000-000000000000/k", "audit"),
    ("/callbacks?trigger=CONTACT_MERGE", "audit"),
    ("/quarantine", "audit"),
    ("/access-log", "audit"),
    ("/seal", "audit"),
    ("/metrics", "metrics"),
    ("/openapi.json", None),  # any valid key
]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_every_route_is_in_the_scope_table(client: TestClient) -> None:
    from api.app import ROUTE_SCOPES

    starlette = starlette_app(client)
    seen = set()
    for route in starlette.routes:
        if route.path in (WEBHOOK, WEBHOOK + "/"):
            assert not hasattr(route, "needs")  # the webhook alone: signed, no key
            continue
        seen.add(route.path)
        assert route.path in SCOPE_TABLE, f"{route.path} is not in the scope table"
        assert route.needs is ROUTE_SCOPES[route.path]
        if route.path not in ("/healthz",):
            # Wrapped by the guard, with the scope the table says.
            assert route.endpoint.needs is ROUTE_SCOPES[route.path]
        expected = SCOPE_TABLE[route.path].split(",")[0]
        needs = route.needs
        if callable(needs):
            assert route.path == "/consent"
        else:
            assert needs.startswith(expected.split(" ")[0]), (route.path, needs)
    assert seen == set(SCOPE_TABLE)
    # The requests of the matrix below reach every route but /healthz (tested on its own).
    reached = set()
    for url, _ in REQUESTS:
        scope = {"type": "http", "method": "GET", "path": url.split("?")[0]}
        # The first full match serves it, as in Starlette (/messages/stalled before the id).
        route = next(r for r in starlette.routes if r.matches(scope)[0] == Match.FULL)
        reached.add(route.path)
    assert reached == set(SCOPE_TABLE) - {"/healthz"} - CONSOLE - POSTS


def test_healthz_without_a_key_keeps_the_failing_code(tmp_path: Path) -> None:
    settings = Settings(keys=KEYS, database_url=f"sqlite:///{tmp_path}/no/such/dir/x.sqlite3")
    with TestClient(create_app(settings)) as client:
        answer = client.get("/healthz")
        assert answer.status_code == 503
        assert answer.json() == {"status": "failing"}


def test_a_query_costs_one_cached_lookup(
    settings: Settings, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from access.api_keys import KeyStore

    lookups = []
    find = KeyStore.find
    monkeypatch.setattr(KeyStore, "find", lambda self, h: lookups.append(h) or find(self, h))
    key = make_key(settings.database_url, "cached", ("read",))
    for _ in range(20):
        assert client.get("/messages", headers=bearer(key)).status_code == 200
    assert len(lookups) == 1


# ---- the CLI ----


# ---- the access log ----


def test_the_access_log_is_append_only(settings: Settings, client: TestClient) -> None:
    client.get("/consent/review")
    db = Database(backend_for(settings.database_url))
    try:
        for sql in (
            "UPDATE ledger_access_log SET actor = 'someone else'",
            "DELETE FROM ledger_access_log",
        ):
            with pytest.raises((sqlite3.DatabaseError, psycopg.Error)), db.transaction() as cur:
                cur.execute(sql)
        with db.read() as cur:
            assert cur.execute("SELECT actor FROM ledger_access_log").fetchall() == [
                {"actor": "test-admin"}
            ]
    finally:
        db.close()


# ---- serve: secure defaults, the first key, the private listener, workers ----
