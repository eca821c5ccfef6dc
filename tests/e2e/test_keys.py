"""API keys and scopes: every route but the webhook needs a key with the right
scope; keys are stored only as hashes; the access log; the private listener; secure defaults."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest
from starlette.testclient import TestClient

from access.api_keys import KEYS_TABLE, SCOPES
from api import auth
from api.app import create_app
from service.settings import Settings, backend_for
from store.backend import Database
from store.ledger import Ledger
from store.sqlite import sqlite_path
from tests import payloads as p
from tests.conftest import SECRET
from tests.helpers import KEYS, cli, make_key, printed_key
from tests.integration.test_keys import REQUESTS, WEBHOOK, bearer
from tests.postgres_server import free_port
from tests.server import Server


def expire(database_url: str, name: str) -> None:
    db = Database(backend_for(database_url))
    try:
        with db.transaction() as cur:
            cur.execute(
                f"UPDATE {KEYS_TABLE} SET expires_at = ? WHERE name = ?",
                ["2000-01-01T00:00:00Z", name],
            )
    finally:
        db.close()


def revoke(database_url: str, name: str) -> None:
    done = cli(database_url, "keys", "revoke", name)
    assert done.returncode == 0, done.stderr


def test_each_route_with_each_kind_of_key(settings: Settings, client: TestClient) -> None:
    url = settings.database_url
    keys = {scope: make_key(url, f"only-{scope}", (scope,)) for scope in SCOPES}
    revoked = make_key(url, "revoked")
    revoke(url, "revoked")
    expired = make_key(url, "expired", expires_in_days=1)
    expire(url, "expired")
    bad = "clk_" + "A" * 43
    for path, scope in REQUESTS:
        where = f"GET {path}"
        answer = client.get(path, headers={"Authorization": ""})
        assert answer.status_code == 401, where
        assert answer.json()["error"] == "missing_key"
        assert answer.headers["www-authenticate"].startswith("Bearer")
        for token, code in [
            (bad, "unknown_key"),
            (revoked, "revoked_key"),
            (expired, "expired_key"),
        ]:
            answer = client.get(path, headers=bearer(token))
            assert (answer.status_code, answer.json()["error"]) == (401, code), where
        answer = client.get(path, headers={"Authorization": f"Basic {bad}"})
        assert answer.status_code == 401, where
        if scope is None:
            for key in keys.values():
                assert client.get(path, headers=bearer(key)).status_code == 200, where
            continue
        for other, key in keys.items():
            answer = client.get(path, headers=bearer(key))
            if other == scope:
                assert answer.status_code in (200, 404), (where, answer.text)
            else:
                assert answer.status_code == 403, (where, other)
                assert answer.json()["error"] == "missing_scope"
                assert answer.json()["scope"] == scope
                assert f"'{scope}'" in answer.json()["detail"]


def test_healthz_says_only_the_status_without_a_key(settings: Settings, client: TestClient) -> None:
    bare = client.get("/healthz", headers={"Authorization": ""})
    assert bare.status_code == 200
    assert bare.json() == {"status": "ok"}
    full = client.get("/healthz")
    assert full.status_code == 200
    assert {"status", "backend", "events", "projections"} <= set(full.json())
    # Any valid key shows the detail; a bad one is refused rather than shown the bare status.
    only_read = make_key(settings.database_url, "reader", ("read",))
    assert "projections" in client.get("/healthz", headers=bearer(only_read)).json()
    assert client.get("/healthz", headers=bearer("clk_nope")).status_code == 401
    revoked = make_key(settings.database_url, "revoked")
    revoke(settings.database_url, "revoked")
    expired = make_key(settings.database_url, "expired", expires_in_days=1)
    expire(settings.database_url, "expired")
    for key, code in [(revoked, "revoked_key"), (expired, "expired_key")]:
        answer = client.get("/healthz", headers=bearer(key))
        assert (answer.status_code, answer.json()["error"]) == (401, code)


def test_revocation_takes_effect_within_the_cache_bound(
    settings: Settings, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "CACHE_S", 0.5)
    key = make_key(settings.database_url, "soon-revoked", ("read",))
    assert client.get("/messages", headers=bearer(key)).status_code == 200
    revoke(settings.database_url, "soon-revoked")
    time.sleep(0.6)
    answer = client.get("/messages", headers=bearer(key))
    assert (answer.status_code, answer.json()["error"]) == (401, "revoked_key")


def test_last_used_is_written_at_most_once_a_minute(
    settings: Settings, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from access.api_keys import KeyStore

    touches = []
    touch = KeyStore.touch
    monkeypatch.setattr(
        KeyStore, "touch", lambda self, name, at: touches.append(name) or touch(self, name, at)
    )
    key = make_key(settings.database_url, "busy", ("read",))
    for _ in range(10):
        client.get("/messages", headers=bearer(key))
    assert touches == ["busy"]
    listed = {
        k["name"]: k
        for k in orjson.loads(cli(settings.database_url, "keys", "list", "--format", "json").stdout)
    }
    assert listed["busy"]["last_used_at"] is not None


# ---- the CLI ----


def test_keys_create_list_revoke(database_url: str) -> None:
    made = cli(database_url, "keys", "create", "--name", "ci", "--scope", "read,audit")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("clk_") and len(key) >= 40 and " " not in key
    expiring = cli(
        database_url, "keys", "create", "--name", "temp", "--scope", "read", "--expires-in", "7"
    )
    assert expiring.returncode == 0, expiring.stderr
    listed = cli(database_url, "keys", "list", "--format", "json")
    assert key not in listed.stdout
    rows = {row["name"]: row for row in orjson.loads(listed.stdout)}
    assert rows["ci"]["scopes"] == "read,audit"
    assert rows["ci"]["expires_at"] is None and rows["temp"]["expires_at"] is not None
    assert rows["ci"]["state"] == "active"
    # A taken name, an unknown scope: refused.
    assert cli(database_url, "keys", "create", "--name", "ci", "--scope", "read").returncode == 1
    wrong = cli(database_url, "keys", "create", "--name", "x", "--scope", "everything")
    assert wrong.returncode == 1 and "unknown scope" in wrong.stderr
    assert cli(database_url, "keys", "revoke", "ci").returncode == 0
    assert cli(database_url, "keys", "revoke", "ci").returncode == 1  # no active key so named
    rows = {
        r["name"]: r
        for r in orjson.loads(cli(database_url, "keys", "list", "--format", "json").stdout)
    }
    assert rows["ci"]["state"] == "revoked"


def test_keys_are_stored_only_as_hashes(database_url: str, backend: str) -> None:
    made = cli(database_url, "keys", "create", "--name", "secret-one", "--scope", "all")
    key = made.stdout.strip().splitlines()[-1]
    secret_part = key.removeprefix("clk_")
    if backend == "sqlite":
        path = Path(sqlite_path(database_url))
        dumped = b"".join(
            f.read_bytes() for f in path.parent.iterdir() if f.name.startswith(path.name)
        )
        assert b"secret-one" in dumped  # the right file was read
        assert secret_part.encode() not in dumped
    else:
        with psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql")) as conn:
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                ).fetchall()
            ]
            dumped = "".join(
                str(row) for t in tables for row in conn.execute(f"SELECT t::text FROM {t} t")
            )
        assert "secret-one" in dumped
        assert secret_part not in dumped
        if shutil.which("pg_dump"):  # and the dump an operator would take
            dump = subprocess.run(
                ["pg_dump", "--data-only", database_url], capture_output=True, text=True
            )
            assert dump.returncode == 0, dump.stderr
            assert "secret-one" in dump.stdout and secret_part not in dump.stdout
    # ... and it still works.
    with TestClient(create_app(Settings(keys=KEYS, database_url=database_url))) as client:
        assert client.get("/messages", headers=bearer(key)).status_code == 200


# ---- the access log ----


def test_audit_reads_are_in_the_access_log(settings: Settings, client: TestClient) -> None:
    auditor = make_key(settings.database_url, "auditor", ("audit",))
    reader = make_key(settings.database_url, "reader", ("read",))
    assert client.get("/messages", headers=bearer(reader)).status_code == 200  # not logged
    assert client.get("/contacts/C1/consent/history", headers=bearer(auditor)).status_code == 200
    at = "/consent?channel=SMS&identity=46700000001&at=2024-06-15T15:00:00Z"
    assert client.get(at, headers=bearer(auditor)).status_code == 200
    assert client.get("/callbacks/x/y", headers=bearer(auditor)).status_code == 404
    assert client.get("/consent/review", headers=bearer(reader)).status_code == 403  # not logged
    log = client.get("/access-log", headers=bearer(auditor)).json()["items"]
    assert [(e["actor"], e["route"]) for e in log] == [
        ("auditor", "/contacts/{contact_id}/consent/history"),
        ("auditor", "/consent"),
        ("auditor", "/callbacks/{reference}"),
    ]
    assert log[0]["subject"] == {"contact_id": "C1"}
    assert log[1]["subject"]["identity"] == "46700000001"
    assert (log[1]["results"], log[2]["results"], log[2]["status"]) == (1, 0, 404)
    # Reading the log is an audit read too; the CLI lists all, filtered by key.
    listed = cli(settings.database_url, "audit", "access", "--key", "auditor", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert [e["route"] for e in orjson.loads(listed.stdout)][-1] == "/access-log"


def test_cli_audit_commands_are_in_the_access_log(database_url: str, ledger: Ledger) -> None:
    from tests.helpers import accept_all

    accept_all(ledger, [p.opt("OPT_OUT", contact_id="C7")])
    done = cli(database_url, "audit", "history", "--contact", "C7", "--format", "json")
    assert done.returncode == 0, done.stderr
    listed = cli(database_url, "audit", "access", "--format", "json")
    entries = orjson.loads(listed.stdout)
    history = [e for e in entries if e["route"] == "audit history"]
    assert len(history) == 1
    assert history[0]["actor"].startswith("cli:")
    assert history[0]["subject.contact"] == "C7"
    assert history[0]["results"] == len(orjson.loads(done.stdout))
    assert cli(database_url, "quarantine").returncode == 0  # refused bodies: audit data too
    entries = orjson.loads(cli(database_url, "audit", "access", "--format", "json").stdout)
    # (A listing is logged once it is read: it does not hold itself.)
    assert [e["route"] for e in entries] == ["audit history", "audit access", "quarantine"]
    later = cli(
        database_url, "audit", "access", "--since", "2999-01-01T00:00:00Z", "--format", "json"
    )
    assert orjson.loads(later.stdout) == []
    csv_out = cli(database_url, "audit", "access", "--format", "csv").stdout
    assert csv_out.splitlines()[0].startswith("id,at,actor,route")


# ---- serve: secure defaults, the first key, the private listener, workers ----


def serve_process(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return cli(database_url, "serve", "--port", str(free_port()), *args, timeout=20, **env)


def test_serve_refuses_unsigned_callbacks_on_a_public_address(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.sqlite3"
    refused = serve_process(url, "--host", "0.0.0.0", SINCH_WEBHOOK_SECRET="")
    assert refused.returncode == 2
    assert "SINCH_WEBHOOK_SECRET" in refused.stderr and "--allow-unsigned" in refused.stderr
    private = serve_process(url, "--private-listen", "0.0.0.0:1", SINCH_WEBHOOK_SECRET="")
    assert private.returncode == 2


def test_serve_refuses_a_private_listener_it_cannot_tell_apart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.sqlite3"
    port = str(free_port())
    same = cli(url, "serve", "--port", port, "--private-listen", f"127.0.0.1:{port}", timeout=20)
    assert same.returncode == 2 and "another port" in same.stderr
    bad = cli(url, "serve", "--port", port, "--private-listen", "nowhere", timeout=20)
    assert bad.returncode == 2 and "host:port" in bad.stderr


def test_serve_on_a_public_address_with_a_secret_or_allow_unsigned(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.sqlite3"
    for env, args in [
        ({"SINCH_WEBHOOK_SECRET": SECRET}, ()),
        ({"SINCH_WEBHOOK_SECRET": ""}, ("--allow-unsigned",)),
    ]:
        server = Server(
            {"LEDGER_DATABASE_URL": url, **env}, tmp_path / "s.log", ("--host", "0.0.0.0", *args)
        )
        server.stop()


def test_first_start_prints_an_admin_key_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.sqlite3"
    env = {"LEDGER_DATABASE_URL": url, "SINCH_WEBHOOK_SECRET": ""}
    server = Server(env, tmp_path / "first.log")
    try:
        key = printed_key(server.log())
        assert key is not None
        assert "keys create --name NAME --scope read" in server.log()
        answer = httpx.get(server.url + "/messages", headers=bearer(key))
        assert answer.status_code == 200
        assert httpx.get(server.url + "/messages").status_code == 401
    finally:
        server.stop()
    again = Server(env, tmp_path / "second.log")
    try:
        assert printed_key(again.log()) is None
        assert httpx.get(again.url + "/messages", headers=bearer(key)).status_code == 200
    finally:
        again.stop()


def private_server(database_url: str, tmp_path: Path, *args: str) -> tuple[Server, str]:
    private = f"http://127.0.0.1:{(port := free_port())}"
    server = Server(
        {"LEDGER_DATABASE_URL": database_url, "SINCH_WEBHOOK_SECRET": SECRET},
        tmp_path / "private.log",
        ("--private-listen", f"127.0.0.1:{port}", *args),
    )
    return server, private


def test_the_private_listener(database_url: str, tmp_path: Path) -> None:
    server, private = private_server(database_url, tmp_path)
    try:
        key = bearer(server.key)
        raw = p.encode(p.delivery("M1"))
        posted = httpx.post(
            server.url + WEBHOOK, content=raw, headers=p.signed_headers(raw, SECRET)
        )
        assert posted.status_code == 200
        # The public port: the webhook and the bare status, nothing else, key or not.
        assert httpx.get(server.url + "/healthz", headers=key).json() == {"status": "ok"}
        for path, _ in REQUESTS:
            assert httpx.get(server.url + path, headers=key).status_code == 404, path
        # The private port: everything, still with keys.
        assert httpx.get(private + "/messages").status_code == 401
        deadline = time.monotonic() + 10
        while httpx.get(private + "/messages/M1", headers=key).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert "projections" in httpx.get(private + "/healthz", headers=key).json()
    finally:
        server.stop()


def test_workers_with_a_key_created_while_serving(
    database_url: str, backend: str, tmp_path: Path
) -> None:
    if backend == "sqlite":
        pytest.skip("--workers above 1 needs PostgreSQL")
    server, private = private_server(database_url, tmp_path, "--workers", "2")
    try:
        made = cli(database_url, "keys", "create", "--name", "late", "--scope", "read")
        key = bearer(made.stdout.strip().splitlines()[-1])
        # A new connection each time: the kernel spreads them over both workers.
        for _ in range(20):
            answer = httpx.get(private + "/messages", headers=key)
            assert answer.status_code == 200, answer.text
        reviewed = httpx.get(private + "/consent/review", headers=key)
        assert reviewed.status_code == 403
        revoke(database_url, "late")
        time.sleep(auth.CACHE_S + 0.5)
        for _ in range(10):
            assert httpx.get(private + "/messages", headers=key).status_code == 401
    finally:
        server.stop()


def test_keys_command_help_names_the_scopes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "callback_ledger.cli", "keys", "create", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert all(scope in done.stdout for scope in SCOPES)
