"""`callback-ledger migrate --to URL`: a store written without encryption (as the
previous version wrote every store) copied into a new, encrypted one by recording its callbacks
again with their original receipts; the same read tables come out, identities aside."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from access.api_keys import KEYS_TABLE
from domain.callbacks import Receipt
from service.recorder import Recorder, alone
from service.runtime import Runtime
from service.settings import Settings, backend_for, open_ledger
from store import envelope
from store.backend import Database
from tests import payloads as p
from tests.conftest import fresh_database
from tests.helpers import KEYS, VIEWS, cli, make_key, projection_rows

# The columns that name a person, or a stream named after one: blind indexes (or sealed) in
# the encrypted store, plaintext in the old one.
PERSONAL = {"identity", "source_ref", "text", "reports", "metadata", "excerpt"}

BODIES: list[Any] = [
    p.submit(message_id="M1", identity="46700000001"),
    p.delivery(message_id="M1", identity="46700000001"),
    p.delivery(message_id="M1", status="FAILED", identity="46700000001", reason={"code": "X"}),
    p.delivery(message_id="M2", status="QUEUED_ON_CHANNEL", channel="SMS", identity="4670002"),
    p.opt(identity="46700000001"),
    p.opt(kind="OPT_IN", request_id="REQ2", event_time="2024-06-16T10:00:00Z"),
    p.inbound(message_id="IN1", text="STOP"),
    p.inbound(message_id="IN2", text="please do not text me again", contact_id=None),
    p.envelope(some_future_trigger={"x": 1}),  # kept in the catch-all
    b"not json at all",  # refused: the quarantine
    p.envelope(message_delivery_report={"message_id": 7}),  # invalid fields: quarantined
]


@pytest.fixture
def target_url(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[str]:
    yield from fresh_database(backend, tmp_path_factory, request)


def record_plaintext(url: str) -> None:
    """A store as the previous version wrote it: no keys, identities in the clear."""
    runtime = Runtime(Settings(database_url=url))
    try:
        ledger = runtime.ledger()
        assert not ledger.vault.encrypted
        recorder = Recorder(alone(ledger))
        with asyncio.Runner() as runner:
            for body in BODIES:
                raw = body if isinstance(body, bytes) else orjson.dumps(body)
                receipt = Receipt(
                    raw.decode(), datetime.now(UTC), True, {"x-sinch-webhook-signature": "s"}
                )
                runner.run(recorder.record(raw, receipt))
        runtime.projector().catch_up()
    finally:
        runtime.close()


def impersonal(row: dict[str, Any]) -> bytes:
    kept = {k: v for k, v in row.items() if k not in PERSONAL}
    contact = kept.get("contact_id")
    if isinstance(contact, str) and contact.startswith("~"):
        # A contact known only by its number is named by the number's blind index now.
        kept["contact_id"] = contact.partition(":")[0]
    return orjson.dumps(kept)


def without_personal(rows: dict[str, list[dict[str, Any]]]) -> dict[str, list[bytes]]:
    return {view: sorted(impersonal(r) for r in found) for view, found in rows.items()}


def test_migrate_copies_a_plaintext_store_into_an_encrypted_one(
    database_url: str, target_url: str
) -> None:
    record_plaintext(database_url)
    make_key(database_url, "ops", ("read",))
    done = cli(database_url, "migrate", "--to", target_url, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "migrate: done" in done.stdout and "quarantined 2" in done.stdout
    assert "catch all 1" in done.stdout and "api keys 1" in done.stdout

    old, new = projection_rows(database_url), projection_rows(target_url)
    assert set(old) == set(VIEWS)
    assert all(old[view] for view in ("message_status", "consent", "consent_history"))
    assert without_personal(new) == without_personal(old)

    migrated = open_ledger(Settings(keys=KEYS, database_url=target_url))
    try:
        assert migrated.vault.encrypted
        stored = migrated.recorder.select_notifications(start=1, limit=1000)
        received = [migrated.mapper.to_domain_event(n) for n in stored]
        zstd: Any = migrated.mapper.zstd  # type: ignore[attr-defined]
        readable = [
            envelope.public_json(n.state, zstd)
            if envelope.is_sealed(n.state)
            else zstd.decompress(n.state)
            for n in stored
        ]
    finally:
        migrated.close()
    # What the log holds readable without the keys names no number and no text.
    assert sum(envelope.is_sealed(n.state) for n in stored) >= len(BODIES)
    for secret in (b"46700000001", b"4670002", b"please do not text me"):
        assert not any(secret in public for public in readable)
    callbacks = [e.callback for e in received if isinstance(getattr(e, "callback", None), dict)]
    assert callbacks and all(c["signature_verified"] for c in callbacks)
    assert all(c["headers"] == {"x-sinch-webhook-signature": "s"} for c in callbacks)
    db = Database(backend_for(target_url))
    try:
        with db.read() as cur:
            keys = cur.execute(f"SELECT name, scopes FROM {KEYS_TABLE}").fetchall()
    finally:
        db.close()
    assert keys == [{"name": "ops", "scopes": "read"}]

    verified = cli(target_url, "verify")
    assert verified.returncode == 0, verified.stderr
    again = cli(database_url, "migrate", "--to", target_url)
    assert again.returncode == 1 and "already holds" in again.stderr
