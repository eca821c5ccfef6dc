"""A store's mode and keys (store.vault, store.data_keys), on both backends: a new store given
keys is encrypted and holds no personal value in plaintext; it cannot be opened without its
keys or with others; a store written without keys stays plaintext; a destroyed key makes its
events' personal fields unreadable while their public fields, dedupe and the seal stay."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest
from starlette.testclient import TestClient

from domain.message import Message
from projections.log_reader import decode_state
from service.settings import Settings, backend_for, open_ledger
from store import data_keys, envelope
from store.backend import Database
from store.ledger import Ledger
from store.spellings import read
from store.vault import Secrets, SecretsError
from tests import payloads as p
from tests.conftest import SECRET
from tests.helpers import KEYS, accept_all

NUMBER = "46700111222"
TEXT = "STOP sending me offers"


def bodies() -> list[dict[str, Any]]:
    return [
        p.delivery("M1", "DELIVERED", identity=NUMBER),
        p.delivery("M1", "READ", identity=NUMBER),
        p.opt("OPT_OUT", contact_id=None, identity=NUMBER, request_id=None),
        p.inbound("IN1", text=TEXT, identity="+" + NUMBER),
    ]


def stored_states(ledger: Ledger) -> list[Any]:
    return list(ledger.recorder.select_notifications(start=1, limit=1000))


def all_bytes(ledger: Ledger, database_url: str) -> bytes:
    """Everything the store's tables hold, as bytes (the files themselves are searched by the
    erasure tests)."""
    found = b"".join(bytes(n.state) for n in stored_states(ledger))
    db = Database(backend_for(database_url))
    try:
        with db.read() as cur:
            for table in ("ledger_dedupe", data_keys.TABLE):
                for row in cur.execute(f"SELECT * FROM {table}").fetchall():
                    found += repr(row).encode()
    finally:
        db.close()
    return found


def test_a_new_store_given_keys_is_encrypted(database_url: str) -> None:
    ledger = open_ledger(Settings(keys=KEYS, database_url=database_url))
    try:
        assert ledger.vault.encrypted
        outcomes = accept_all(ledger, bodies())
        assert [o.status for o in outcomes] == ["accepted"] * 4
        # Redelivered: still duplicates (stream names and dedupe keys use the blind index).
        again = accept_all(ledger, bodies())
        assert [o.status for o in again] == ["duplicate"] * 4
        stored = all_bytes(ledger, database_url)
        for secret in (NUMBER.encode(), TEXT.encode(), b"order-123"):
            assert secret not in stored
        states = [
            decode_state(n.state, ledger.vault, read(n.topic))
            for n in stored_states(ledger)
            if envelope.is_sealed(bytes(n.state))
        ]
        assert {s.get("identity") for s in states} == {NUMBER, "+" + NUMBER}
        assert TEXT in {s.get("text") for s in states}
    finally:
        ledger.close()


def key_rows(database_url: str) -> list[dict[str, Any]]:
    db = Database(backend_for(database_url))
    try:
        with db.read() as cur:
            return cur.execute(f"SELECT * FROM {data_keys.TABLE}").fetchall()
    finally:
        db.close()


def test_a_new_store_keeps_its_data_keys_as_bytes(database_url: str) -> None:
    ledger = open_ledger(Settings(keys=KEYS, database_url=database_url))
    try:
        accept_all(ledger, bodies())
    finally:
        ledger.close()
    rows = key_rows(database_url)
    assert rows and all(
        isinstance(r["key_id"], bytes) and len(r["key_id"]) == 16 and len(r["wrapped"]) == 48
        for r in rows
    )
    # When each was made: the milliseconds its id starts with, not a column of its own.
    assert set(rows[0]) == {"key_id", "subject", "class", "period", "wrapped"}
    made = int.from_bytes(rows[0]["key_id"][:6], "big") / 1000
    assert abs(made - time.time()) < 600


def test_an_encrypted_store_needs_its_own_keys(database_url: str) -> None:
    open_ledger(Settings(keys=KEYS, database_url=database_url)).close()
    with pytest.raises(SecretsError, match="holds encrypted personal data"):
        open_ledger(Settings(database_url=database_url))
    other = Secrets(os.urandom(32), KEYS.index)
    with pytest.raises(SecretsError, match="LEDGER_MASTER_KEY is not"):
        open_ledger(Settings(keys=other, database_url=database_url))
    other = Secrets(KEYS.master, os.urandom(32))
    with pytest.raises(SecretsError, match="LEDGER_INDEX_KEY is not"):
        open_ledger(Settings(keys=other, database_url=database_url))
    # A rotated master key: the old one still unwraps, as a previous key.
    rotated = Secrets(os.urandom(32), KEYS.index, (KEYS.master,))
    open_ledger(Settings(keys=rotated, database_url=database_url)).close()


def test_a_store_written_without_keys_stays_plaintext(database_url: str) -> None:
    ledger = open_ledger(Settings(database_url=database_url))
    accept_all(ledger, bodies()[:1])
    ledger.close()
    ledger = open_ledger(Settings(keys=KEYS, database_url=database_url))
    try:
        assert not ledger.vault.encrypted
        assert [o.status for o in accept_all(ledger, bodies())] == ["duplicate"] + ["accepted"] * 3
        assert not any(envelope.is_sealed(bytes(n.state)) for n in stored_states(ledger))
    finally:
        ledger.close()


def test_a_destroyed_key_leaves_the_public_fields(database_url: str) -> None:
    ledger = open_ledger(Settings(keys=KEYS, database_url=database_url))
    try:
        accept_all(ledger, bodies())
        subject = ledger.vault.index("WHATSAPP", NUMBER)
        assert ledger.vault.keys.destroy([subject]) == 1  # type: ignore[union-attr]
        ledger.vault.forget([subject])
        reports = [
            decode_state(n.state, ledger.vault, read(n.topic))
            for n in stored_states(ledger)
            if read(n.topic).endswith("Reported") and "Message" in read(n.topic)
        ]
        assert [(r["status"], r["identity"], r["callback"]["raw"]) for r in reports] == [
            ("DELIVERED", None, None),
            ("READ", None, None),
        ]
        assert all(r["erased"] and r["subject"] == subject for r in reports)
        # The library's path too (GET /callbacks, the aggregates).
        message = ledger.repository.get(Message.create_id("PROJECT1", "M1"))
        assert sorted(message.report_keys) == ["WHATSAPP|DELIVERED", "WHATSAPP|READ"]
        # Still a duplicate, and a new report for the subject is recorded under a new key.
        assert accept_all(ledger, bodies()[:1])[0].status == "duplicate"
        assert accept_all(ledger, [p.delivery("M2", identity=NUMBER)])[0].status == "accepted"
        newest = stored_states(ledger)[-1]
        assert decode_state(newest.state, ledger.vault, read(newest.topic))["identity"] == NUMBER
        # The SMS identity's facts are another subject: untouched.
        sms = [
            decode_state(n.state, ledger.vault, read(n.topic))
            for n in stored_states(ledger)
            if "Contact" in read(n.topic) and envelope.is_sealed(bytes(n.state))
        ]
        assert all(s["identity"] for s in sms)
    finally:
        ledger.close()


def test_a_key_erased_by_another_process_is_not_used_again(
    database_url: str, client: TestClient
) -> None:
    """Process A holds a data key in use; process B erases its subject; A's next callback for
    the subject finds the key gone as it commits and is written under a new one, so it stays
    readable: on the synchronous path and through the service's group commit."""

    def post(message: str) -> None:
        raw = p.encode(p.delivery(message, identity=NUMBER))
        response = client.post(
            "/webhooks/sinch", content=raw, headers=p.signed_headers(raw, SECRET)
        )
        assert response.json()["status"] == "accepted"

    writer = open_ledger(Settings(keys=KEYS, database_url=database_url))
    eraser = open_ledger(Settings(keys=KEYS, database_url=database_url))
    try:
        assert accept_all(writer, [p.delivery("M1", identity=NUMBER)])[0].status == "accepted"
        post("W1")
        subject = eraser.vault.index("WHATSAPP", NUMBER)
        assert eraser.vault.keys.destroy([subject]) >= 1  # type: ignore[union-attr]
        assert accept_all(writer, [p.delivery("M2", identity=NUMBER)])[0].status == "accepted"
        post("W2")
    finally:
        writer.close()
        eraser.close()
    assert readable_identities(database_url) == {
        "M1": None,
        "W1": None,
        "M2": NUMBER,
        "W2": NUMBER,
    }


