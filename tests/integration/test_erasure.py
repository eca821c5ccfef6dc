"""Erasure and retention: destroying a subject's data keys makes its identity, texts
and raw bodies unreadable everywhere and physically gone from the database files; the erasure
is a fact in the log; the seal chain still verifies; retention shreds one class and keeps the
other; the admin endpoint; the refusals."""

from __future__ import annotations

import base64
import dataclasses
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from domain.callbacks import MAX_IDENTITY
from domain.erasure import Erasure
from privacy.erasure import ErasureRefused, erase
from privacy.retention import apply, cutoff
from service.runtime import Runtime
from service.settings import Settings, open_ledger
from store import envelope, spellings
from store.backend import Database
from store.data_keys import TABLE as KEYS_TABLE
from store.ledger import Ledger
from tests import payloads as p
from tests.conftest import SECRET
from tests.helpers import KEYS, accept_all, cli, make_key
from tests.integration.test_queries import wait_for_projections
from tests.postgres_server import PrivateServer, create_database

NUMBER = "46709876543"
TEXT = "meet me at the blue door 7731"
ERASED_TOPIC = "callback_ledger.domain.erasure:Erasure.Erased"


def record_person(ledger: Ledger) -> None:
    """A person known by one number on two channels: a delivery report (WhatsApp), an inbound
    free text and an opt-out (SMS), all on CONTACT1."""
    accept_all(
        ledger,
        [
            p.delivery(identity=NUMBER),
            p.inbound(text=TEXT, identity="+" + NUMBER),
            p.opt(identity=NUMBER),
            # Someone else, on another contact: untouched by the erasure.
            p.inbound(message_id="IN2", text="STOP", contact_id="CONTACT2", identity="+4611"),
        ],
    )


def wrapped_keys(db: Database, subjects: list[str] | None = None) -> list[bytes]:
    """The wrapped keys as stored (bytes), of these subjects or all."""
    with db.read() as cur:
        rows = cur.execute(f"SELECT subject, wrapped FROM {KEYS_TABLE}").fetchall()
    return [bytes(r["wrapped"]) for r in rows if subjects is None or r["subject"] in subjects]


def found_in(files: list[Path], needles: list[str] | list[bytes]) -> dict[str, list[str]]:
    """Which needles occur in which files, as raw bytes."""
    hits: dict[str, list[str]] = {}
    for path in files:
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            continue
        for needle in needles:
            if (needle.encode() if isinstance(needle, str) else needle) in data:
                hits.setdefault(repr(needle), []).append(str(path))
    return hits


def decoded(ledger: Ledger) -> list[tuple[str, dict[str, Any]]]:
    """Every event's topic and state as the projections see it."""
    mapper: Any = ledger.mapper
    out = []
    for n in ledger.recorder.select_notifications(start=1, limit=10_000):
        if envelope.is_sealed(n.state):
            state = envelope.open_state(n.state, ledger.vault, mapper.zstd, n.topic)
        else:
            state = orjson.loads(mapper.zstd.decompress(n.state))
        out.append((n.topic, state))
    return out


