"""Projections on SQLite and PostgreSQL: the rows, their order-independence, replay, and
exactly-once following."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.runtime import Runtime
from store.config import Settings
from store.ledger import Ledger
from tests import payloads as p
from tests.helpers import accept_all, cli, projection_rows


@pytest.fixture
def runtime(settings: Settings, ledger: Ledger) -> Iterator[Runtime]:
    rt = Runtime(settings, ledger)
    yield rt
    rt.close()


def catch_up(runtime: Runtime) -> None:
    runtime.projector().catch_up()


SCENARIO = [
    # M1: WhatsApp fails over to SMS, delivered and read; reports arrive out of order, twice.
    p.delivery("M1", "READ", "SMS", event_time="2024-06-15T10:00:05Z"),
    p.delivery("M1", "QUEUED_ON_CHANNEL", "WHATSAPP", event_time="2024-06-15T10:00:00Z"),
    p.delivery(
        "M1",
        "SWITCHING_CHANNEL",
        "WHATSAPP",
        event_time="2024-06-15T10:00:01Z",
        reason={"code": "RECIPIENT_NOT_REACHABLE"},
    ),
    p.delivery("M1", "DELIVERED", "SMS", event_time="2024-06-15T10:00:03Z"),
    p.delivery("M1", "QUEUED_ON_CHANNEL", "SMS", event_time="2024-06-15T10:00:02Z"),
    p.delivery("M1", "READ", "SMS", event_time="2024-06-15T10:00:05Z"),
    # M2: failed for good.
    p.delivery("M2", "QUEUED_ON_CHANNEL", "SMS", event_time="2024-06-15T11:00:00Z"),
    p.delivery(
        "M2",
        "FAILED",
        "SMS",
        event_time="2024-06-15T11:00:01Z",
        reason={
            "code": "RECIPIENT_INVALID_CHANNEL_IDENTITY",
            "sub_code": "X",
            "description": "bad number",
        },
    ),
    # Consent: a STOP by SMS, a later opt-in by notification, a failed opt-out on Viber.
    p.inbound("IN1", "stop", identity="+46700000001", event_time="2024-06-15T12:00:00Z"),
    p.opt("OPT_IN", request_id="R1", identity="46700000001", event_time="2024-06-15T13:00:00Z"),
    p.opt(
        "OPT_OUT",
        status="OPT_OUT_FAILED",
        request_id="R2",
        channel="VIBERBM",
        event_time="2024-06-15T14:00:00Z",
    ),
    p.inbound("IN2", "don't stop the music", event_time="2024-06-15T12:30:00Z"),
]


# ---- order independence, generated -----------------------------------------------------------


def test_replay_command_reports_what_it_did(
    runtime: Runtime, ledger: Ledger, database_url: str
) -> None:
    accept_all(ledger, SCENARIO)
    catch_up(runtime)
    live = projection_rows(database_url)
    done = cli(database_url, "replay", "--projection", "consent", timeout=120)
    assert done.returncode == 0, done.stderr
    assert "consent: rebuilt generation 2 from" in done.stderr
    assert "views switched" in done.stderr
    assert projection_rows(database_url) == live