def readable_identities(database_url: str) -> dict[str, str | None]:
    """Each message's identity as a new process reads it from the log (None: erased)."""
    reader = open_ledger(Settings(keys=KEYS, database_url=database_url))
    try:
        return {
            state["message_id"]: state["identity"]
            for n in stored_states(reader)
            if "Message" in read(n.topic)
            for state in [decode_state(n.state, reader.vault, read(n.topic))]
        }
    finally:
        reader.close()


def test_an_unknown_trigger_is_filed_under_the_identity_its_body_names(
    database_url: str,
) -> None:
    ledger = open_ledger(Settings(keys=KEYS, database_url=database_url))
    try:
        body = {
            **p.envelope(),
            "contact_create_notification": {
                "contact": {
                    "id": "C9",
                    "channel_identities": [{"channel": "SMS", "identity": NUMBER}],
                }
            },
        }
        assert accept_all(ledger, [body])[0].status == "accepted"
        (kept,) = [n for n in stored_states(ledger) if "Unrecognised" in n.topic]
        state = decode_state(kept.state, ledger.vault, read(kept.topic))
        assert state["subject"] == ledger.vault.index("SMS", NUMBER)
        assert NUMBER.encode() not in bytes(kept.state)
    finally:
        ledger.close()


def test_a_batch_waits_for_an_erasure_under_way_and_then_uses_new_keys(
    database_url: str,
) -> None:
    """An erasure holds the key table (PostgreSQL: its table lock; SQLite: the one writer) while
    it deletes; a batch reusing one of those keys waits for it to commit, then finds the key
    gone and is written under a new one: never committed under a key erased meanwhile."""
    writer = open_ledger(Settings(keys=KEYS, database_url=database_url))
    eraser = open_ledger(Settings(keys=KEYS, database_url=database_url))
    outcome: list[str] = []
    try:
        assert accept_all(writer, [p.delivery("M1", identity=NUMBER)])[0].status == "accepted"
        keys = eraser.vault.keys
        assert isinstance(keys, data_keys.SQLKeyStore)
        subject = eraser.vault.index("WHATSAPP", NUMBER)
        with keys.db.transaction() as cur:
            keys.db.backend.exclude_writers(cur, data_keys.TABLE)
            cur.execute(f"DELETE FROM {data_keys.TABLE} WHERE subject = ?", (subject,))
            batch = threading.Thread(
                target=lambda: outcome.extend(
                    o.status for o in accept_all(writer, [p.delivery("M2", identity=NUMBER)])
                )
            )
            batch.start()
            batch.join(1.0)
            assert batch.is_alive() and not outcome  # held off while the erasure runs
        batch.join(30)
        assert outcome == ["accepted"]
    finally:
        writer.close()
        eraser.close()
    assert readable_identities(database_url) == {"M1": None, "M2": NUMBER}
