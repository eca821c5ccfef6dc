"""Event state is stored compressed (store.compression) and a new message's first
report is one event: every raw body comes back byte for byte, and a store written before both
(plain JSON, Registered then DeliveryReported) still reads, dedupes and replays."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from domain.message import Message
from service.settings import Settings, open_ledger
from store import spellings
from store.compression import MAGIC
from store.ledger import Ledger
from tests import helpers
from tests import payloads as p
from tests.conftest import fresh_database
from tests.helpers import KEYS, cli, projection_rows, stored_events
from tests.integration.test_storage import raw_of


@pytest.fixture
def other_url(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[str]:
    yield from fresh_database(backend, tmp_path_factory, request)


class EarlierLedger(Ledger):
    """Writes event state as plain JSON, as every version before compression did."""

    name = "Ledger"  # the same tables (the library names them after the class)
    compress_state = False


def mix() -> list[dict[str, Any]]:
    return [
        p.delivery("M1", "QUEUED_ON_CHANNEL"),
        p.delivery("M1", "DELIVERED", reason={"code": "X", "description": 'é \u0000 "q"'}),
        p.delivery("M2", "FAILED", reason={"code": "RECIPIENT_NOT_REACHABLE"}),
        p.inbound("IN1", text="STOP"),
        p.inbound("IN2", text="please stop sending"),
        p.opt("OPT_IN", request_id="R1"),
        p.delivery("M1", "READ"),
        p.delivery("M3", "DELIVERED", channel="SMS"),
        p.opt("OPT_OUT", request_id="R2"),
    ]


def accept_all(ledger: Ledger, bodies: list[dict[str, Any]]) -> list[str]:
    return [outcome.status for outcome in helpers.accept_all(ledger, bodies)]


def test_a_store_written_before_compression_reads_and_replays(
    database_url: str, other_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = mix()
    first, rest = bodies[:5], bodies[5:]
    earlier = open_ledger(cls=EarlierLedger, settings=Settings(database_url=database_url))
    # As earlier versions did: a message's stream starts with Registered, then each report.
    monkeypatch.setattr(Message, "_only_registered", lambda self: False)
    try:
        assert accept_all(earlier, first) == ["accepted"] * len(first)
        old = earlier.recorder.select_notifications(start=1, limit=1000)
        assert old and not any(n.state.startswith(MAGIC) for n in old)
    finally:
        earlier.close()
        monkeypatch.undo()

    ledger = open_ledger(Settings(database_url=database_url))
    try:
        # Facts of the old events are still known; new ones are written compressed.
        assert accept_all(ledger, first) == ["duplicate"] * len(first)
        assert accept_all(ledger, rest) == ["accepted"] * len(rest)
        new = ledger.recorder.select_notifications(start=len(old) + 1, limit=1000)
        assert new and all(n.state.startswith(MAGIC) for n in new)
        # A message stream of the earlier form (Registered, then each report) and one of
        # this form (FirstReported, then each report): both resolve their references.
        m1, m3 = Message.create_id("PROJECT1", "M1"), Message.create_id("PROJECT1", "M3")
        assert [
            spellings.read(n.topic).rsplit(".", 1)[1] for n in old if n.originator_id == m1
        ] == [
            "Registered",
            "DeliveryReported",
            "DeliveryReported",
        ]
        found = ledger.keyed_event(m1, "WHATSAPP|QUEUED_ON_CHANNEL")
        assert (type(found).__name__, found.originator_version) == ("DeliveryReported", 2)
        found = ledger.keyed_event(m1, "WHATSAPP|READ")
        assert (type(found).__name__, found.originator_version) == ("DeliveryReported", 4)
        found = ledger.keyed_event(m3, "SMS|DELIVERED")
        assert (type(found).__name__, found.originator_version) == ("FirstReported", 1)
    finally:
        ledger.close()
    assert [raw_of(e) for e in stored_events(database_url) if hasattr(e, "callback")] == [
        orjson.dumps(b) for b in bodies
    ]

    # The same bodies in a store written all compressed: replay gives the same tables.
    ledger = open_ledger(Settings(keys=KEYS, database_url=other_url))
    try:
        accept_all(ledger, bodies)
    finally:
        ledger.close()
    for url in (database_url, other_url):
        result = cli(url, "replay", "--fresh", timeout=120)
        assert result.returncode == 0, result.stderr
    assert projection_rows(database_url) == projection_rows(other_url)
    assert projection_rows(database_url)["message_status"]