@pytest.fixture
def store_files(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[str, Any]]:
    """A database URL and a function listing the files the database keeps its data in: the
    SQLite file with its WAL, or a private PostgreSQL's whole data directory (checkpointed
    first, so what is in memory is on disk)."""
    if backend == "sqlite":
        path = tmp_path / "ledger.sqlite3"

        def sqlite_files(with_wal: bool = True) -> list[Path]:
            return [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm", "-journal")]

        yield f"sqlite:///{path}", sqlite_files
        return
    server: PrivateServer = request.getfixturevalue("private_postgres")
    url = create_database(server.url)

    def postgres_files(with_wal: bool = True) -> list[Path]:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        files = [f for f in server.data.rglob("*") if f.is_file()]
        # The WAL keeps a deleted row's insert until its segments are recycled (the limits of
        # erasure on PostgreSQL, docs/personal-data-and-evidence.md): searched only for what was
        # never plaintext.
        return [f for f in files if with_wal or "pg_wal" not in f.parts]

    yield url, postgres_files


def test_erasure_leaves_nothing_readable_in_the_database_files(
    store_files: tuple[str, Any],
) -> None:
    url, files = store_files
    settings = Settings(keys=KEYS, database_url=url)
    runtime = Runtime(settings)
    record_person(runtime.ledger())
    runtime.projector().catch_up()
    db = runtime.store_database()
    everyone = wrapped_keys(db)
    assert everyone
    runtime.close()
    before = found_in(files(), everyone)
    # The search finds what is there: the keys are in the files now.
    assert before, "the wrapped keys should be found in the files before the erasure"

    done = cli(url, "erase", "--contact", "CONTACT1", "--project", "PROJECT1", "--reason", "T-1")
    assert done.returncode == 0, done.stderr
    assert "erased (contact)" in done.stdout

    runtime = Runtime(settings)
    try:
        ledger = runtime.ledger()
        remaining = set(wrapped_keys(runtime.store_database()))
        destroyed = [k for k in everyone if k not in remaining]
        # The two channels' identities and the contact: every key but the other contact's.
        assert len(destroyed) >= 3 and remaining
        states = decoded(ledger)
    finally:
        runtime.close()
    assert not found_in(files(with_wal=False), destroyed)
    # The text was never stored in plaintext anywhere, the WAL included (the number: below).
    assert not found_in(files(), [TEXT])

    mine = [s for _, s in states if s.get("contact_id") == "CONTACT1"]
    assert mine and all(s["erased"] and s["identity"] is None for s in mine)
    assert all(s["callback"]["raw"] is None for s in mine)
    assert all(s.get("status") or s.get("event_time") for s in mine)  # the public part stays
    other = [s for _, s in states if s.get("contact_id") == "CONTACT2"]
    assert other and all(not s.get("erased") and s["text"] == "STOP" for s in other)
    [fact] = [s for t, s in states if t == ERASED_TOPIC]
    assert fact["scope"] == "contact" and fact["reason"] == "T-1"
    assert fact["by"].startswith("cli:") and fact["keys_destroyed"] == len(destroyed)
    assert fact["forget_consent"] is False
    assert NUMBER not in orjson.dumps(fact).decode()

    verified = cli(url, "verify")
    assert verified.returncode == 0, verified.stderr


def test_an_identity_erasure_reaches_its_channel_only(settings: Settings) -> None:
    runtime = Runtime(settings)
    try:
        ledger = runtime.ledger()
        record_person(ledger)
        report = erase(ledger, channel="sms", identity=f"+{NUMBER}", by="tester", reason="ticket 9")
        assert report.scope == "identity" and report.keys_destroyed >= 1
        assert report.subjects == [ledger.vault.index("SMS", NUMBER)]
        assert report.consent_suppression == "kept"
        states = decoded(ledger)
    finally:
        runtime.close()
    sms = [s for _, s in states if s.get("channel") == "SMS" and s.get("contact_id") == "CONTACT1"]
    assert sms and all(s["erased"] for s in sms)
    whatsapp = [s for _, s in states if s.get("channel") == "WHATSAPP"]
    assert whatsapp and all(s["identity"] == NUMBER for s in whatsapp)
    [fact] = [s for t, s in states if t == ERASED_TOPIC]
    assert fact["channel"] == "SMS" and fact["subjects"] == report.subjects


def test_erasure_refuses_a_plaintext_store_and_bad_requests(database_url: str) -> None:
    plain = open_ledger(Settings(database_url=database_url))
    try:
        accept_all(plain, [p.opt()])
        with pytest.raises(ErasureRefused, match="migrate"):
            erase(plain, channel="SMS", identity=NUMBER, by="t", reason="r")
    finally:
        plain.close()


def test_erase_cli_says_what_is_wrong(settings: Settings) -> None:
    Runtime(settings).ledger().close()
    url = settings.database_url
    missing = cli(url, "erase", "--contact", "C1", "--reason", "r")
    assert missing.returncode == 2 and "--project" in missing.stderr
    nothing = cli(url, "erase", "--reason", "r")
    assert nothing.returncode == 2 and "--identity" in nothing.stderr
    blank = cli(url, "erase", "--channel", "SMS", "--identity", "  ", "--reason", "r")
    assert blank.returncode == 1 and "identity" in blank.stderr


def test_retention_shreds_message_payloads_and_keeps_consent_evidence(settings: Settings) -> None:
    short = dataclasses.replace(settings, retention_messages_days=1)
    later = datetime.now(UTC) + timedelta(days=70)
    runtime = Runtime(short)
    try:
        ledger = runtime.ledger()
        record_person(ledger)
        db = runtime.store_database()
        count = len(wrapped_keys(db))

        dry = apply(ledger, short, dry_run=True, now=later)
        assert dry.classes["messages"].periods and dry.keys_destroyed == 0
        assert len(wrapped_keys(db)) == count  # a dry run changes nothing
        assert not any(s.get("erased") for _, s in decoded(ledger))

        done = apply(ledger, short, now=later)
        assert done.classes["messages"].keys_destroyed == sum(
            dry.classes["messages"].periods.values()
        )
        assert done.classes["consent"].keys_destroyed == 0
        states = decoded(ledger)
    finally:
        runtime.close()
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for topic, state in states:
        by_topic.setdefault(spellings.read(topic).rpartition(":")[2], []).append(state)
    # The delivery report and the free text: message payloads, shredded; their status and
    # times stay.
    [report] = by_topic["Message.FirstReported"]
    assert report["erased"] and report["identity"] is None and report["status"] == "DELIVERED"
    free = [s for s in by_topic["Contact.InboundMessageReceived"] if s["message_id"] == "IN1"]
    assert free and free[0]["erased"] and free[0]["text"] is None
    # The opt-out and the STOP keyword: consent evidence, kept.
    assert all(not s.get("erased") for s in by_topic["Contact.ConsentReported"])
    stop = [s for s in by_topic["Contact.InboundMessageReceived"] if s["message_id"] == "IN2"]
    assert stop[0]["text"] == "STOP"
    verified = cli(settings.database_url, "verify")
    assert verified.returncode == 0, verified.stderr


def test_retention_cutoff_is_whole_months() -> None:
    now = datetime(2026, 3, 15, tzinfo=UTC)
    assert cutoff(now, 10) == "2026-03"  # 2026-02 ended more than 10 days ago: shredded
    assert cutoff(now, 20) == "2026-02"  # it ended 14 days ago: kept
    assert cutoff(now, 400) == "2025-02"


def test_retention_cli_dry_run(settings: Settings) -> None:
    Runtime(settings).ledger().close()
    done = cli(settings.database_url, "retention", "apply", "--dry-run", "--format", "json")
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["dry_run"] and report["encrypted"]
    assert report["classes"]["messages"]["days"] == 400
    assert report["classes"]["consent"]["days"] == 5 * 365 + 1


def test_serve_applies_retention_and_healthz_shows_it(settings: Settings, admin_key: str) -> None:
    soon = dataclasses.replace(settings, retention_first_s=1)
    with TestClient(create_app(soon), headers={"Authorization": f"Bearer {admin_key}"}) as client:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            body = client.get("/healthz").json()
            if "retention" in body:
                break
            time.sleep(0.2)
        assert body["retention"]["last_run"] and "last_error" not in body["retention"]


def test_admin_endpoint_erases_and_records_the_key(
    settings: Settings, ledger: Ledger, client: TestClient
) -> None:
    record_person(ledger)
    answer = client.post(
        "/admin/erasures",
        json={"channel": "SMS", "identity": NUMBER, "reason": "ticket 12", "forget_consent": True},
    )
    assert answer.status_code == 201, answer.text
    report = answer.json()
    assert report["by"] == "key:test-admin" and report["consent_suppression"] == "dropped"
    assert report["keys_destroyed"] >= 1
    [fact] = [
        e
        for e in ledger.recorder.select_notifications(start=1, limit=1000)
        if e.topic == ERASED_TOPIC
    ]
    event: Any = ledger.mapper.to_domain_event(fact)
    assert isinstance(event, Erasure.Erased) and event.forget_consent is True  # type: ignore[attr-defined]

    contact = client.post(
        "/admin/erasures", json={"project_id": "PROJECT1", "contact_id": "CONTACT1", "reason": "x"}
    )
    assert contact.status_code == 201 and contact.json()["scope"] == "contact"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[1]", "JSON object"),
        (b"{", "not JSON"),
        (b'{"channel": "SMS", "reason": "r"}', "identity"),
        (b'{"channel": "SMS", "identity": "1", "contact_id": "C", "reason": "r"}', "either"),
        (b'{"channel": "SMS", "identity": "1", "reason": "r", "x": 1}', "unknown"),
        (b'{"channel": "SMS", "identity": "   ", "reason": "r"}', "identity"),
        (b'{"channel": "SMS", "identity": "1", "reason": "r", "forget_consent": "yes"}', "true"),
        (b'{"project_id": "P", "contact_id": "C"}', "reason"),
    ],
)
@pytest.mark.xdist_group("erasure-refusals")  # one empty store per backend, shared
def test_admin_endpoint_says_what_is_wrong(
    empty_client: TestClient, body: bytes, says: str
) -> None:
    answer = empty_client.post("/admin/erasures", content=body)
    assert answer.status_code == 400, answer.text
    assert says in answer.json()["detail"]


