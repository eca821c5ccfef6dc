"""The catch-all and the quarantine: bodies stored once, written by the group commit, listed in
pages bounded by size; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from datetime import UTC, datetime

import orjson
from starlette.testclient import TestClient

from domain.callbacks import QuarantinedCallback, Receipt
from projections.log_reader import decode_state
from service.runtime import Runtime
from service.settings import Settings
from store.group_commit import LRU, GroupCommit, run
from store.ledger import Ledger, Outcome
from tests import payloads as p
from tests.conftest import SECRET
from tests.helpers import names, stored_events

MB = 1_000_000


def receipt(raw: bytes) -> Receipt:
    return Receipt(raw.decode(errors="replace"), datetime.now(UTC), True)


def big_body(i: int) -> bytes:
    """~1 MB: even ones UTF-8 text that is no JSON, odd ones not UTF-8 at all."""
    if i % 2:
        return bytes([i]) + bytes(range(256)) * (MB // 256)
    return f"{i} not json: ".encode() + 'é"x\\ {} '.encode() * (MB // 10)


def quarantine_all(ledger: Ledger, bodies: list[bytes]) -> None:
    for start in range(0, len(bodies), 10):
        commands = [
            ledger.quarantine_command(raw, "UNKNOWN", 400, ["not JSON"], receipt(raw))
            for raw in bodies[start : start + 10]
        ]
        assert all(
            isinstance(r, Outcome) for r in run(GroupCommit(ledger, cache=LRU(10)), commands)
        )


def test_a_body_is_stored_once(ledger: Ledger, client: TestClient, database_url: str) -> None:
    text, binary = big_body(0), big_body(1)
    quarantine_all(ledger, [text, binary])
    catch_all = orjson.dumps(
        {"project_id": "P", "something_new": {"text": 'héllo "quoted" wörld ' * (MB // 30)}}
    )
    response = client.post(
        "/webhooks/sinch", content=catch_all, headers=p.signed_headers(catch_all, SECRET)
    )
    assert response.json()["status"] == "accepted"
    notifications = ledger.recorder.select_notifications(start=1, limit=100)
    sizes = {n.topic.split(":")[-1]: [] for n in notifications}
    for n in notifications:
        # The JSON before compression: what "once" means (zstd would hide a second copy).
        state = orjson.dumps(decode_state(n.state, ledger.vault, n.topic))
        assert len(n.state) < len(state)
        sizes[n.topic.split(":")[-1]].append(len(state))
    text_size, binary_size = sizes["QuarantinedCallback.Quarantined"]
    assert 1.0 < text_size / len(text) < 1.4
    assert 1.0 < binary_size / len(binary) < 1.4
    (catch_all_size,) = sizes["UnrecognisedCallback.Received"]
    assert 1.0 < catch_all_size / len(catch_all) < 1.4
    events = stored_events(database_url)
    assert events[-1].callback["raw"].encode() == catch_all


def test_entries_stored_by_earlier_versions_are_listed(client: TestClient, ledger: Ledger) -> None:
    raw = b"\xff old form"
    old = QuarantinedCallback(
        body_hash="h",
        trigger="UNKNOWN",
        status_code=400,
        problems=["not JSON"],
        raw_base64=base64.b64encode(raw).decode(),
        callback=receipt(raw).as_event_data(),
    )
    ledger.save(old)
    (item,) = client.get("/quarantine").json()["items"]
    assert base64.b64decode(item["raw_base64"]) == raw


def test_concurrent_unknown_callbacks_are_group_committed_once_each(
    ledger: Ledger, settings: Settings, database_url: str
) -> None:
    runtime = Runtime(settings, ledger)
    writer = runtime.writer()
    unknown = [orjson.dumps({"project_id": "P", "new_thing": {"n": i}}) for i in range(30)]
    refused = [f"not json {i}".encode() for i in range(10)]

    async def scenario() -> list[Outcome]:
        commands = [
            ledger.unrecognised_command(orjson.loads(raw), receipt(raw)) for raw in unknown * 3
        ]
        commands += [
            ledger.quarantine_command(raw, "UNKNOWN", 400, ["not JSON"], receipt(raw))
            for raw in refused * 2
        ]
        results = await asyncio.gather(*(writer.commit(c) for c in commands))
        # Sent again later (from the cache or the store): still duplicates.
        results += await asyncio.gather(*(writer.commit(c) for c in commands[:5]))
        await runtime.aclose_writer()
        return results

    results = asyncio.run(scenario())
    assert writer.batches < writer.commands
    assert Counter((r.trigger, r.status) for r in results) == {
        ("UNKNOWN", "accepted"): 40,
        ("UNKNOWN", "duplicate"): 30 * 2 + 10 + 5,
    }
    assert Counter(names(stored_events(database_url))) == {
        "UnrecognisedCallback.Received": 30,
        "QuarantinedCallback.Quarantined": 10,
    }