def test_admin_endpoint_needs_the_admin_scope(settings: Settings, client: TestClient) -> None:
    body = {"channel": "SMS", "identity": NUMBER, "reason": "r"}
    reader = make_key(settings.database_url, "reader", ("read", "audit"))
    refused = client.post(
        "/admin/erasures", json=body, headers={"Authorization": f"Bearer {reader}"}
    )
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    anonymous = client.post("/admin/erasures", json=body, headers={"Authorization": ""})
    assert anonymous.status_code == 401


def test_admin_endpoint_on_a_plaintext_store_is_a_conflict(database_url: str) -> None:
    plain = Settings(database_url=database_url, webhook_secrets=(SECRET,))
    key = make_key(database_url, "admin-plain")
    with TestClient(create_app(plain), headers={"Authorization": f"Bearer {key}"}) as client:
        answer = client.post(
            "/admin/erasures", json={"channel": "SMS", "identity": NUMBER, "reason": "r"}
        )
    assert answer.status_code == 409 and "migrate" in answer.json()["detail"]


def test_every_command_refuses_an_encrypted_store_without_its_keys(settings: Settings) -> None:
    runtime = Runtime(settings)
    record_person(runtime.ledger())
    runtime.close()
    url = settings.database_url
    other = {
        line.partition("=")[0]: line.partition("=")[2]
        for line in cli(url, "secrets", "generate").stdout.splitlines()
    }
    assert set(other) == {"LEDGER_MASTER_KEY", "LEDGER_INDEX_KEY"}
    assert all(len(base64.b64decode(v)) == 32 for v in other.values())
    none = {"LEDGER_MASTER_KEY": "", "LEDGER_INDEX_KEY": ""}
    wrong_master = {**other, "LEDGER_INDEX_KEY": base64.b64encode(KEYS.index).decode()}
    for env, says in [
        (none, "holds encrypted personal data"),
        (other, "LEDGER_INDEX_KEY is not the index key"),
        (wrong_master, "LEDGER_MASTER_KEY is not the master key"),
    ]:
        for args in (["verify"], ["keys", "list"], ["serve", "--port", "0"], ["quarantine"]):
            done = cli(url, *args, timeout=60, **env)
            assert done.returncode == 2, (args, done.stdout, done.stderr)
            assert says in done.stderr, (args, done.stderr)
            for value in (*other.values(), base64.b64encode(KEYS.master).decode()):
                assert value not in done.stderr + done.stdout


def test_the_number_is_nowhere_in_the_database_files(store_files: tuple[str, Any]) -> None:
    url, files = store_files
    runtime = Runtime(Settings(keys=KEYS, database_url=url))
    try:
        record_person(runtime.ledger())
        runtime.projector().catch_up()
    finally:
        runtime.close()
    done = cli(url, "erase", "--contact", "CONTACT1", "--project", "PROJECT1", "--reason", "T-2")
    assert done.returncode == 0, done.stderr
    assert not found_in(files(), [NUMBER, TEXT])


def test_a_failing_retention_run_is_shown_in_healthz_and_serving_goes_on(
    settings: Settings, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import privacy.retention

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the key table is locked")

    monkeypatch.setattr(privacy.retention, "apply", broken)
    soon = dataclasses.replace(settings, retention_first_s=1)
    with TestClient(create_app(soon), headers={"Authorization": f"Bearer {admin_key}"}) as client:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            answer = client.get("/healthz")
            if "retention" in answer.json():
                break
            time.sleep(0.2)
        body = answer.json()
        assert "the key table is locked" in body["retention"]["last_error"]
        assert answer.status_code == 200 and body["status"] == "ok"
        assert client.get("/messages").status_code == 200


def test_an_erasure_while_a_reader_holds_the_sqlite_log_is_recorded_and_says_so(
    tmp_path: Path,
) -> None:
    import sqlite3

    path = tmp_path / "ledger.sqlite3"
    settings = Settings(keys=KEYS, database_url=f"sqlite:///{path}")
    runtime = Runtime(settings)
    try:
        ledger = runtime.ledger()
        record_person(ledger)
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute(f"SELECT count(*) FROM {KEYS_TABLE}").fetchone()  # a snapshot held
        try:
            report = erase(ledger, channel="SMS", identity=NUMBER, by="t", reason="r")
        finally:
            reader.execute("COMMIT")
            reader.close()
        assert report.keys_destroyed >= 1 and report.purge_pending
        assert "run the same erasure again" in report.purge_pending
        assert any(t == ERASED_TOPIC for t, _ in decoded(ledger))
        again = erase(ledger, channel="SMS", identity=NUMBER, by="t", reason="r (purge)")
        assert again.keys_destroyed == 0 and again.purge_pending is None
    finally:
        runtime.close()


def test_the_longest_identity_the_webhook_takes_can_be_found_and_erased(
    client: TestClient, ledger: Ledger
) -> None:
    # A non-number id (as Messenger's or Viber's) at the webhook's bound: what was accepted can
    # be looked up by the routes and the console, and erased by identity.
    longest = "psid" + "7" * (MAX_IDENTITY - 4)
    body = p.delivery("M-LONG", "DELIVERED", "MESSENGER", longest)
    raw = p.encode(body)
    stored = client.post("/webhooks/sinch", content=raw, headers=p.signed_headers(raw, SECRET))
    assert stored.status_code == 200 and stored.json()["status"] == "accepted", stored.text
    wait_for_projections(client)
    [report] = client.get("/messages/M-LONG").json()["timeline"]
    assert report["identity"] == longest
    check = client.get("/consent/check", params={"channel": "MESSENGER", "identity": longest})
    assert check.status_code == 200, check.text
    assert client.get(f"/console/numbers/{longest}").status_code == 200

    erased = client.post(
        "/admin/erasures",
        json={"channel": "MESSENGER", "identity": longest, "reason": "data subject request"},
    )
    assert erased.status_code == 201, erased.text
    [report] = client.get("/messages/M-LONG").json()["timeline"]
    assert (report["identity"], report["erased"]) == (None, True)

    # One past the bound: refused by the erasure, by the route and by the service.
    over = {"channel": "MESSENGER", "identity": longest + "7", "reason": "r"}
    refused = client.post("/admin/erasures", json=over)
    assert refused.status_code == 400 and "identity" in refused.json()["detail"]
    with pytest.raises(ErasureRefused, match=f"at most {MAX_IDENTITY}"):
        erase(ledger, channel="MESSENGER", identity=longest + "7", by="test", reason="r")
